//! Query strings of the list operations as TMI clients send them: array parameters either repeated
//! (`?status=a&status=b`, the contract's `form` + `explode` style) or comma lists (`?status=a,b`,
//! what the web client sends), RFC 3339 bounds, numbers and booleans. Pure.

use chrono::{DateTime, Utc};

use super::normalize_enum;
use crate::error::ApiError;

/// The decoded pairs of a query string, in order.
#[derive(Debug, Clone, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Decodes a raw query string; undecodable input yields no parameters (the gate has already
    /// validated what the contract declares).
    pub fn parse(raw: Option<&str>) -> Self {
        Self(
            raw.and_then(|q| serde_urlencoded::from_str(q).ok())
                .unwrap_or_default(),
        )
    }

    /// The last non-empty value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// Every value of an array parameter, repeated or comma-separated, trimmed, empty ones dropped.
    pub fn list(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// `list`, with TMI's enum normalization (`In Progress` → `in_progress`).
    pub fn enum_list(&self, key: &str) -> Vec<String> {
        self.list(key)
            .iter()
            .map(|s| normalize_enum(s))
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// An RFC 3339 timestamp.
    pub fn timestamp(&self, key: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        self.get(key)
            .map(|s| {
                DateTime::parse_from_rfc3339(s)
                    .map(|d| d.with_timezone(&Utc))
                    .map_err(|_| ApiError::invalid(format!("{key} must be an RFC 3339 timestamp")))
            })
            .transpose()
    }

    pub fn number(&self, key: &str) -> Result<Option<f64>, ApiError> {
        self.get(key)
            .map(|s| {
                s.parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite())
                    .ok_or_else(|| ApiError::invalid(format!("{key} must be a number")))
            })
            .transpose()
    }

    pub fn boolean(&self, key: &str) -> Result<Option<bool>, ApiError> {
        self.get(key)
            .map(|s| match s {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(ApiError::invalid(format!("{key} must be true or false"))),
            })
            .transpose()
    }

    /// A non-negative integer with a default and an upper bound (the gate enforces the contract's
    /// range; this only keeps the handler total).
    pub fn integer(&self, key: &str, default: i64, max: i64) -> Result<i64, ApiError> {
        match self.get(key) {
            None => Ok(default),
            Some(s) => s
                .parse::<i64>()
                .ok()
                .filter(|n| (0..=max).contains(n))
                .ok_or_else(|| ApiError::invalid(format!("{key} must be an integer from 0 to {max}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_repeated_or_comma_separated() {
        let p = Params::parse(Some("status=a,b&status=In%20Progress&x=&status="));
        assert_eq!(p.list("status"), vec!["a", "b", "In Progress"]);
        assert_eq!(p.enum_list("status"), vec!["a", "b", "in_progress"]);
        assert_eq!(p.get("status"), Some("In Progress"));
        assert_eq!(p.get("x"), None, "empty values are absent");
        assert!(p.list("missing").is_empty());
    }

    #[test]
    fn scalars() {
        let p = Params::parse(Some("t=2026-01-02T03:04:05Z&n=7.5&b=true&i=3&bad=x"));
        assert_eq!(
            p.timestamp("t").unwrap().map(|t| t.timestamp()),
            Some(1_767_323_045)
        );
        assert!(p.timestamp("bad").is_err());
        assert_eq!(p.number("n").unwrap(), Some(7.5));
        assert!(p.number("bad").is_err());
        assert_eq!(p.boolean("b").unwrap(), Some(true));
        assert!(p.boolean("bad").is_err());
        assert_eq!(p.integer("i", 20, 100).unwrap(), 3);
        assert_eq!(p.integer("missing", 20, 100).unwrap(), 20);
        assert!(p.integer("bad", 20, 100).is_err());
        assert_eq!(Params::parse(Some("%FF=%FE")).get("x"), None);
    }
}
