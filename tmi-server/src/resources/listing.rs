//! Filters and ordering of the child lists (`GET …/{kind}`), applied to the JSON documents in the
//! same way whichever database holds them; pagination happens after filtering, so `total` counts
//! the matches. Pure.
//!
//! Threats take the contract's filters (tmi-compat.md §1.6); every kind also takes `name` and the
//! created/modified bounds, and `sort=<field>:<asc|desc>`.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::error::ApiError;
use crate::input::query::Params;
use crate::store::ChildRecord;

/// A parsed list request.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub name: Option<String>,
    pub description: Option<String>,
    pub threat_types: Vec<String>,
    pub severities: Vec<String>,
    pub priorities: Vec<String>,
    pub statuses: Vec<String>,
    pub mitigated: Option<bool>,
    pub diagram_id: Option<String>,
    pub cell_id: Option<String>,
    /// `(comparison, bound)` pairs on `score`.
    pub score: Vec<(Cmp, f64)>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub modified_after: Option<DateTime<Utc>>,
    pub modified_before: Option<DateTime<Utc>>,
    /// Field and whether descending.
    pub sort: (String, bool),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cmp {
    Gt,
    Lt,
    Ge,
    Le,
    Eq,
}

impl Cmp {
    fn holds(self, value: f64, bound: f64) -> bool {
        match self {
            Cmp::Gt => value > bound,
            Cmp::Lt => value < bound,
            Cmp::Ge => value >= bound,
            Cmp::Le => value <= bound,
            // Scores have one decimal: equal within float noise.
            Cmp::Eq => (value - bound).abs() < 1e-6,
        }
    }
}

impl Filter {
    /// Reads the filters `kind` supports; threats default to newest first, the others to oldest first.
    pub fn parse(kind: &str, q: &Params) -> Result<Self, ApiError> {
        let threat = kind == "threat";
        let default_sort = if threat {
            "created_at:desc"
        } else {
            "created_at:asc"
        };
        let sort = q.get("sort").unwrap_or(default_sort);
        let (field, dir) = sort.split_once(':').unwrap_or((sort, "asc"));
        let descending = match dir.to_ascii_lowercase().as_str() {
            "asc" => false,
            "desc" => true,
            _ => return Err(ApiError::invalid("sort must be <field>:asc or <field>:desc")),
        };
        let mut f = Filter {
            name: q.get("name").map(str::to_lowercase),
            created_after: q.timestamp("created_after")?,
            created_before: q.timestamp("created_before")?,
            modified_after: q.timestamp("modified_after")?,
            modified_before: q.timestamp("modified_before")?,
            sort: (field.to_owned(), descending),
            ..Default::default()
        };
        if threat {
            f.description = q.get("description").map(str::to_lowercase);
            f.threat_types = q.list("threat_type").iter().map(|s| s.to_lowercase()).collect();
            f.severities = q.enum_list("severity");
            f.priorities = q.enum_list("priority");
            f.statuses = q.enum_list("status");
            f.mitigated = q.boolean("mitigated")?;
            f.diagram_id = q.get("diagram_id").map(str::to_lowercase);
            f.cell_id = q.get("cell_id").map(str::to_lowercase);
            for (key, cmp) in [
                ("score_gt", Cmp::Gt),
                ("score_lt", Cmp::Lt),
                ("score_ge", Cmp::Ge),
                ("score_le", Cmp::Le),
                ("score_eq", Cmp::Eq),
            ] {
                if let Some(bound) = q.number(key)? {
                    f.score.push((cmp, bound));
                }
            }
        }
        Ok(f)
    }

    /// Whether a child passes every filter.
    pub fn matches(&self, c: &ChildRecord) -> bool {
        let text = |k: &str| c.doc.get(k).and_then(Value::as_str).unwrap_or_default();
        let contains = |k: &str, needle: &Option<String>| {
            needle
                .as_ref()
                .is_none_or(|n| text(k).to_lowercase().contains(n.as_str()))
        };
        // Stored severity/priority/status are normalized on write; normalizing again also matches
        // values written before normalization applied to them.
        let one_of = |k: &str, wanted: &[String]| {
            wanted.is_empty() || wanted.contains(&crate::input::normalize_enum(text(k)))
        };
        let same_id =
            |k: &str, want: &Option<String>| want.as_ref().is_none_or(|w| text(k).eq_ignore_ascii_case(w));
        let types_match = self.threat_types.is_empty()
            || c.doc
                .get("threat_type")
                .and_then(Value::as_array)
                .is_some_and(|types| {
                    types
                        .iter()
                        .filter_map(Value::as_str)
                        .any(|t| self.threat_types.contains(&t.to_lowercase()))
                });
        let score = c.doc.get("score").and_then(Value::as_f64);
        let scores_match = self
            .score
            .iter()
            .all(|(cmp, bound)| score.is_some_and(|s| cmp.holds(s, *bound)));
        let mitigated = c.doc.get("mitigated").and_then(Value::as_bool).unwrap_or(false);
        contains("name", &self.name)
            && contains("description", &self.description)
            && types_match
            && one_of("severity", &self.severities)
            && one_of("priority", &self.priorities)
            && one_of("status", &self.statuses)
            && self.mitigated.is_none_or(|m| m == mitigated)
            && same_id("diagram_id", &self.diagram_id)
            && same_id("cell_id", &self.cell_id)
            && scores_match
            && self.created_after.is_none_or(|t| c.created_at > t)
            && self.created_before.is_none_or(|t| c.created_at < t)
            && self.modified_after.is_none_or(|t| c.modified_at > t)
            && self.modified_before.is_none_or(|t| c.modified_at < t)
    }

    /// Filters and orders `rows` (ties keep creation order).
    pub fn apply(&self, mut rows: Vec<ChildRecord>) -> Vec<ChildRecord> {
        rows.retain(|c| self.matches(c));
        let (field, descending) = (&self.sort.0, self.sort.1);
        let key = |c: &ChildRecord| -> (String, i64) {
            match field.as_str() {
                "created_at" => (String::new(), c.created_at.timestamp_micros()),
                "modified_at" => (String::new(), c.modified_at.timestamp_micros()),
                "score" => (
                    String::new(),
                    (c.doc.get("score").and_then(Value::as_f64).unwrap_or(-1.0) * 10.0).round() as i64,
                ),
                other => (
                    c.doc
                        .get(other)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_lowercase(),
                    c.created_at.timestamp_micros(),
                ),
            }
        };
        rows.sort_by_key(key);
        if descending {
            rows.reverse();
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn threat(n: i64, doc: Value) -> ChildRecord {
        let at = DateTime::from_timestamp(1_700_000_000 + n, 0).unwrap_or_default();
        ChildRecord {
            id: uuid::Uuid::new_v4(),
            threat_model_id: uuid::Uuid::nil(),
            kind: "threat".into(),
            alias: n,
            version: 1,
            created_at: at,
            modified_at: at,
            deleted_at: None,
            doc,
        }
    }

    fn names(f: &Filter, rows: &[ChildRecord]) -> Vec<String> {
        f.apply(rows.to_vec())
            .iter()
            .map(|c| c.doc["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    fn parse(q: &str) -> Filter {
        Filter::parse("threat", &Params::parse(Some(q))).unwrap()
    }

    #[test]
    fn threat_filters() {
        let rows = vec![
            threat(
                1,
                json!({"name": "Spoof login", "description": "Weak MFA", "threat_type": ["Spoofing"],
                "severity": "high", "priority": "p1", "status": "open", "score": 9.1, "mitigated": true}),
            ),
            threat(
                2,
                json!({"name": "Tamper", "threat_type": ["Tampering", "Repudiation"],
                "severity": "low", "status": "in_progress", "score": 2.0,
                "diagram_id": "6F1C3A0E-0000-4000-8000-000000000001"}),
            ),
            threat(3, json!({"name": "Other", "threat_type": []})),
        ];
        assert_eq!(names(&parse(""), &rows), ["Other", "Tamper", "Spoof login"]);
        assert_eq!(names(&parse("description=mfa"), &rows), ["Spoof login"]);
        assert_eq!(
            names(&parse("threat_type=spoofing&threat_type=Repudiation"), &rows),
            ["Tamper", "Spoof login"]
        );
        assert_eq!(
            names(&parse("severity=High,low&sort=name:asc"), &rows),
            ["Spoof login", "Tamper"]
        );
        assert_eq!(names(&parse("status=In%20Progress"), &rows), ["Tamper"]);
        assert_eq!(names(&parse("priority=P1"), &rows), ["Spoof login"]);
        assert_eq!(names(&parse("mitigated=false"), &rows), ["Other", "Tamper"]);
        assert_eq!(
            names(&parse("diagram_id=6f1c3a0e-0000-4000-8000-000000000001"), &rows),
            ["Tamper"]
        );
        assert_eq!(names(&parse("score_ge=2&score_lt=9.1"), &rows), ["Tamper"]);
        assert_eq!(names(&parse("score_eq=9.1"), &rows), ["Spoof login"]);
        assert_eq!(
            names(&parse("sort=score:desc"), &rows),
            ["Spoof login", "Tamper", "Other"]
        );
        assert!(Filter::parse("threat", &Params::parse(Some("sort=name:sideways"))).is_err());
        assert!(Filter::parse("threat", &Params::parse(Some("mitigated=maybe"))).is_err());
    }

    #[test]
    fn other_kinds_ignore_threat_filters() {
        let rows = vec![threat(1, json!({"name": "A"})), threat(2, json!({"name": "B"}))];
        let f = Filter::parse("note", &Params::parse(Some("severity=high&name=b"))).unwrap();
        assert_eq!(names(&f, &rows), ["B"]);
        let f = Filter::parse("note", &Params::parse(None)).unwrap();
        assert_eq!(names(&f, &rows), ["A", "B"], "oldest first");
    }
}
