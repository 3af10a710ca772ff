//! Threat-model roles (tmi-compat.md §3): the effective role of a caller from the owner and the
//! ACL entries for users, groups and the `everyone` pseudo-group. Pure.

use crate::openapi::Ownership;
use crate::store::ThreatModelRecord;

/// `reader < writer < owner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Reader,
    Writer,
    Owner,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "reader" => Some(Self::Reader),
            "writer" => Some(Self::Writer),
            "owner" => Some(Self::Owner),
            _ => None,
        }
    }

    /// Whether this role satisfies an operation's `x-tmi-authz.ownership`.
    pub fn satisfies(self, needed: Ownership) -> bool {
        match needed {
            Ownership::None | Ownership::Reader => true,
            Ownership::Writer => self >= Role::Writer,
            Ownership::Owner => self == Role::Owner,
        }
    }
}

/// The caller's identity as far as ACL matching goes.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    pub provider: &'a str,
    pub provider_id: &'a str,
    pub email: &'a str,
    pub groups: &'a [String],
}

/// The highest role `who` holds on `tm`, if any.
pub fn effective_role(tm: &ThreatModelRecord, who: &Subject<'_>) -> Option<Role> {
    let mut best = None;
    if tm.owner_provider == who.provider && tm.owner_provider_id == who.provider_id {
        return Some(Role::Owner);
    }
    for a in &tm.access {
        let matches = match a.principal_type.as_str() {
            // Identity match; an entry written by email before the user's first login also matches.
            "user" => {
                a.provider == who.provider
                    && (a.provider_id == who.provider_id || a.provider_id.eq_ignore_ascii_case(who.email))
            }
            "group" => {
                a.provider_id == "everyone"
                    || ((a.provider == "tmi" || a.provider == who.provider)
                        && who.groups.contains(&a.provider_id))
            }
            _ => false,
        };
        if matches {
            let r = Role::parse(&a.role);
            if r > best {
                best = r;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AccessRecord;

    fn tm(access: &[(&str, &str, &str, &str)]) -> ThreatModelRecord {
        ThreatModelRecord {
            id: uuid::Uuid::nil(),
            alias: 1,
            name: "t".into(),
            owner_provider: "tmi".into(),
            owner_provider_id: "alice".into(),
            owner_email: "alice@tmi.local".into(),
            reviewer_email: None,
            status: "not_started".into(),
            version: 1,
            created_at: chrono::Utc::now(),
            modified_at: chrono::Utc::now(),
            deleted_at: None,
            doc: serde_json::json!({}),
            access: access
                .iter()
                .map(|(t, p, id, r)| AccessRecord {
                    principal_type: t.to_string(),
                    provider: p.to_string(),
                    provider_id: id.to_string(),
                    role: r.to_string(),
                })
                .collect(),
        }
    }

    fn who<'a>(id: &'a str, groups: &'a [String]) -> Subject<'a> {
        Subject {
            provider: "tmi",
            provider_id: id,
            email: "x@tmi.local",
            groups,
        }
    }

    #[test]
    fn roles() {
        let none: Vec<String> = vec![];
        let reviewers = vec!["security-reviewers".to_string()];
        let t = tm(&[
            ("user", "tmi", "bob", "writer"),
            ("user", "tmi", "bob", "reader"),
            ("group", "tmi", "security-reviewers", "owner"),
            ("user", "google", "carol", "owner"),
        ]);
        assert_eq!(effective_role(&t, &who("alice", &none)), Some(Role::Owner));
        assert_eq!(
            effective_role(&t, &who("bob", &none)),
            Some(Role::Writer),
            "highest entry wins"
        );
        assert_eq!(effective_role(&t, &who("dave", &reviewers)), Some(Role::Owner));
        assert_eq!(
            effective_role(&t, &who("carol", &none)),
            None,
            "provider must match"
        );
        let open = tm(&[("group", "tmi", "everyone", "reader")]);
        assert_eq!(effective_role(&open, &who("zed", &none)), Some(Role::Reader));
        assert!(Role::Writer.satisfies(Ownership::Writer) && !Role::Writer.satisfies(Ownership::Owner));
        assert!(Role::Reader.satisfies(Ownership::Reader) && !Role::Reader.satisfies(Ownership::Writer));
    }
}
