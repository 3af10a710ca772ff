//! The route table: an axum router that remembers every (method, path) it serves, so that the
//! gate's coverage test walks the routes that actually exist rather than the contract's list.
//! Every module's `router()` returns one; `lib.rs` merges them. Pure.

use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{self, MethodRouter};

use crate::state::AppState;

/// Routes and the (method, path template) pairs they serve. `GET` routes also answer `HEAD`.
#[derive(Default)]
pub struct Routes {
    router: Router<AppState>,
    table: Vec<(Method, String)>,
}

impl Routes {
    pub fn new() -> Self {
        Self::default()
    }

    fn add(mut self, method: Method, path: &str, endpoint: MethodRouter<AppState>) -> Self {
        // axum merges the methods of one path; the same method twice panics at startup.
        self.router = self.router.route(path, endpoint);
        self.table.push((method, path.to_owned()));
        self
    }

    pub fn get<H: Handler<T, AppState>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.add(Method::GET, path, routing::get(handler))
    }

    pub fn post<H: Handler<T, AppState>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.add(Method::POST, path, routing::post(handler))
    }

    pub fn put<H: Handler<T, AppState>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.add(Method::PUT, path, routing::put(handler))
    }

    pub fn patch<H: Handler<T, AppState>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.add(Method::PATCH, path, routing::patch(handler))
    }

    pub fn delete<H: Handler<T, AppState>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.add(Method::DELETE, path, routing::delete(handler))
    }

    /// Both route tables in one.
    pub fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self
    }

    /// Every (method, path template) served, in the order the routes were added.
    pub fn table(&self) -> &[(Method, String)] {
        &self.table
    }

    pub fn into_router(self) -> Router<AppState> {
        self.router
    }
}
