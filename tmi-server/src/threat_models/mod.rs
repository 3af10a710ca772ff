//! Threat models: `/threat_models` and `/threat_models/{id}` (+ restore). Routes only; the wire
//! model is in `model.rs` and the handlers in `handlers.rs`.

pub mod handlers;
pub mod model;

use axum::Router;
use axum::routing::{get, post};

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/threat_models", get(handlers::list).post(handlers::create))
        .route(
            "/threat_models/{threat_model_id}",
            get(handlers::get)
                .put(handlers::update)
                .patch(handlers::patch)
                .delete(handlers::delete),
        )
        .route(
            "/threat_models/{threat_model_id}/restore",
            post(handlers::restore),
        )
}
