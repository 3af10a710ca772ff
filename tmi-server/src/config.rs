//! Configuration from TMI's own environment variable names (tmi-compat.md §6.2). Pure: parses a
//! map of variables; `Config::from_process_env` reads the process environment, and `main` resolves
//! the zero-configuration defaults that need the file system (`./data`).

use std::collections::HashMap;
use std::fmt;

use secrecy::SecretString;

/// An invalid variable: startup exits non-zero naming it.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}: {reason}")]
pub struct ConfigError {
    pub var: String,
    pub reason: String,
}

fn invalid(var: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        var: var.to_owned(),
        reason: reason.into(),
    }
}

/// The listen address without `TMI_SERVER_INTERFACE`.
pub const DEFAULT_INTERFACE: &str = "127.0.0.1";

/// `TMI_BUILD_MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildMode {
    Dev,
    Test,
    Production,
}

impl BuildMode {
    /// The `tmi` provider's code flow is only available in dev and test builds.
    pub fn is_dev_or_test(self) -> bool {
        matches!(self, Self::Dev | Self::Test)
    }
}

/// Where Redis is, when configured. The password stays secret.
#[derive(Clone)]
pub struct RedisConfig {
    pub host: String,
    pub port: u16,
    pub password: Option<SecretString>,
    pub db: i64,
    /// `TMI_REDIS_KEY_PREFIX`: prefix for every key, so that several TMI instances (or tests) can
    /// share one Redis.
    pub key_prefix: String,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("password", &self.password.as_ref().map(|_| "[REDACTED]"))
            .field("db", &self.db)
            .finish()
    }
}

impl RedisConfig {
    /// The URL for the redis client (contains the password: never log it).
    pub fn url(&self) -> String {
        use secrecy::ExposeSecret;
        let auth = match &self.password {
            Some(p) => format!(":{}@", urlencode(p.expose_secret())),
            None => String::new(),
        };
        format!("redis://{auth}{}:{}/{}", self.host, self.port, self.db)
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An administrator bootstrapped from `TMI_ADMIN_*`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminBootstrap {
    pub provider: String,
    pub provider_id: Option<String>,
    pub email: Option<String>,
    pub group_name: Option<String>,
    pub subject_type: String,
}

/// The server's whole configuration, validated.
#[derive(Clone)]
pub struct Config {
    /// `TMI_DATABASE_URL`; `None` means the zero-config SQLite database under `./data`.
    pub database_url: Option<SecretString>,
    pub db_max_connections: u32,
    pub redis: Option<RedisConfig>,
    /// `TMI_JWT_SECRET`; `None` means a generated secret kept in `./data/jwt-secret`.
    pub jwt_secret: Option<SecretString>,
    pub jwt_expiration_seconds: i64,
    pub refresh_token_days: i64,
    pub session_lifetime_days: i64,
    pub build_mode: BuildMode,
    pub port: u16,
    pub interface: String,
    pub base_url: Option<String>,
    pub cors_allowed_origins: Vec<String>,
    pub oauth_callback_url: String,
    pub client_callback_allowlist: Vec<String>,
    pub tmi_provider_enabled: bool,
    /// External OAuth 2.0 / OIDC providers (`OAUTH_PROVIDERS_<ID>_*`).
    pub oauth_providers: Vec<crate::auth::provider_config::OAuthProviderConfig>,
    /// `TMI_OAUTH_CA_FILE`: PEM certificates trusted, besides the public roots, for calls to
    /// identity providers (an IdP behind a private CA).
    pub oauth_ca_file: Option<String>,
    pub cookie_enabled: bool,
    pub cookie_domain: Option<String>,
    pub cookie_secure: bool,
    /// Path of the refresh cookie; `/` so that it also reaches `/api/oauth2/refresh` behind the
    /// web client's proxy (tmi-compat.md Part B §6.3).
    pub refresh_cookie_path: String,
    pub admins: Vec<AdminBootstrap>,
    pub auto_promote_first_user: bool,
    pub everyone_is_a_reviewer: bool,
    pub require_if_match: bool,
    pub log_level: String,
    pub operator_name: Option<String>,
    pub operator_contact: Option<String>,
    pub operator_jurisdiction: Option<String>,
    pub data_dir: String,
    /// `WEBSOCKET_ALLOWED_ORIGINS`: browser origins allowed to open collaboration sockets, besides
    /// localhost, the server's own host and the CORS origins.
    pub websocket_allowed_origins: Vec<String>,
    /// `TMI_WEBSOCKET_PING_INTERVAL_SECONDS` (30): keepalive period; access is re-checked on it.
    pub websocket_ping_interval_seconds: u64,
    /// `TMI_SHUTDOWN_DRAIN_SECONDS` (2): after SIGTERM, how long the server keeps answering on open
    /// connections, each response marked `Connection: close`, before it stops; a keep-alive client then
    /// moves to another replica without racing the close of an idle connection.
    pub shutdown_drain_seconds: u64,
    /// `TMI_WEBSOCKET_EMPTY_SESSION_SECONDS` (30, at least 5): how long a collaboration session
    /// may stay without connected participants before it ends (upstream: about 15 s; a little
    /// longer lets the clients of a replica that died reconnect elsewhere).
    pub websocket_empty_session_seconds: u64,
    /// `TMI_WEBSOCKET_MAX_CONNECTIONS_PER_USER` (5).
    pub websocket_max_connections_per_user: usize,
    /// `TMI_WEBSOCKET_MAX_PARTICIPANTS_PER_SESSION` (50).
    pub websocket_max_participants_per_session: usize,
    /// `TMI_WEBSOCKET_MAX_MESSAGES_PER_SECOND` (50): messages one socket may send per second on
    /// average (bursts of twice as many); a socket above it is closed with 1008.
    pub websocket_max_messages_per_second: u32,
    /// Request and connection limits (`TMI_SERVER_*`, `TMI_RATELIMIT_*`).
    pub limits: Limits,
}

/// Limits that keep one client from starving the others (docs/server.md, "Limits").
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// `TMI_DISABLE_RATE_LIMITING` (false): no 429s from the request rate limits.
    pub rate_limiting_disabled: bool,
    /// `TMI_RATELIMIT_PUBLIC_RPM` (600): requests per minute from one client address without a
    /// valid token (public endpoints, bad tokens).
    pub public_rpm: u32,
    /// `TMI_RATELIMIT_USER_RPM` (1000, upstream's per-user default): requests per minute with one
    /// user's tokens.
    pub user_rpm: u32,
    /// `TMI_TRUSTED_PROXIES`: addresses (CIDRs) of proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<(std::net::IpAddr, u8)>,
    /// `TMI_SERVER_READ_TIMEOUT` (10 s): how long a connection may take to send a request head,
    /// counted from when it opened or its previous response went out (so also its idle limit).
    pub read_timeout: std::time::Duration,
    /// `TMI_SERVER_BODY_TIMEOUT` (30 s): how long a request body may take to arrive.
    pub body_timeout: std::time::Duration,
    /// `TMI_SERVER_MAX_CONNECTIONS` (4096): open connections (WebSockets included); further
    /// clients wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            rate_limiting_disabled: false,
            public_rpm: 600,
            user_rpm: 1000,
            trusted_proxies: Vec::new(),
            read_timeout: std::time::Duration::from_secs(10),
            body_timeout: std::time::Duration::from_secs(30),
            max_connections: 4096,
        }
    }
}

/// A duration as upstream writes them (`5s`, `500ms`, `2m`, `1h`) or plain seconds.
fn parse_duration(
    vars: &HashMap<String, String>,
    var: &'static str,
    default: std::time::Duration,
) -> Result<std::time::Duration, ConfigError> {
    use std::time::Duration;
    let Some(s) = non_empty(vars, var) else {
        return Ok(default);
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| invalid(var, "expected a duration such as 10s or 2m"))?;
    let d = match unit.trim() {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(invalid(var, "expected a duration such as 10s or 2m")),
    };
    if d < Duration::from_millis(100) {
        return Err(invalid(var, "must be at least 100ms"));
    }
    Ok(d)
}

/// `TMI_TRUSTED_PROXIES`: comma-separated addresses or CIDRs.
fn parse_cidrs(
    vars: &HashMap<String, String>,
    var: &'static str,
) -> Result<Vec<(std::net::IpAddr, u8)>, ConfigError> {
    list(vars, var)
        .iter()
        .map(|item| {
            let (addr, len) = match item.split_once('/') {
                Some((a, l)) => (a, Some(l)),
                None => (item.as_str(), None),
            };
            let addr: std::net::IpAddr = addr
                .parse()
                .map_err(|_| invalid(var, "expected addresses or CIDRs, comma-separated"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let len = match len {
                None => max,
                Some(l) => l
                    .parse::<u8>()
                    .ok()
                    .filter(|l| *l <= max)
                    .ok_or_else(|| invalid(var, "invalid prefix length"))?,
            };
            Ok((addr, len))
        })
        .collect()
}

fn parse_limits(vars: &HashMap<String, String>) -> Result<Limits, ConfigError> {
    let d = Limits::default();
    let public_rpm: u32 = parse_num(vars, "TMI_RATELIMIT_PUBLIC_RPM", d.public_rpm)?;
    if public_rpm == 0 {
        return Err(invalid("TMI_RATELIMIT_PUBLIC_RPM", "must be at least 1"));
    }
    let user_rpm: u32 = parse_num(vars, "TMI_RATELIMIT_USER_RPM", d.user_rpm)?;
    if user_rpm == 0 {
        return Err(invalid("TMI_RATELIMIT_USER_RPM", "must be at least 1"));
    }
    let max_connections: usize = parse_num(vars, "TMI_SERVER_MAX_CONNECTIONS", d.max_connections)?;
    if max_connections == 0 {
        return Err(invalid("TMI_SERVER_MAX_CONNECTIONS", "must be at least 1"));
    }
    Ok(Limits {
        rate_limiting_disabled: parse_bool(vars, "TMI_DISABLE_RATE_LIMITING", false)?,
        public_rpm,
        user_rpm,
        trusted_proxies: parse_cidrs(vars, "TMI_TRUSTED_PROXIES")?,
        read_timeout: parse_duration(vars, "TMI_SERVER_READ_TIMEOUT", d.read_timeout)?,
        body_timeout: parse_duration(vars, "TMI_SERVER_BODY_TIMEOUT", d.body_timeout)?,
        max_connections,
    })
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &self.database_url.as_ref().map(|_| "[REDACTED]"))
            .field("redis", &self.redis)
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "[REDACTED]"))
            .field("build_mode", &self.build_mode)
            .field("port", &self.port)
            .field("interface", &self.interface)
            .field("cors_allowed_origins", &self.cors_allowed_origins)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn parse_bool(vars: &HashMap<String, String>, var: &'static str, default: bool) -> Result<bool, ConfigError> {
    match vars.get(var).map(|s| s.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(s) if s.is_empty() => Ok(default),
        Some(s) => match s.as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(invalid(var, "expected true or false")),
        },
    }
}

fn parse_num<T: std::str::FromStr>(
    vars: &HashMap<String, String>,
    var: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    match non_empty(vars, var) {
        None => Ok(default),
        Some(s) => s.trim().parse().map_err(|_| invalid(var, "expected a number")),
    }
}

fn non_empty(vars: &HashMap<String, String>, var: &str) -> Option<String> {
    vars.get(var)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn list(vars: &HashMap<String, String>, var: &str) -> Vec<String> {
    non_empty(vars, var)
        .map(|s| {
            s.split(',')
                .map(|x| x.trim().to_owned())
                .filter(|x| !x.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

fn parse_redis(vars: &HashMap<String, String>) -> Result<Option<RedisConfig>, ConfigError> {
    if let Some(url) = non_empty(vars, "TMI_REDIS_URL") {
        let rest = url
            .strip_prefix("redis://")
            .or_else(|| url.strip_prefix("rediss://"))
            .ok_or_else(|| invalid("TMI_REDIS_URL", "expected redis://[:password@]host:port[/db]"))?;
        let (auth, hostpart) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let (hostport, db) = match hostpart.split_once('/') {
            Some((hp, db)) if !db.is_empty() => (
                hp,
                db.parse::<i64>()
                    .map_err(|_| invalid("TMI_REDIS_URL", "database must be a number"))?,
            ),
            Some((hp, _)) => (hp, 0),
            None => (hostpart, 0),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h.to_owned(),
                p.parse()
                    .map_err(|_| invalid("TMI_REDIS_URL", "port must be a number"))?,
            ),
            None => (hostport.to_owned(), 6379),
        };
        if host.is_empty() {
            return Err(invalid("TMI_REDIS_URL", "missing host"));
        }
        let password = auth
            .map(|a| a.rsplit_once(':').map(|(_, p)| p).unwrap_or(a).to_owned())
            .filter(|p| !p.is_empty())
            .map(SecretString::from);
        return Ok(Some(RedisConfig {
            host,
            port,
            password,
            db,
            key_prefix: non_empty(vars, "TMI_REDIS_KEY_PREFIX").unwrap_or_default(),
        }));
    }
    let Some(host) = non_empty(vars, "TMI_REDIS_HOST") else {
        return Ok(None);
    };
    Ok(Some(RedisConfig {
        host,
        port: parse_num(vars, "TMI_REDIS_PORT", 6379)?,
        password: non_empty(vars, "TMI_REDIS_PASSWORD").map(SecretString::from),
        db: parse_num(vars, "TMI_REDIS_DB", 0)?,
        key_prefix: non_empty(vars, "TMI_REDIS_KEY_PREFIX").unwrap_or_default(),
    }))
}

impl Config {
    /// Reads the process environment.
    pub fn from_process_env() -> Result<Self, ConfigError> {
        Self::from_vars(&std::env::vars().collect())
    }

    /// Parses and validates a set of variables.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let build_mode = match non_empty(vars, "TMI_BUILD_MODE")
            .map(|s| s.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("dev") | Some("development") => BuildMode::Dev,
            Some("test") => BuildMode::Test,
            Some("production") | Some("prod") => BuildMode::Production,
            Some(_) => return Err(invalid("TMI_BUILD_MODE", "expected dev, test or production")),
        };
        let database_url = non_empty(vars, "TMI_DATABASE_URL");
        if let Some(url) = &database_url {
            let ok = ["postgres://", "postgresql://", "sqlite://", "sqlite:"]
                .iter()
                .any(|p| url.starts_with(p));
            if !ok {
                return Err(invalid(
                    "TMI_DATABASE_URL",
                    "expected a postgres:// or sqlite:// URL",
                ));
            }
        }
        let jwt_secret = non_empty(vars, "TMI_JWT_SECRET");
        if let Some(s) = &jwt_secret
            && s.len() < 16
        {
            return Err(invalid("TMI_JWT_SECRET", "must be at least 16 characters"));
        }
        match non_empty(vars, "TMI_JWT_SIGNING_METHOD").as_deref() {
            None | Some("HS256") => {}
            Some(_) => return Err(invalid("TMI_JWT_SIGNING_METHOD", "only HS256 is supported")),
        }
        let port = match non_empty(vars, "TMI_SERVER_PORT").or_else(|| non_empty(vars, "PORT")) {
            None => 8080,
            Some(p) => p
                .parse()
                .map_err(|_| invalid("TMI_SERVER_PORT", "expected a port number"))?,
        };
        let cors_allowed_origins = list(vars, "TMI_CORS_ALLOWED_ORIGINS");
        if cors_allowed_origins.iter().any(|o| o == "*") {
            return Err(invalid(
                "TMI_CORS_ALLOWED_ORIGINS",
                "`*` is not allowed with credentials; list the origins",
            ));
        }
        let base_url = non_empty(vars, "TMI_SERVER_BASE_URL").map(|s| s.trim_end_matches('/').to_owned());
        if let Some(b) = &base_url
            && !(b.starts_with("http://") || b.starts_with("https://"))
        {
            return Err(invalid("TMI_SERVER_BASE_URL", "expected an http(s) URL"));
        }
        let oauth_callback_url = non_empty(vars, "TMI_OAUTH_CALLBACK_URL")
            .unwrap_or_else(|| format!("http://localhost:{port}/oauth2/callback"));
        if !(oauth_callback_url.starts_with("http://") || oauth_callback_url.starts_with("https://")) {
            return Err(invalid("TMI_OAUTH_CALLBACK_URL", "expected an http(s) URL"));
        }
        let mut client_callback_allowlist = list(vars, "TMI_OAUTH_CLIENT_CALLBACK_ALLOWLIST");
        if client_callback_allowlist.is_empty() && build_mode.is_dev_or_test() {
            client_callback_allowlist = vec![
                "http://localhost:4200/*".into(),
                "http://localhost:8079/*".into(),
                "http://localhost:8079/".into(),
            ];
        }
        let tmi_provider_enabled =
            parse_bool(vars, "OAUTH_PROVIDERS_TMI_ENABLED", build_mode.is_dev_or_test())?;
        let mut admins = Vec::new();
        if let Some(provider) = non_empty(vars, "TMI_ADMIN_PROVIDER") {
            let subject_type = non_empty(vars, "TMI_ADMIN_SUBJECT_TYPE").unwrap_or_else(|| "user".into());
            if subject_type != "user" && subject_type != "group" {
                return Err(invalid("TMI_ADMIN_SUBJECT_TYPE", "expected user or group"));
            }
            let admin = AdminBootstrap {
                provider,
                provider_id: non_empty(vars, "TMI_ADMIN_PROVIDER_ID"),
                email: non_empty(vars, "TMI_ADMIN_EMAIL"),
                group_name: non_empty(vars, "TMI_ADMIN_GROUP_NAME"),
                subject_type,
            };
            if admin.subject_type == "user" && admin.provider_id.is_none() && admin.email.is_none() {
                return Err(invalid(
                    "TMI_ADMIN_PROVIDER_ID",
                    "set TMI_ADMIN_PROVIDER_ID or TMI_ADMIN_EMAIL",
                ));
            }
            if admin.subject_type == "group" && admin.group_name.is_none() {
                return Err(invalid(
                    "TMI_ADMIN_GROUP_NAME",
                    "required when TMI_ADMIN_SUBJECT_TYPE=group",
                ));
            }
            admins.push(admin);
        }
        let log_level = non_empty(vars, "TMI_LOG_LEVEL")
            .unwrap_or_else(|| "info".into())
            .to_ascii_lowercase();
        if !["trace", "debug", "info", "warn", "warning", "error"].contains(&log_level.as_str()) {
            return Err(invalid("TMI_LOG_LEVEL", "expected debug, info, warn or error"));
        }
        let jwt_expiration_seconds = parse_num(vars, "TMI_JWT_EXPIRATION_SECONDS", 3600)?;
        if jwt_expiration_seconds < 60 {
            return Err(invalid("TMI_JWT_EXPIRATION_SECONDS", "must be at least 60"));
        }
        let refresh_token_days: i64 = parse_num(vars, "TMI_REFRESH_TOKEN_DAYS", 7)?;
        let session_lifetime_days: i64 = parse_num(vars, "TMI_SESSION_LIFETIME_DAYS", 7)?;
        if refresh_token_days < 1 {
            return Err(invalid("TMI_REFRESH_TOKEN_DAYS", "must be at least 1"));
        }
        if session_lifetime_days < 1 {
            return Err(invalid("TMI_SESSION_LIFETIME_DAYS", "must be at least 1"));
        }
        let websocket_ping_interval_seconds: u64 =
            parse_num(vars, "TMI_WEBSOCKET_PING_INTERVAL_SECONDS", 30)?;
        if websocket_ping_interval_seconds == 0 {
            return Err(invalid(
                "TMI_WEBSOCKET_PING_INTERVAL_SECONDS",
                "must be at least 1",
            ));
        }
        let websocket_empty_session_seconds: u64 =
            parse_num(vars, "TMI_WEBSOCKET_EMPTY_SESSION_SECONDS", 30)?;
        if websocket_empty_session_seconds < 5 {
            return Err(invalid(
                "TMI_WEBSOCKET_EMPTY_SESSION_SECONDS",
                "must be at least 5",
            ));
        }
        let websocket_max_messages_per_second: u32 =
            parse_num(vars, "TMI_WEBSOCKET_MAX_MESSAGES_PER_SECOND", 50)?;
        if websocket_max_messages_per_second == 0 {
            return Err(invalid(
                "TMI_WEBSOCKET_MAX_MESSAGES_PER_SECOND",
                "must be at least 1",
            ));
        }
        Ok(Config {
            database_url: database_url.map(SecretString::from),
            db_max_connections: parse_num(vars, "TMI_DB_MAX_OPEN_CONNS", 10)?,
            redis: parse_redis(vars)?,
            jwt_secret: jwt_secret.map(SecretString::from),
            jwt_expiration_seconds,
            refresh_token_days,
            session_lifetime_days,
            build_mode,
            port,
            // Loopback unless configured: the zero-configuration run enables the password-less dev
            // login, which must not be reachable from the network by default. Containers and the
            // operator set 0.0.0.0 explicitly.
            interface: non_empty(vars, "TMI_SERVER_INTERFACE").unwrap_or_else(|| DEFAULT_INTERFACE.into()),
            base_url,
            cors_allowed_origins,
            oauth_callback_url,
            client_callback_allowlist,
            tmi_provider_enabled,
            oauth_providers: crate::auth::provider_config::parse(vars)?,
            oauth_ca_file: non_empty(vars, "TMI_OAUTH_CA_FILE"),
            cookie_enabled: parse_bool(vars, "TMI_COOKIE_ENABLED", true)?,
            cookie_domain: non_empty(vars, "TMI_COOKIE_DOMAIN"),
            cookie_secure: parse_bool(vars, "TMI_COOKIE_SECURE", false)?,
            refresh_cookie_path: non_empty(vars, "TMI_COOKIE_REFRESH_PATH").unwrap_or_else(|| "/".into()),
            admins,
            auto_promote_first_user: parse_bool(vars, "TMI_AUTH_AUTO_PROMOTE_FIRST_USER", false)?,
            everyone_is_a_reviewer: parse_bool(vars, "TMI_AUTH_EVERYONE_IS_A_REVIEWER", false)?,
            require_if_match: parse_bool(vars, "TMI_REQUIRE_IF_MATCH", false)?,
            log_level,
            operator_name: non_empty(vars, "TMI_OPERATOR_NAME"),
            operator_contact: non_empty(vars, "TMI_OPERATOR_CONTACT"),
            operator_jurisdiction: non_empty(vars, "TMI_OPERATOR_JURISDICTION"),
            data_dir: non_empty(vars, "TMI_DATA_DIR").unwrap_or_else(|| "./data".into()),
            websocket_allowed_origins: list(vars, "WEBSOCKET_ALLOWED_ORIGINS"),
            websocket_ping_interval_seconds,
            shutdown_drain_seconds: parse_num(vars, "TMI_SHUTDOWN_DRAIN_SECONDS", 2)?,
            websocket_empty_session_seconds,
            websocket_max_connections_per_user: parse_num(vars, "TMI_WEBSOCKET_MAX_CONNECTIONS_PER_USER", 5)?,
            websocket_max_participants_per_session: parse_num(
                vars,
                "TMI_WEBSOCKET_MAX_PARTICIPANTS_PER_SESSION",
                50,
            )?,
            websocket_max_messages_per_second,
            limits: parse_limits(vars)?,
        })
    }

    /// The JWT issuer: scheme and host of the OAuth callback URL.
    pub fn issuer(&self) -> String {
        let url = &self.oauth_callback_url;
        let after = url.find("://").map(|i| i + 3).unwrap_or(0);
        match url[after..].find('/') {
            Some(i) => url[..after + i].to_owned(),
            None => url.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn zero_config_is_dev_with_tmi_provider() {
        let c = Config::from_vars(&HashMap::new()).unwrap();
        assert_eq!(c.build_mode, BuildMode::Dev);
        assert!(c.tmi_provider_enabled);
        assert_eq!(c.port, 8080);
        assert_eq!(
            c.interface, "127.0.0.1",
            "the dev login is not on the network by default"
        );
        assert_eq!(c.limits, Limits::default());
        assert!(c.database_url.is_none() && c.jwt_secret.is_none() && c.redis.is_none());
        assert_eq!(c.issuer(), "http://localhost:8080");
    }

    #[test]
    fn invalid_values_name_the_variable() {
        for (k, v) in [
            ("TMI_BUILD_MODE", "staging"),
            ("TMI_DATABASE_URL", "mysql://x"),
            ("TMI_SERVER_PORT", "eighty"),
            ("TMI_CORS_ALLOWED_ORIGINS", "*"),
            ("TMI_JWT_SECRET", "short"),
            ("TMI_REDIS_URL", "http://x"),
            ("TMI_LOG_LEVEL", "loud"),
            ("TMI_REQUIRE_IF_MATCH", "maybe"),
            ("TMI_SERVER_READ_TIMEOUT", "soon"),
            ("TMI_SERVER_BODY_TIMEOUT", "5 fortnights"),
            ("TMI_RATELIMIT_PUBLIC_RPM", "0"),
            ("TMI_TRUSTED_PROXIES", "10.0.0.0/99"),
            ("TMI_SERVER_MAX_CONNECTIONS", "0"),
        ] {
            let err = Config::from_vars(&vars(&[(k, v)])).err().unwrap();
            assert_eq!(err.var, k);
            assert!(!err.to_string().contains("short"), "values are not echoed");
        }
    }

    #[test]
    fn redis_url_and_parts() {
        let c = Config::from_vars(&vars(&[("TMI_REDIS_URL", "redis://:s3cret@cache:6380/2")])).unwrap();
        let r = c.redis.unwrap();
        assert_eq!((r.host.as_str(), r.port, r.db), ("cache", 6380, 2));
        assert!(!format!("{r:?}").contains("s3cret"));
        assert_eq!(r.url(), "redis://:s3cret@cache:6380/2");
        let c = Config::from_vars(&vars(&[("TMI_REDIS_HOST", "h"), ("TMI_REDIS_PORT", "1")])).unwrap();
        assert_eq!(c.redis.unwrap().url(), "redis://h:1/0");
    }

    #[test]
    fn limits_parse_upstream_durations() {
        let c = Config::from_vars(&vars(&[
            ("TMI_SERVER_INTERFACE", "0.0.0.0"),
            ("TMI_SERVER_READ_TIMEOUT", "5s"),
            ("TMI_SERVER_BODY_TIMEOUT", "2m"),
            ("TMI_RATELIMIT_PUBLIC_RPM", "10"),
            ("TMI_TRUSTED_PROXIES", "10.0.0.0/8, ::1"),
            ("TMI_DISABLE_RATE_LIMITING", "true"),
        ]))
        .unwrap();
        assert_eq!(c.interface, "0.0.0.0");
        let l = c.limits;
        assert_eq!(l.read_timeout, std::time::Duration::from_secs(5));
        assert_eq!(l.body_timeout, std::time::Duration::from_secs(120));
        assert_eq!(l.public_rpm, 10);
        assert!(l.rate_limiting_disabled);
        assert_eq!(
            l.trusted_proxies,
            vec![("10.0.0.0".parse().unwrap(), 8), ("::1".parse().unwrap(), 128)]
        );
    }

    #[test]
    fn production_disables_tmi_provider_by_default() {
        let c = Config::from_vars(&vars(&[("TMI_BUILD_MODE", "production")])).unwrap();
        assert!(!c.tmi_provider_enabled);
        assert!(c.client_callback_allowlist.is_empty());
    }
}
