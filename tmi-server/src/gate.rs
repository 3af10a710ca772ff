//! The request gate: one middleware that applies TMI's checks in its status-code precedence
//! (tmi-compat.md §8): 406 → path UUIDs 400 → 415 → malformed/duplicate-key JSON 400 → JWT 401 →
//! schema validation 400 → service-account write 403 → parent threat model 404 / role 403. It fails
//! closed: an operation the embedded contract does not define answers 404, and only `OPERATIONAL`
//! routes bypass it. What it establishes reaches handlers through the extractors in `extract`. The
//! token is checked before the body is read: without valid credentials at most 64 KiB of a
//! protected operation's body is read (to keep that precedence), never the 16 MiB an authenticated
//! caller may send. IO: reads the token store and the threat model through `AppState`.

use axum::body::{Body, to_bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use uuid::Uuid;

use crate::auth::tokens::{ACCESS_COOKIE, AuthUser, cookie_value};
use crate::authz::{Subject, effective_role};
use crate::domain::compat;
use crate::error::ApiError;
use crate::extract::{JsonBody, RawBody, TmAccess};
use crate::input;
use crate::openapi::Operation;
use crate::state::AppState;

/// Bodies above this size are refused before parsing (the schema limits are far smaller).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// What is read of the body of a protected operation called without valid credentials: enough to
/// answer a malformed body with 400/415 as TMI does, before the 401.
const UNAUTHENTICATED_BODY: usize = 64 * 1024;

/// An Authorization header that is not `Bearer <token>`.
#[derive(Debug, PartialEq, Eq)]
pub struct MalformedAuthorization;

/// The bearer token or access cookie. `Err` when an Authorization header is present but malformed
/// (no fallback to the cookie, as in TMI).
pub fn presented_token(headers: &HeaderMap) -> Result<Option<String>, MalformedAuthorization> {
    if let Some(h) = headers.get(header::AUTHORIZATION) {
        let s = h.to_str().map_err(|_| MalformedAuthorization)?;
        let (scheme, token) = s.split_once(' ').ok_or(MalformedAuthorization)?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(MalformedAuthorization);
        }
        return Ok(Some(token.trim().to_owned()));
    }
    Ok(cookie_value(headers, ACCESS_COOKIE))
}

/// Authenticates a request's token, if any. `Ok(None)` for no or invalid credentials.
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Option<AuthUser>, ApiError> {
    match presented_token(headers) {
        Ok(Some(t)) => state.tokens.authenticate(&t).await,
        Ok(None) | Err(MalformedAuthorization) => Ok(None),
    }
}

fn accepts_json(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    accept.split(',').any(|part| {
        let media = part.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        media.is_empty()
            || media == "*/*"
            || media == "application/*"
            || media.ends_with("json")
            || media == "text/html"
            || media == "text/event-stream"
    })
}

/// Pairs a path template with the actual path: `{name}` → value.
fn path_params<'a>(template: &'a str, path: &'a str) -> Vec<(&'a str, &'a str)> {
    template
        .split('/')
        .zip(path.split('/'))
        .filter_map(|(t, p)| {
            t.strip_prefix('{')
                .and_then(|t| t.strip_suffix('}'))
                .map(|name| (name, p))
        })
        .collect()
}

fn coerce_query(schema: &Value, raw: &str) -> Result<Value, ()> {
    let ty = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("string"),
        _ => "string",
    };
    match ty {
        "integer" => raw.parse::<i64>().map(Value::from).map_err(|_| ()),
        "number" => raw
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or(()),
        "boolean" => match raw {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(()),
        },
        "array" => Ok(Value::Array(
            raw.split(',').map(|s| Value::String(s.to_owned())).collect(),
        )),
        _ => Ok(Value::String(raw.to_owned())),
    }
}

fn validate_query(state: &AppState, op: &Operation, query: Option<&str>) -> Result<(), ApiError> {
    let Some(query) = query else { return Ok(()) };
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    for (name, raw) in pairs {
        let Some(p) = op.params.iter().find(|p| p.location == "query" && p.name == name) else {
            continue;
        };
        let mut value = coerce_query(&p.schema, &raw)
            .map_err(|_| ApiError::invalid(format!("Invalid value for query parameter {name}")))?;
        // Enum-like parameters are compared after TMI's normalization, as the handlers do.
        if input::is_enum_field(&name) {
            let items = match &mut value {
                Value::Array(items) => items.iter_mut().collect(),
                other => vec![other],
            };
            for item in items {
                if let Value::String(s) = item {
                    *s = input::normalize_enum(s);
                }
            }
        }
        if let Err(errors) = state
            .spec
            .validate(&format!("query:{}:{name}", op.id), &p.schema, &value)
        {
            return Err(ApiError::invalid(format!(
                "Invalid query parameter {name}: {}",
                errors.join("; ")
            )));
        }
    }
    Ok(())
}

/// The routes outside the OpenAPI contract, passed through without the gate's checks: the probes,
/// the metrics, the served contract itself, and the collaboration WebSocket (authenticated by its
/// single-use ticket). Any other route the contract does not know answers 404.
pub const OPERATIONAL: &[(&str, &str)] = &[
    ("GET", "/livez"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/threat_models/{threat_model_id}/diagrams/{diagram_id}/ws"),
];

/// Whether (method, matched template) is an operational route (`HEAD` counts as `GET`).
pub fn is_operational(method: &Method, template: &str) -> bool {
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    OPERATIONAL
        .iter()
        .any(|(m, t)| *t == template && method.as_str() == *m)
}

/// The gate middleware; installed with `route_layer`, so it only sees matched routes.
pub async fn gate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    if template.is_some_and(|t| is_operational(req.method(), &t)) {
        return next.run(req).await;
    }
    match run(&state, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn run(state: &AppState, req: Request) -> Result<Request, ApiError> {
    let (mut parts, body) = req.into_parts();
    let template = parts
        .extensions
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let method = if parts.method == Method::HEAD {
        Method::GET
    } else {
        parts.method.clone()
    };
    // Fail closed: a route the contract does not define has no authorization rules to apply.
    let Some(op) = state.spec.operation(method.as_str(), &template) else {
        return Err(ApiError::NotFound(format!(
            "endpoint {} is not defined in the API specification",
            parts.uri.path()
        )));
    };

    if parts.uri.query().is_some_and(|q| q.contains("%00")) {
        return Err(ApiError::invalid(
            "Query parameters must not contain NUL characters",
        ));
    }
    if !accepts_json(&parts.headers) {
        return Err(ApiError::NotAcceptable(
            "Only application/json responses are available".into(),
        ));
    }
    // Path identifiers are checked before authentication.
    let path = parts.uri.path().to_owned();
    let mut tm_id = None;
    for (name, value) in path_params(&template, &path) {
        let is_uuid = op
            .params
            .iter()
            .any(|p| p.name == name && p.schema.get("format").and_then(Value::as_str) == Some("uuid"))
            && name != "provider_id";
        if is_uuid {
            let id = Uuid::parse_str(value)
                .map_err(|_| ApiError::invalid_id(format!("Invalid {name}: must be a UUID")))?;
            if name == "threat_model_id" {
                tm_id = Some(id);
            }
        }
    }

    // Authentication, before the body is read: an unauthenticated caller of a protected operation
    // gets at most `UNAUTHENTICATED_BODY` read (enough to keep TMI's precedence of a malformed body's
    // 400/415 over the 401), never the full `MAX_BODY`.
    let public = op.public;
    let user = match presented_token(&parts.headers) {
        Ok(Some(t)) => state.tokens.authenticate(&t).await?,
        _ => None,
    };
    let refused = user.is_none() && !public;
    let limit = if refused { UNAUTHENTICATED_BODY } else { MAX_BODY };
    let too_large = || {
        if refused {
            ApiError::Unauthorized
        } else {
            ApiError::OAuth(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Request body too large".into(),
            )
        }
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let bytes = to_bytes(body, limit).await.map_err(|e| {
        if crate::server::is_body_timeout(&e) {
            ApiError::RequestTimeout
        } else {
            too_large()
        }
    })?;
    let mut json = None;
    let mut content_type = None;
    if !op.content_types.is_empty() {
        let ct = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
        match ct {
            None if bytes.is_empty() => {
                if op.body_required {
                    return Err(ApiError::invalid("Request body is required"));
                }
            }
            None => return Err(ApiError::invalid("Content-Type header is required")),
            Some(ct) => {
                if !op.content_types.contains(&ct) {
                    return Err(ApiError::UnsupportedMediaType(format!(
                        "Unsupported Content-Type {ct}; expected {}",
                        op.content_types.join(" or ")
                    )));
                }
                if ct.ends_with("json") {
                    if bytes.is_empty() {
                        if op.body_required {
                            return Err(ApiError::invalid("Request body is required"));
                        }
                    } else {
                        let v = input::parse_strict(&bytes)
                            .map_err(|e| ApiError::invalid(format!("Invalid JSON: {e}")))?;
                        if input::contains_nul(&v) {
                            return Err(ApiError::invalid("Strings must not contain NUL characters"));
                        }
                        json = Some(v);
                    }
                }
                content_type = Some(ct);
            }
        }
    }

    if refused {
        return Err(ApiError::Unauthorized);
    }

    // Normalization and schema validation.
    if let Some(v) = json.as_mut() {
        let ct = content_type.as_deref().unwrap_or("application/json");
        if ct == "application/json" {
            compat::fill_request_defaults(&op.id, v);
            input::normalize_enums(v);
            if let Some(at) = input::find_injection(v, "") {
                return Err(ApiError::invalid(format!(
                    "Potentially unsafe content in field {at}"
                )));
            }
        }
        if let Some(schema) = op.request_schemas.get(ct)
            && let Err(errors) = state.spec.validate(&format!("request:{}:{ct}", op.id), schema, v)
        {
            return Err(ApiError::invalid(format!(
                "Request validation failed: {}",
                errors.join("; ")
            )));
        }
    }
    validate_query(state, &op, parts.uri.query())?;

    // `subject_authority: invoker` (every write of threat-model content): a service account's own
    // token may read, not write (tmi-compat.md §3.4).
    if op.invoker_only && user.as_ref().is_some_and(AuthUser::is_service_account) {
        return Err(ApiError::forbidden(
            "Service-account tokens cannot perform this operation; it needs an interactive user",
        ));
    }

    // Parent threat model: 404 when missing or deleted, 403 without the role.
    if let (Some(id), Some(user)) = (tm_id, user.as_ref()) {
        let needed = op.ownership;
        let tm = match state.store.get_threat_model(id).await {
            Ok(tm) => tm,
            Err(crate::store::StoreError::NotFound) => return Err(ApiError::not_found("Threat model")),
            Err(e) => return Err(e.into()),
        };
        let restoring_tm = template == "/threat_models/{threat_model_id}/restore";
        if tm.deleted_at.is_some() && !restoring_tm {
            return Err(ApiError::not_found("Threat model"));
        }
        let role = effective_role(&tm, &Subject::from(user))
            .ok_or_else(|| ApiError::forbidden("You do not have access to this threat model"))?;
        if !role.satisfies(needed) {
            return Err(ApiError::forbidden(
                format!("This operation requires the {needed:?} role").to_lowercase(),
            ));
        }
        parts.extensions.insert(TmAccess { tm, role });
    }

    if let Some(u) = user {
        parts.extensions.insert(u);
    }
    if let Some(v) = json {
        parts.extensions.insert(JsonBody(v));
    }
    parts.extensions.insert(RawBody(bytes.clone()));
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_params_pair_up() {
        let p = path_params(
            "/threat_models/{threat_model_id}/threats/{threat_id}",
            "/threat_models/a/threats/b",
        );
        assert_eq!(p, vec![("threat_model_id", "a"), ("threat_id", "b")]);
    }

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_token(&h), Ok(None));
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(presented_token(&h), Ok(Some("abc".into())));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(presented_token(&h), Err(MalformedAuthorization));
    }

    #[test]
    fn accept_header() {
        let mut h = HeaderMap::new();
        assert!(accepts_json(&h));
        h.insert(header::ACCEPT, "application/json, text/plain".parse().unwrap());
        assert!(accepts_json(&h));
        h.insert(header::ACCEPT, "application/xml".parse().unwrap());
        assert!(!accepts_json(&h));
    }
}
