//! Request-body hygiene (tmi-compat.md §8): strict JSON parsing that rejects duplicate keys, enum
//! normalization and HTML-injection rejection of the raw body. Pure. HTML sanitization of the text
//! fields that are cleaned before they are stored is in `html`, query strings are in `query`.

pub mod html;
pub mod query;

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v)
            .map(Value::Number)
            .unwrap_or(Value::Null))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Strict)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            let v = map.next_value_seed(Strict)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// Parses JSON, rejecting duplicate object keys.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = Strict.deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(v)
}

/// Field names whose string values are normalized to snake_case (upstream `api/enum_normalizer.go`).
const ENUM_FIELDS: &[&str] = &[
    "status",
    "severity",
    "role",
    "principal_type",
    "grant_type",
    "token_type",
    "permissions",
    "subject_type",
    "change_type",
    "object_type",
    "event_type",
    "refType",
    "jump",
    "textAnchor",
    "textVerticalAnchor",
    "default_theme",
];

/// Whether values named `field` are normalized (also in query strings, e.g. `?severity=High`).
pub fn is_enum_field(field: &str) -> bool {
    ENUM_FIELDS.contains(&field)
}

/// `"In Progress"` → `in_progress`, `"inProgress"` → `in_progress`, `"High"` → `high`.
pub fn normalize_enum(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    let mut prev_lower = false;
    for c in s.trim().chars() {
        if c.is_whitespace() {
            if !out.ends_with('_') {
                out.push('_');
            }
            prev_lower = false;
        } else if c.is_uppercase() {
            if prev_lower && !out.ends_with('_') {
                out.push('_');
            }
            out.extend(c.to_lowercase());
            prev_lower = false;
        } else {
            out.push(c);
            prev_lower = c.is_lowercase() || c.is_ascii_digit();
        }
    }
    out
}

/// Normalizes enum-like fields at any depth.
pub fn normalize_enums(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if ENUM_FIELDS.contains(&k.as_str())
                    && let Value::String(s) = child
                {
                    *s = normalize_enum(s);
                } else {
                    normalize_enums(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize_enums),
        _ => {}
    }
}

static INJECTION: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    Regex::new(r"(?i)<\s*/?\s*(script|iframe|object|embed|style|link|meta|svg|img|form|base)\b|javascript\s*:|vbscript\s*:|data\s*:\s*text/html|\bon[a-z]+\s*=")
        .expect("static regex")
});

/// Keys whose values are not plain text: markdown (sanitized instead), base64 SVG, free-form cell data.
const SKIP_KEYS: &[&str] = &["content", "svg", "cells", "data"];

/// Rejects script-like content in the raw body's text (any depth, all but `SKIP_KEYS`); returns the
/// offending field path. Fields that are cleaned before being stored (`html`) are checked again there,
/// on the cleaned text, since cleaning can join fragments into new markup.
pub fn find_injection(v: &Value, path: &str) -> Option<String> {
    match v {
        Value::String(s) if INJECTION.is_match(s) => Some(if path.is_empty() {
            "/".into()
        } else {
            path.to_owned()
        }),
        Value::Object(map) => map
            .iter()
            .filter(|(k, _)| !SKIP_KEYS.contains(&k.as_str()))
            .find_map(|(k, c)| find_injection(c, &format!("{path}/{k}"))),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, c)| find_injection(c, &format!("{path}/{i}"))),
        _ => None,
    }
}

/// Whether any string (or key) contains NUL, which PostgreSQL cannot store in text or JSONB.
pub fn contains_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(map) => map.iter().any(|(k, c)| k.contains('\0') || contains_nul(c)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strict_parsing() {
        assert_eq!(
            parse_strict(br#"{"a":[1,{"b":null}]}"#).unwrap(),
            json!({"a": [1, {"b": null}]})
        );
        assert!(
            parse_strict(br#"{"a":1,"a":2}"#)
                .unwrap_err()
                .contains("duplicate")
        );
        assert!(parse_strict(br#"{"x":{"a":1,"a":2}}"#).is_err());
        assert!(parse_strict(b"{").is_err());
        assert!(parse_strict(b"{} x").is_err());
    }

    #[test]
    fn enum_normalization() {
        assert_eq!(normalize_enum("High"), "high");
        assert_eq!(normalize_enum(" In Progress "), "in_progress");
        assert_eq!(normalize_enum("inProgress"), "in_progress");
        assert_eq!(normalize_enum("not_started"), "not_started");
        assert_eq!(normalize_enum("3"), "3");
        let mut v = json!({"severity": "Critical", "authorization": [{"role": "Owner", "name": "Keep Me"}]});
        normalize_enums(&mut v);
        assert_eq!(
            v,
            json!({"severity": "critical", "authorization": [{"role": "owner", "name": "Keep Me"}]})
        );
    }

    #[test]
    fn injection() {
        assert!(find_injection(&json!({"name": "<script>alert(1)</script>"}), "").is_some());
        assert!(find_injection(&json!({"a": [{"description": "x onerror=y"}]}), "").is_some());
        assert!(find_injection(&json!({"name": "Payments & <b>API</b>"}), "").is_none());
        assert!(find_injection(&json!({"content": "<script>"}), "").is_none());
        assert!(contains_nul(&json!({"cells": [{"data": {"x": "a\0b"}}]})));
        assert!(!contains_nul(&json!({"a": "b"})));
    }
}
