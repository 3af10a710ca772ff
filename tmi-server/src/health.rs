//! Service info and probes: `GET /` (TMI's `ApiInfo`) and public `/config` (contract operations),
//! and the operational endpoints outside the contract, `/livez`, `/readyz`, `/metrics` and the
//! served OpenAPI document (listed in `gate::OPERATIONAL`). IO: pings the database and the token
//! store.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::public_url::base_url;
use crate::routes::Routes;
use crate::state::AppState;

pub fn router() -> Routes {
    Routes::new()
        .get("/", root)
        .get("/config", client_config)
        .get("/livez", livez)
        .get("/readyz", readyz)
        .get("/metrics", metrics)
        .get("/openapi.json", openapi_document)
}

const PING_TIMEOUT: Duration = Duration::from_secs(3);

async fn probe<F: std::future::Future<Output = Result<(), String>>>(f: F) -> Value {
    let start = Instant::now();
    let result = tokio::time::timeout(PING_TIMEOUT, f).await;
    let latency = start.elapsed().as_millis() as i64;
    match result {
        Ok(Ok(())) => json!({"status": "healthy", "latency_ms": latency}),
        Ok(Err(msg)) => json!({"status": "unhealthy", "latency_ms": latency, "message": msg}),
        Err(_) => json!({"status": "unhealthy", "latency_ms": latency, "message": "timed out"}),
    }
}

async fn components(state: &AppState) -> (Value, Value) {
    let db = probe(async {
        state
            .store
            .ping()
            .await
            .map_err(|_| "database unreachable".to_owned())
    })
    .await;
    let redis = if state.redis_enabled {
        probe(async { state.kv.ping().await.map_err(|_| "redis unreachable".to_owned()) }).await
    } else {
        json!({"status": "unknown", "message": "Redis is not configured; using the in-process store"})
    };
    (db, redis)
}

fn unhealthy(v: &Value) -> bool {
    v["status"] == "unhealthy"
}

/// `GET /`: always 200; `degraded` with details when the database or Redis is unreachable.
pub async fn root(State(state): State<AppState>, headers: HeaderMap) -> Json<Value> {
    let (db, redis) = components(&state).await;
    let degraded = unhealthy(&db) || unhealthy(&redis);
    let mut info = json!({
        "status": {
            "code": if degraded { "degraded" } else { "ok" },
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        },
        "service": {"name": "TMI", "build": env!("CARGO_PKG_VERSION")},
        "api": {"version": state.spec.version, "specification": format!("{}/openapi.json", base_url(&state.config, &headers))},
    });
    if let (Some(name), Some(contact)) = (&state.config.operator_name, &state.config.operator_contact) {
        info["operator"] = json!({"name": name, "contact": contact});
    }
    if degraded {
        info["health"] = json!({"database": db, "redis": redis});
    }
    Json(info)
}

/// `GET /livez`: the process is serving.
pub async fn livez() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 when the database and (if configured) Redis answer, else 503.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let (db, redis) = components(&state).await;
    let ready = !unhealthy(&db) && !unhealthy(&redis);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"status": if ready { "ok" } else { "unavailable" }, "database": db, "redis": redis})),
    )
        .into_response()
}

/// `GET /config`: public client configuration.
pub async fn client_config(State(state): State<AppState>) -> Response {
    let c = &state.config;
    let mut operator = serde_json::Map::new();
    for (k, v) in [
        ("name", &c.operator_name),
        ("contact", &c.operator_contact),
        ("jurisdiction", &c.operator_jurisdiction),
    ] {
        if let Some(v) = v {
            operator.insert(k.into(), json!(v));
        }
    }
    let body = json!({
        "features": {"websocket_enabled": true, "saml_enabled": false, "webhooks_enabled": false, "timmy_enabled": false},
        "operator": operator,
        "limits": {"max_file_upload_mb": 10, "max_diagram_participants": c.websocket_max_participants_per_session},
        "ui": {"default_theme": "auto"},
        // The built-in HTTP fetch, listed by upstream on every instance.
        "content_providers": [{"id": "http", "name": "HTTP", "kind": "direct", "icon": "fa-solid fa-globe"}],
    });
    ([(header::CACHE_CONTROL, "public, max-age=300")], Json(body)).into_response()
}

/// `GET /openapi.json`: the contract this server implements.
pub async fn openapi_document() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::DOCUMENT,
    )
        .into_response()
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}
