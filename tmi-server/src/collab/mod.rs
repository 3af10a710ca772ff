//! Real-time diagram collaboration over WebSockets (tmi-compat.md §5), shared across replicas.
//!
//! `protocol` is the wire format (pure serde); `cells` applies operations (pure); `backend` is
//! the shared state (Redis, or memory for one instance); `registry` keeps sessions over it; `hub`
//! is this replica's sockets, ordered delivery and the diagram writes; `socket` drives one
//! WebSocket; `rest` holds the REST endpoints. The design is in docs/architecture.md.

pub mod backend;
pub mod cells;
pub mod hub;
pub mod protocol;
pub mod registry;
pub mod rest;
pub mod socket;

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::routes::Routes;

/// The collaboration routes: the REST endpoints of the contract and the WebSocket (outside the
/// contract, authenticated by ticket only: the gate lets it through as an operational route).
pub fn router() -> Routes {
    let collaborate = "/threat_models/{threat_model_id}/diagrams/{diagram_id}/collaborate";
    Routes::new()
        .get(collaborate, rest::get_session)
        .post(collaborate, rest::start_session)
        .delete(collaborate, rest::end_session)
        .get("/ws/ticket", rest::ticket)
        .get("/me/sessions", rest::my_sessions)
        .get(
            "/threat_models/{threat_model_id}/diagrams/{diagram_id}/ws",
            socket::upgrade,
        )
}

/// The hub's tunables from the configuration.
pub fn settings(config: &Config) -> hub::Settings {
    hub::Settings {
        ping_interval: Duration::from_secs(config.websocket_ping_interval_seconds),
        empty_session_grace: Duration::from_secs(config.websocket_empty_session_seconds),
        max_connections_per_user: config.websocket_max_connections_per_user,
        max_participants_per_session: config.websocket_max_participants_per_session,
        max_messages_per_second: config.websocket_max_messages_per_second,
        ..hub::Settings::default()
    }
}

/// Connects the shared state: Redis when configured, else process memory.
pub async fn backend(config: &Config) -> anyhow::Result<Arc<dyn backend::Backend>> {
    Ok(match &config.redis {
        Some(r) => Arc::new(backend::RedisBackend::connect(&r.url(), &r.key_prefix).await?),
        None => Arc::new(backend::MemoryBackend::default()),
    })
}
