//! The server's public URL as a client sees it: `TMI_SERVER_BASE_URL` when set, else what a
//! TLS-terminating proxy forwarded, else `Host`. For discovery documents, the served contract's
//! address and collaboration's `websocket_url`. Pure.

use axum::http::{HeaderMap, header};

use crate::config::Config;

/// Scheme and host the client used, honouring `X-Forwarded-Proto` (for browser-facing URLs).
pub fn base_url(config: &Config, headers: &HeaderMap) -> String {
    if let Some(b) = &config.base_url {
        return b.clone();
    }
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(header::HOST))
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost:8080");
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("http");
    format!("{proto}://{host}")
}

/// `ws[s]://host[/prefix]`: from `TMI_SERVER_BASE_URL` when set, else from the forwarded
/// headers a TLS-terminating proxy adds, else from `Host`.
pub fn websocket_base(config: &Config, headers: &HeaderMap) -> String {
    if let Some(base) = &config.base_url {
        if let Some(rest) = base.strip_prefix("https://") {
            return format!("wss://{rest}");
        }
        if let Some(rest) = base.strip_prefix("http://") {
            return format!("ws://{rest}");
        }
    }
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(',').next().unwrap_or("").trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let mut proto = get("x-forwarded-proto");
    let mut host = get("x-forwarded-host");
    if let Some(fwd) = get("forwarded") {
        for part in fwd.split(';') {
            let (k, v) = part.split_once('=').unwrap_or(("", ""));
            let v = v.trim().trim_matches('"').to_owned();
            match k.trim().to_ascii_lowercase().as_str() {
                "proto" if proto.is_none() => proto = Some(v),
                "host" if host.is_none() => host = Some(v),
                _ => {}
            }
        }
    }
    let host = host
        .or_else(|| get("host"))
        .unwrap_or_else(|| format!("localhost:{}", config.port));
    let scheme = if proto.is_some_and(|p| p.eq_ignore_ascii_case("https")) {
        "wss"
    } else {
        "ws"
    };
    format!("{scheme}://{host}")
}
