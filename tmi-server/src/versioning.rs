//! Optimistic locking with `If-Match` (tmi-compat.md §8): `3`, `"3"`, `W/"3"` or `*`; a mismatch
//! is 409 `version_mismatch`, a malformed value 400, a missing one is allowed with deprecation
//! headers unless `TMI_REQUIRE_IF_MATCH`. The same check guards PUT, PATCH and DELETE, and every
//! single-resource GET sends the version as `ETag`. Pure.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;

use crate::error::ApiError;

/// How the request's precondition was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    Matched,
    Missing,
}

/// Checks `If-Match` against the stored version.
pub fn check(headers: &HeaderMap, current: i64, required: bool) -> Result<Precondition, ApiError> {
    let Some(raw) = headers.get(header::IF_MATCH) else {
        return if required {
            Err(ApiError::IfMatchRequired)
        } else {
            Ok(Precondition::Missing)
        };
    };
    let s = raw.to_str().map_err(|_| malformed())?.trim();
    if s == "*" {
        return Ok(Precondition::Matched);
    }
    let s = s.strip_prefix("W/").unwrap_or(s);
    let s = s.strip_prefix('"').and_then(|x| x.strip_suffix('"')).unwrap_or(s);
    let v: i64 = s.parse().map_err(|_| malformed())?;
    if v < 1 {
        return Err(malformed());
    }
    if v != current {
        return Err(ApiError::VersionMismatch);
    }
    Ok(Precondition::Matched)
}

fn malformed() -> ApiError {
    ApiError::BadRequest(
        "invalid_if_match",
        "If-Match must be a version number, a quoted version or *".into(),
    )
}

/// Adds the version as a strong `ETag` (single-resource GETs and versioned writes).
pub fn tag(res: &mut Response, version: i64) {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        res.headers_mut().insert(header::ETAG, v);
    }
}

/// Adds `ETag` after a versioned write, and TMI's deprecation headers when `If-Match` was missing.
pub fn decorate(res: &mut Response, version: i64, pre: Precondition) {
    tag(res, version);
    if pre == Precondition::Missing {
        res.headers_mut()
            .insert("deprecation", HeaderValue::from_static("true"));
        res.headers_mut().insert(
            header::WARNING,
            HeaderValue::from_static("299 - \"If-Match header (or body 'version') is required for updates; requests without it are deprecated\""),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::IF_MATCH, v.parse().unwrap());
        m
    }

    #[test]
    fn forms() {
        for ok in ["3", "\"3\"", "W/\"3\"", "*"] {
            assert_eq!(check(&h(ok), 3, true).unwrap(), Precondition::Matched, "{ok}");
        }
        assert!(matches!(check(&h("2"), 3, false), Err(ApiError::VersionMismatch)));
        assert!(matches!(
            check(&h("abc"), 3, false),
            Err(ApiError::BadRequest("invalid_if_match", _))
        ));
        assert_eq!(check(&HeaderMap::new(), 3, false).unwrap(), Precondition::Missing);
        assert!(matches!(
            check(&HeaderMap::new(), 3, true),
            Err(ApiError::IfMatchRequired)
        ));
    }
}
