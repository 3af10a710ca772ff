//! How the API writes times and principals: RFC 3339 with microseconds (as TMI), and the `User`
//! principal document. Pure.

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{Value, json};

/// Now, truncated to microseconds like TMI.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// RFC 3339 UTC with microseconds.
pub fn rfc3339(dt: &DateTime<Utc>) -> String {
    dt.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The longest `display_name` the `Principal` schema allows.
const DISPLAY_NAME_MAX: usize = 256;

/// A `User` principal: the display name falls back to the provider id (which may be up to 500
/// characters: cut to the schema's 256, without control characters), the email is left out when
/// unknown.
pub fn user_json(provider: &str, provider_id: &str, name: &str, email: &str) -> Value {
    let display: String = if name.is_empty() { provider_id } else { name }
        .chars()
        .filter(|c| !c.is_control())
        .take(DISPLAY_NAME_MAX)
        .collect();
    let mut u = json!({
        "principal_type": "user",
        "provider": provider,
        "provider_id": provider_id,
        "display_name": display,
    });
    if !email.is_empty() {
        u["email"] = json!(email);
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_microseconds() {
        let t = now();
        assert!(rfc3339(&t).ends_with('Z'));
        assert_eq!(rfc3339(&t).split('.').nth(1).map(|f| f.len()), Some(7));
    }

    #[test]
    fn a_user_without_a_name_shows_its_provider_id() {
        let u = user_json("tmi", "alice", "", "");
        assert_eq!(u["display_name"], "alice");
        assert!(u.get("email").is_none());
        assert_eq!(user_json("tmi", "alice", "Alice", "a@x")["email"], "a@x");
        let long = "0".repeat(500);
        assert_eq!(
            user_json("tmi", &long, "", "")["display_name"]
                .as_str()
                .map(str::len),
            Some(256),
            "within the Principal schema's maxLength"
        );
    }
}
