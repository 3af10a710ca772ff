//! URI fields (document and repository `uri`, threat model and threat `issue_uri`): absolute `http`/`https`
//! URLs with a host, written in RFC 3986 characters, so that every stored URI satisfies the contract's
//! `format: uri` and its pattern. An empty or blank `issue_uri` means "none" (the web client sends `""` for
//! a cleared field) and is not stored. Hosts are not resolved (upstream refuses a host that does not
//! resolve; see `docs/server.md`, "Differences from the contract"). Pure.

use serde_json::{Map, Value};

use crate::error::ApiError;

/// Whether `c` may appear in a URI (RFC 3986 unreserved, reserved and `%`).
fn uri_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=%".contains(c)
}

/// Whether `host` is a DNS name, an IPv4 address, or a bracketed IPv6 address.
fn valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Checks that `uri` is an absolute http(s) URL with a valid host and port.
pub fn check_http_url(field: &str, uri: &str) -> Result<(), ApiError> {
    let refuse = || ApiError::invalid(format!("{field} must be an absolute http or https URL"));
    let uri = uri.trim();
    if !uri.chars().all(uri_char) || url::Url::parse(uri).is_err() {
        return Err(refuse());
    }
    let (scheme, rest) = uri.split_once("://").ok_or_else(refuse)?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(refuse());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match host_port.rfind(':') {
        Some(i) if !host_port[i..].contains(']') => (&host_port[..i], Some(&host_port[i + 1..])),
        _ => (host_port, None),
    };
    if !valid_host(host) {
        return Err(refuse());
    }
    if let Some(p) = port
        && p.parse::<u16>().is_err()
    {
        return Err(refuse());
    }
    Ok(())
}

/// Checks and trims the optional URI member `field` of `m`; an empty or blank value is removed.
pub fn optional_http_url(m: &mut Map<String, Value>, field: &str) -> Result<(), ApiError> {
    let Some(Value::String(uri)) = m.get_mut(field) else {
        return Ok(());
    };
    if uri.trim().is_empty() {
        m.remove(field);
        return Ok(());
    }
    check_http_url(field, uri)?;
    *uri = uri.trim().to_owned();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_http_urls_only() {
        for ok in [
            "https://example.com/spec",
            "http://localhost:8080/x?y=1#z",
            "https://github.com/x/y",
            "https://user@host.example/a",
            "http://10.0.0.1/",
            "http://[::1]:80/a",
            "HTTPS://Example.COM",
        ] {
            assert!(check_http_url("uri", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "example.com/spec",
            "ftp://example.com/x",
            "javascript://x",
            "https://",
            "https:///path",
            "https://exa mple.com",
            "https://-bad-.com",
            "https://host:99999/",
            "https://host:port/",
            "https://a..b/",
            "file:///etc/passwd",
            "w://¡",
            "https://example.com/¡",
            "https://example.com/a\"b",
            "https://example.com/<x>",
        ] {
            assert!(check_http_url("uri", bad).is_err(), "{bad}");
        }
        let mut m = serde_json::json!({"issue_uri": "  ", "uri": " https://x.example/a "})
            .as_object()
            .cloned()
            .unwrap();
        optional_http_url(&mut m, "issue_uri").unwrap();
        optional_http_url(&mut m, "uri").unwrap();
        assert_eq!(
            Value::Object(m),
            serde_json::json!({"uri": "https://x.example/a"})
        );
    }
}
