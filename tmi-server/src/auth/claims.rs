//! Reading an identity out of a provider's answers (id_token claims, userinfo documents) through
//! upstream's claim mappings (`auth/claim_extractor.go`): a path per claim kind (`email`,
//! `user.email`, `[0].email`, `[*].name`), literals `true`/`false`, defaults for unmapped kinds.
//! Pure.

use std::collections::BTreeMap;

use serde_json::Value;

/// Upstream's default field for each claim kind.
pub fn default_path(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "subject_claim" => "sub",
        "email_claim" => "email",
        "name_claim" => "name",
        "given_name_claim" => "given_name",
        "family_name_claim" => "family_name",
        "picture_claim" => "picture",
        "email_verified_claim" => "email_verified",
        "groups_claim" => "groups",
        _ => return None,
    })
}

/// The value at `path` in `data`, if any.
pub fn extract(data: &Value, path: &str) -> Option<Value> {
    match path {
        "true" => return Some(Value::Bool(true)),
        "false" => return Some(Value::Bool(false)),
        _ => {}
    }
    if let Ok(n) = path.parse::<f64>() {
        return serde_json::Number::from_f64(n).map(Value::Number);
    }
    let parts: Vec<&str> = path.split('.').filter(|p| !p.is_empty()).collect();
    walk(data, &parts)
}

fn walk(current: &Value, parts: &[&str]) -> Option<Value> {
    let Some((part, rest)) = parts.split_first() else {
        return Some(current.clone());
    };
    if let Some(index) = part.strip_prefix('[').and_then(|p| p.strip_suffix(']')) {
        let arr = current.as_array()?;
        if index == "*" {
            return Some(Value::Array(
                arr.iter().filter_map(|item| walk(item, rest)).collect(),
            ));
        }
        let i: usize = index.parse().ok()?;
        return walk(arr.get(i)?, rest);
    }
    walk(current.as_object()?.get(*part)?, rest)
}

fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(match n.as_i64() {
            Some(i) => i.to_string(),
            None => n.to_string(),
        }),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
    .filter(|s| !s.is_empty())
}

fn as_bool(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::String(s) => matches!(s.as_str(), "true" | "1" | "yes"),
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        _ => false,
    }
}

fn as_groups(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().filter_map(as_string).collect(),
        Value::String(s) => s
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(str::to_owned)
            .collect(),
        Value::Null => Vec::new(),
        other => as_string(other).into_iter().collect(),
    }
}

/// What the answers said about the user so far. The first answer to set a field wins, as upstream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claims {
    pub subject: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub picture: Option<String>,
    pub email_verified: Option<bool>,
    pub groups: Option<Vec<String>>,
}

impl Claims {
    /// Reads `data` with `mappings`; kinds without a mapping use the default field when `data`
    /// has it (`defaults`), except the subject unless `subject_default` (a plain OAuth answer's
    /// `sub` is not known to identify anyone; an id_token's subject is set by the caller).
    pub fn read(
        &mut self,
        data: &Value,
        mappings: &BTreeMap<String, String>,
        defaults: bool,
        subject_default: bool,
    ) {
        for kind in super::provider_config::CLAIM_KINDS {
            let path = match mappings.get(kind) {
                Some(p) => p.as_str(),
                None if kind == "subject_claim" && !subject_default => continue,
                None if defaults => match default_path(kind) {
                    Some(p) => p,
                    None => continue,
                },
                None => continue,
            };
            let Some(value) = extract(data, path) else {
                continue;
            };
            self.set(kind, &value);
        }
    }

    fn set(&mut self, kind: &str, value: &Value) {
        fn first(slot: &mut Option<String>, v: Option<String>) {
            if slot.is_none() {
                *slot = v;
            }
        }
        match kind {
            "subject_claim" => first(&mut self.subject, as_string(value)),
            "email_claim" => first(&mut self.email, as_string(value)),
            "name_claim" => first(&mut self.name, as_string(value)),
            "given_name_claim" => first(&mut self.given_name, as_string(value)),
            "family_name_claim" => first(&mut self.family_name, as_string(value)),
            "picture_claim" => first(&mut self.picture, as_string(value)),
            "email_verified_claim" if self.email_verified.is_none() => {
                self.email_verified = Some(as_bool(value));
            }
            "groups_claim" if self.groups.is_none() => {
                self.groups = Some(as_groups(value));
            }
            _ => {}
        }
    }

    /// The display name: `name`, else given and family names, else the email.
    pub fn display_name(&self) -> Option<String> {
        if let Some(n) = &self.name {
            return Some(n.clone());
        }
        let parts: Vec<&str> = [&self.given_name, &self.family_name]
            .into_iter()
            .filter_map(|p| p.as_deref())
            .collect();
        if !parts.is_empty() {
            return Some(parts.join(" "));
        }
        self.email.clone()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn paths() {
        let d = json!({"user": {"email": "a@x"}, "emails": [{"email": "p@x"}, {"email": "q@x"}], "id": 42});
        assert_eq!(extract(&d, "user.email"), Some(json!("a@x")));
        assert_eq!(extract(&d, "emails.[1].email"), Some(json!("q@x")));
        assert_eq!(extract(&d, "emails.[*].email"), Some(json!(["p@x", "q@x"])));
        assert_eq!(
            extract(&json!([{"email": "first@x"}]), "[0].email"),
            Some(json!("first@x"))
        );
        assert_eq!(extract(&d, "missing"), None);
        assert_eq!(extract(&d, "emails.[5].email"), None);
        assert_eq!(extract(&d, "true"), Some(json!(true)));
    }

    #[test]
    fn github_user_and_emails() {
        // GitHub's /user (numeric id, no public email) and /user/emails answers.
        let user = json!({"login": "octocat", "id": 583231, "name": "The Octocat", "email": null});
        let emails = json!([{"email": "octocat@github.example", "primary": true, "verified": true}]);
        let mut c = Claims::default();
        c.read(
            &user,
            &map(&[("subject_claim", "id"), ("name_claim", "name")]),
            true,
            false,
        );
        c.read(
            &emails,
            &map(&[
                ("email_claim", "[0].email"),
                ("email_verified_claim", "[0].verified"),
            ]),
            false,
            false,
        );
        assert_eq!(c.subject.as_deref(), Some("583231"));
        assert_eq!(c.email.as_deref(), Some("octocat@github.example"));
        assert_eq!(c.email_verified, Some(true));
        assert_eq!(c.display_name().as_deref(), Some("The Octocat"));
    }

    #[test]
    fn first_answer_wins_and_groups_take_every_shape() {
        let mut c = Claims::default();
        c.read(
            &json!({"sub": "1", "groups": "a, b"}),
            &BTreeMap::new(),
            true,
            true,
        );
        c.read(
            &json!({"sub": "2", "groups": ["z"]}),
            &BTreeMap::new(),
            true,
            true,
        );
        assert_eq!(c.subject.as_deref(), Some("1"));
        assert_eq!(c.groups, Some(vec!["a".to_owned(), "b".to_owned()]));
        let mut c = Claims::default();
        c.read(
            &json!({"roles": ["r1", 7], "sub": "x"}),
            &map(&[("groups_claim", "roles")]),
            true,
            false,
        );
        assert_eq!(c.groups, Some(vec!["r1".to_owned(), "7".to_owned()]));
        assert_eq!(c.subject, None);
        let c = Claims {
            given_name: Some("Alice".into()),
            family_name: Some("Liddell".into()),
            ..Claims::default()
        };
        assert_eq!(c.display_name().as_deref(), Some("Alice Liddell"));
    }
}
