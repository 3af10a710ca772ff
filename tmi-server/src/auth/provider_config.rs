//! External OAuth 2.0 / OpenID Connect providers from TMI's variables (tmi-compat.md §4.3):
//! `OAUTH_PROVIDERS_<ID>_*`, read exactly as upstream reads them, and validated the way upstream's
//! startup validation does, so that a misconfigured provider stops startup with a message naming the
//! variable (never a secret's value). Pure: parses a map of variables.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use secrecy::SecretString;
use url::Url;

use crate::config::ConfigError;

/// The claim kinds a mapping may name (`…_CLAIMS_<CLAIM>`, lower-cased), as upstream's
/// `auth/claim_extractor.go` knows them.
pub const CLAIM_KINDS: [&str; 8] = [
    "subject_claim",
    "email_claim",
    "name_claim",
    "given_name_claim",
    "family_name_claim",
    "picture_claim",
    "email_verified_claim",
    "groups_claim",
];

/// One userinfo endpoint and the claim mappings that read its answer (`claim kind → path`, with
/// upstream's path syntax: `email`, `user.email`, `[0].email`, `[*].name`).
#[derive(Debug, Clone, PartialEq)]
pub struct UserinfoEndpoint {
    pub url: String,
    pub claims: BTreeMap<String, String>,
}

/// An enabled external provider.
#[derive(Clone)]
pub struct OAuthProviderConfig {
    /// The provider id clients use (`idp=`): `<ID>` lower-cased, `_` → `-` (`AZURE_AD` → `azure-ad`).
    pub id: String,
    /// `<ID>` as written in the variable names, for messages.
    pub env_id: String,
    pub name: String,
    pub icon: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub authorization_url: Option<String>,
    pub token_url: Option<String>,
    /// Set for OpenID Connect providers: discovery, `nonce` and id_token verification.
    pub issuer: Option<String>,
    pub jwks_url: Option<String>,
    pub scopes: Vec<String>,
    /// Primary, secondary and additional userinfo endpoints, in that order.
    pub userinfo: Vec<UserinfoEndpoint>,
    /// Extra authorization-request parameters (`ADDITIONAL_PARAMS_<PARAM>`, name lower-cased).
    pub additional_params: Vec<(String, String)>,
    /// `Authorization` header for userinfo calls; `%s` is the access token. Default `Bearer %s`.
    pub auth_header_format: String,
    /// `Accept` header for userinfo calls. Default `application/json`.
    pub accept_header: String,
}

impl OAuthProviderConfig {
    /// An OpenID Connect provider (issuer configured): its identity comes from a verified id_token.
    pub fn is_oidc(&self) -> bool {
        self.issuer.is_some()
    }

    /// The name of one of this provider's variables, for messages.
    pub fn var(&self, suffix: &str) -> String {
        format!("OAUTH_PROVIDERS_{}_{suffix}", self.env_id)
    }
}

impl fmt::Debug for OAuthProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthProviderConfig")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[REDACTED]")
            .field("authorization_url", &self.authorization_url)
            .field("token_url", &self.token_url)
            .field("issuer", &self.issuer)
            .field("jwks_url", &self.jwks_url)
            .field("scopes", &self.scopes)
            .field("userinfo", &self.userinfo)
            .finish_non_exhaustive()
    }
}

const PREFIX: &str = "OAUTH_PROVIDERS_";

fn invalid(var: String, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        reason: reason.into(),
    }
}

fn get(vars: &HashMap<String, String>, var: &str) -> Option<String> {
    vars.get(var)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Whether an http(s) URL may be used for calls that carry the client secret, codes and tokens:
/// https, or plain http to a loopback address (a provider on the same machine, as in tests).
fn check_url(var: String, value: &str) -> Result<String, ConfigError> {
    let url = Url::parse(value).map_err(|_| invalid(var.clone(), "expected an absolute http(s) URL"))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" => Ok(value.to_owned()),
        "http" if loopback => Ok(value.to_owned()),
        "http" => Err(invalid(
            var,
            "expected an https URL (plain http is accepted only for loopback addresses: the client secret, \
             codes and tokens travel on these calls)",
        )),
        _ => Err(invalid(var, "expected an absolute http(s) URL")),
    }
}

/// `<PREFIX>CLAIMS_<CLAIM>` mappings; an unknown claim kind is an error naming the variable.
fn claims(vars: &HashMap<String, String>, prefix: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for (k, v) in vars {
        let Some(kind) = k.strip_prefix(prefix) else {
            continue;
        };
        let value = v.trim();
        if value.is_empty() {
            continue;
        }
        let kind = kind.to_ascii_lowercase();
        if !CLAIM_KINDS.contains(&kind.as_str()) {
            return Err(invalid(
                k.clone(),
                format!(
                    "unknown claim mapping; expected one of {}",
                    CLAIM_KINDS.join(", ")
                ),
            ));
        }
        out.insert(kind, value.to_owned());
    }
    Ok(out)
}

/// Every enabled provider except the built-in `tmi` one (configured in `config.rs`), sorted by id.
pub fn parse(vars: &HashMap<String, String>) -> Result<Vec<OAuthProviderConfig>, ConfigError> {
    let mut ids: Vec<String> = vars
        .keys()
        .filter_map(|k| k.strip_prefix(PREFIX)?.strip_suffix("_ENABLED"))
        .filter(|id| !id.is_empty() && *id != "TMI")
        // `…_USERINFO_CLAIMS_X_ENABLED` is not a provider.
        .filter(|id| !id.contains("_CLAIMS_") && !id.contains("_ADDITIONAL_PARAMS_"))
        .map(str::to_owned)
        .collect();
    ids.sort();
    let mut out = Vec::new();
    for env_id in ids {
        let p = format!("{PREFIX}{env_id}_");
        let enabled_var = format!("{p}ENABLED");
        let enabled = match vars
            .get(&enabled_var)
            .map(|s| s.trim().to_ascii_lowercase())
            .as_deref()
        {
            Some("true" | "1" | "yes" | "on") => true,
            Some("false" | "0" | "no" | "off" | "") | None => false,
            Some(_) => return Err(invalid(enabled_var, "expected true or false")),
        };
        if !enabled {
            continue;
        }
        if !env_id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(invalid(
                enabled_var,
                "the provider id between OAUTH_PROVIDERS_ and _ENABLED must be upper-case letters, digits and _",
            ));
        }
        out.push(provider(vars, &env_id, &p)?);
    }
    Ok(out)
}

fn provider(
    vars: &HashMap<String, String>,
    env_id: &str,
    p: &str,
) -> Result<OAuthProviderConfig, ConfigError> {
    let id = env_id.to_ascii_lowercase().replace('_', "-");
    let var = |s: &str| format!("{p}{s}");
    let url = |s: &str| -> Result<Option<String>, ConfigError> {
        get(vars, &var(s))
            .map(|v| check_url(var(s), v.trim_end_matches('/')))
            .transpose()
    };
    let client_id = get(vars, &var("CLIENT_ID")).ok_or_else(|| invalid(var("CLIENT_ID"), "required"))?;
    let client_secret = get(vars, &var("CLIENT_SECRET"))
        .map(SecretString::from)
        .ok_or_else(|| invalid(var("CLIENT_SECRET"), "required"))?;
    let issuer = url("ISSUER")?;
    let authorization_url = url("AUTHORIZATION_URL")?;
    let token_url = url("TOKEN_URL")?;
    let jwks_url = url("JWKS_URL")?;
    let mut userinfo = Vec::new();
    for (url_var, claims_prefix) in [
        ("USERINFO_URL", "USERINFO_CLAIMS_"),
        ("USERINFO_SECONDARY_URL", "USERINFO_SECONDARY_CLAIMS_"),
        ("USERINFO_ADDITIONAL_URL", "USERINFO_ADDITIONAL_CLAIMS_"),
    ] {
        let mapped = claims(vars, &var(claims_prefix))?;
        match url(url_var)? {
            Some(u) => userinfo.push(UserinfoEndpoint {
                url: u,
                claims: mapped,
            }),
            None if !mapped.is_empty() => {
                return Err(invalid(
                    var(url_var),
                    format!("required: {}* mappings are set for it", var(claims_prefix)),
                ));
            }
            None => {}
        }
    }
    if issuer.is_none() {
        // A plain OAuth 2.0 provider (GitHub style): every endpoint is explicit and the subject
        // mapping too (upstream's provider_classifier: no default `sub` for a non-OIDC answer).
        for (v, present) in [
            ("AUTHORIZATION_URL", authorization_url.is_some()),
            ("TOKEN_URL", token_url.is_some()),
            ("USERINFO_URL", !userinfo.is_empty()),
        ] {
            if !present {
                return Err(invalid(
                    var(v),
                    "required for a provider without ISSUER (a plain OAuth 2.0 provider); \
                     set ISSUER instead for an OpenID Connect provider",
                ));
            }
        }
        if !userinfo.iter().any(|e| e.claims.contains_key("subject_claim")) {
            return Err(invalid(
                var("USERINFO_CLAIMS_SUBJECT_CLAIM"),
                "required for a provider without ISSUER: name the field of the userinfo answer that \
                 identifies the user (for example id for GitHub)",
            ));
        }
    }
    // With ISSUER, missing endpoints (authorization, token, JWKS, userinfo) come from discovery.
    let scopes: Vec<String> = get(vars, &var("SCOPES"))
        .map(|s| {
            s.split([',', ' '])
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_else(|| {
            if issuer.is_some() {
                vec!["openid".into(), "profile".into(), "email".into()]
            } else {
                Vec::new()
            }
        });
    if issuer.is_some() && !scopes.iter().any(|s| s == "openid") {
        return Err(invalid(
            var("SCOPES"),
            "an OpenID Connect provider (ISSUER set) needs the openid scope",
        ));
    }
    let mut additional_params: Vec<(String, String)> = vars
        .iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix(&var("ADDITIONAL_PARAMS_"))?;
            let v = v.trim();
            (!name.is_empty() && !v.is_empty()).then(|| (name.to_ascii_lowercase(), v.to_owned()))
        })
        .collect();
    additional_params.sort();
    for (name, _) in &additional_params {
        if RESERVED_PARAMS.contains(&name.as_str()) {
            return Err(invalid(
                var(&format!("ADDITIONAL_PARAMS_{}", name.to_ascii_uppercase())),
                "this parameter is set by the server itself",
            ));
        }
    }
    let auth_header_format = get(vars, &var("AUTH_HEADER_FORMAT")).unwrap_or_else(|| "Bearer %s".into());
    if auth_header_format.matches("%s").count() != 1 {
        return Err(invalid(
            var("AUTH_HEADER_FORMAT"),
            "expected exactly one %s (the access token), e.g. \"Bearer %s\" or \"token %s\"",
        ));
    }
    Ok(OAuthProviderConfig {
        name: get(vars, &var("NAME")).unwrap_or_else(|| id.clone()),
        icon: get(vars, &var("ICON")).unwrap_or_else(|| id.clone()),
        id,
        env_id: env_id.to_owned(),
        client_id,
        client_secret,
        authorization_url,
        token_url,
        issuer,
        jwks_url,
        scopes,
        userinfo,
        additional_params,
        auth_header_format,
        accept_header: get(vars, &var("ACCEPT_HEADER")).unwrap_or_else(|| "application/json".into()),
    })
}

/// Authorization-request parameters the server sets; `ADDITIONAL_PARAMS_*` cannot override them.
const RESERVED_PARAMS: [&str; 9] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "client_secret",
];

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn github_style_provider_reads_every_variable() {
        let p = "OAUTH_PROVIDERS_GITHUB_";
        let v = vars(&[
            (&format!("{p}ENABLED"), "true"),
            (&format!("{p}NAME"), "GitHub"),
            (&format!("{p}ICON"), "fa-brands fa-github"),
            (&format!("{p}CLIENT_ID"), "cid"),
            (&format!("{p}CLIENT_SECRET"), "s3cret"),
            (
                &format!("{p}AUTHORIZATION_URL"),
                "https://github.com/login/oauth/authorize",
            ),
            (
                &format!("{p}TOKEN_URL"),
                "https://github.com/login/oauth/access_token",
            ),
            (&format!("{p}USERINFO_URL"), "https://api.github.com/user"),
            (&format!("{p}USERINFO_CLAIMS_SUBJECT_CLAIM"), "id"),
            (&format!("{p}USERINFO_CLAIMS_NAME_CLAIM"), "name"),
            (
                &format!("{p}USERINFO_SECONDARY_URL"),
                "https://api.github.com/user/emails",
            ),
            (&format!("{p}USERINFO_SECONDARY_CLAIMS_EMAIL_CLAIM"), "[0].email"),
            (&format!("{p}SCOPES"), "read:user,user:email"),
            (&format!("{p}ADDITIONAL_PARAMS_ALLOW_SIGNUP"), "false"),
            (&format!("{p}AUTH_HEADER_FORMAT"), "token %s"),
            (&format!("{p}ACCEPT_HEADER"), "application/vnd.github+json"),
        ]);
        let list = parse(&v).unwrap();
        assert_eq!(list.len(), 1);
        let g = &list[0];
        assert_eq!((g.id.as_str(), g.name.as_str()), ("github", "GitHub"));
        assert_eq!(g.client_secret.expose_secret(), "s3cret");
        assert!(!g.is_oidc());
        assert_eq!(g.userinfo.len(), 2);
        assert_eq!(g.userinfo[1].claims["email_claim"], "[0].email");
        assert_eq!(g.scopes, ["read:user", "user:email"]);
        assert_eq!(
            g.additional_params,
            [("allow_signup".to_owned(), "false".to_owned())]
        );
        assert_eq!(g.auth_header_format, "token %s");
        assert!(!format!("{g:?}").contains("s3cret"));
    }

    #[test]
    fn ids_map_to_keys_and_disabled_providers_are_skipped() {
        let v = vars(&[
            ("OAUTH_PROVIDERS_AZURE_AD_ENABLED", "true"),
            ("OAUTH_PROVIDERS_AZURE_AD_CLIENT_ID", "c"),
            ("OAUTH_PROVIDERS_AZURE_AD_CLIENT_SECRET", "s"),
            (
                "OAUTH_PROVIDERS_AZURE_AD_ISSUER",
                "https://login.microsoftonline.com/t/v2.0/",
            ),
            ("OAUTH_PROVIDERS_OFF_ENABLED", "false"),
            ("OAUTH_PROVIDERS_TMI_ENABLED", "true"),
        ]);
        let list = parse(&v).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].id, "azure-ad");
        assert_eq!(list[0].name, "azure-ad");
        assert_eq!(
            list[0].issuer.as_deref(),
            Some("https://login.microsoftonline.com/t/v2.0")
        );
        assert_eq!(list[0].scopes, ["openid", "profile", "email"]);
    }

    #[test]
    fn misconfigurations_name_the_variable_and_never_the_secret() {
        let base = [
            ("OAUTH_PROVIDERS_X_ENABLED", "true"),
            ("OAUTH_PROVIDERS_X_CLIENT_ID", "c"),
            ("OAUTH_PROVIDERS_X_CLIENT_SECRET", "hunter2"),
        ];
        let case = |extra: &[(&str, &str)]| {
            let mut v = vars(&base);
            v.extend(vars(extra));
            parse(&v).unwrap_err()
        };
        let e = case(&[]);
        assert_eq!(e.var, "OAUTH_PROVIDERS_X_AUTHORIZATION_URL");
        let e = case(&[
            ("OAUTH_PROVIDERS_X_AUTHORIZATION_URL", "https://idp/a"),
            ("OAUTH_PROVIDERS_X_TOKEN_URL", "https://idp/t"),
            ("OAUTH_PROVIDERS_X_USERINFO_URL", "https://idp/u"),
        ]);
        assert_eq!(e.var, "OAUTH_PROVIDERS_X_USERINFO_CLAIMS_SUBJECT_CLAIM");
        let e = case(&[("OAUTH_PROVIDERS_X_ISSUER", "http://idp.example/realms/x")]);
        assert_eq!(e.var, "OAUTH_PROVIDERS_X_ISSUER");
        assert!(e.reason.contains("https"));
        let e = case(&[("OAUTH_PROVIDERS_X_ISSUER", "not a url")]);
        assert_eq!(e.var, "OAUTH_PROVIDERS_X_ISSUER");
        let e = case(&[
            ("OAUTH_PROVIDERS_X_ISSUER", "https://idp/x"),
            ("OAUTH_PROVIDERS_X_USERINFO_CLAIMS_SHOE_SIZE", "s"),
        ]);
        assert_eq!(e.var, "OAUTH_PROVIDERS_X_USERINFO_CLAIMS_SHOE_SIZE");
        let e = case(&[
            ("OAUTH_PROVIDERS_X_ISSUER", "https://idp/x"),
            (
                "OAUTH_PROVIDERS_X_ADDITIONAL_PARAMS_REDIRECT_URI",
                "https://evil/",
            ),
        ]);
        assert_eq!(e.var, "OAUTH_PROVIDERS_X_ADDITIONAL_PARAMS_REDIRECT_URI");
        let e = case(&[
            ("OAUTH_PROVIDERS_X_ISSUER", "https://idp/x"),
            ("OAUTH_PROVIDERS_X_SCOPES", "email"),
        ]);
        assert_eq!(e.var, "OAUTH_PROVIDERS_X_SCOPES");
        let mut v = vars(&base);
        v.remove("OAUTH_PROVIDERS_X_CLIENT_SECRET");
        assert_eq!(parse(&v).unwrap_err().var, "OAUTH_PROVIDERS_X_CLIENT_SECRET");
        let mut v = vars(&base);
        v.insert("OAUTH_PROVIDERS_X_ISSUER".into(), "https://idp/x".into());
        v.insert("OAUTH_PROVIDERS_X_ENABLED".into(), "maybe".into());
        assert_eq!(parse(&v).unwrap_err().var, "OAUTH_PROVIDERS_X_ENABLED");
        for e in [
            case(&[]),
            case(&[("OAUTH_PROVIDERS_X_ISSUER", "http://10.0.0.1/")]),
        ] {
            assert!(!e.to_string().contains("hunter2"));
        }
    }

    #[test]
    fn loopback_http_is_allowed_for_local_providers() {
        let v = vars(&[
            ("OAUTH_PROVIDERS_KC_ENABLED", "true"),
            ("OAUTH_PROVIDERS_KC_CLIENT_ID", "c"),
            ("OAUTH_PROVIDERS_KC_CLIENT_SECRET", "s"),
            ("OAUTH_PROVIDERS_KC_ISSUER", "http://127.0.0.1:8081/realms/tmi"),
        ]);
        assert_eq!(
            parse(&v).unwrap()[0].issuer.as_deref(),
            Some("http://127.0.0.1:8081/realms/tmi")
        );
    }
}
