//! Logging setup with tracing. IO: installs the global subscriber once per process.

/// Installs the subscriber: `RUST_LOG` wins, else `TMI_LOG_LEVEL`; JSON when `TMI_LOG_FORMAT=json`.
pub fn init(level: &str) {
    let level = if level == "warning" { "warn" } else { level };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level},sqlx=warn")));
    let json = std::env::var("TMI_LOG_FORMAT").is_ok_and(|f| f == "json");
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
