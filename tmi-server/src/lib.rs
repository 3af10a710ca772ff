//! The TMI REST API server: a drop-in compatible reimplementation of TMI on PostgreSQL or SQLite.
//!
//! Layers (docs/architecture.md): HTTP modules (`auth`, `me`, `features`, `health`,
//! `threat_models`, `resources`, `metadata`, `teams`, `collab`'s REST and WebSocket endpoints) each expose a
//! `router()`, behind the request `gate`; they call the `domain` layer, which reads and writes
//! through the `store` trait. The collaboration hub (`collab::hub`) sits beside the domain.
//! This file only merges the routers and adds the layers; `startup` connects and serves.

pub mod auth;
pub mod authz;
pub mod collab;
pub mod config;
pub mod domain;
pub mod error;
pub mod extract;
pub mod features;
pub mod gate;
pub mod health;
pub mod input;
pub mod layers;
pub mod limits;
pub mod me;
pub mod metadata;
pub mod metrics;
pub mod openapi;
pub mod parse_errors;
pub mod patch;
pub mod public_url;
pub mod resources;
pub mod routes;
pub mod server;
pub mod startup;
pub mod state;
pub mod store;
pub mod teams;
pub mod telemetry;
pub mod threat_models;
pub mod versioning;

use axum::Router;
use axum::middleware;
use tower_http::trace::TraceLayer;

use routes::Routes;
use state::AppState;

pub use startup::{build_state, build_state_with, connect_store, database_url, serve};

/// Every route the server has, from the modules' routers.
pub fn routes() -> Routes {
    health::router()
        .merge(auth::router())
        .merge(me::router())
        .merge(features::router())
        .merge(threat_models::router())
        .merge(resources::router())
        .merge(metadata::router())
        .merge(collab::router())
        .merge(teams::router())
}

/// The whole HTTP surface: every route behind the gate, and the layers around them.
pub fn router(state: AppState) -> Router {
    router_from(routes(), state)
}

/// `routes` behind the gate, with the layers around them (tests add routes to check the gate).
pub fn router_from(routes: Routes, state: AppState) -> Router {
    routes
        .into_router()
        .route_layer(middleware::from_fn_with_state(state.clone(), gate::gate))
        .merge(auth::logos::router())
        .fallback(layers::not_found)
        .method_not_allowed_fallback(layers::method_not_allowed)
        .layer(middleware::from_fn(layers::log_errors))
        .layer(middleware::from_fn_with_state(state.clone(), limits::limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            layers::record_request,
        ))
        .layer(TraceLayer::new_for_http())
        .layer(layers::cors(&state.config))
        .with_state(state)
}
