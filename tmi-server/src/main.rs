//! `tmi-server`: serve the TMI API (default) or apply database migrations (`tmi-server migrate`).
//!
//! `migrate` prints its outcome as one JSON line (`store::schema::MigrationResult`) on stdout and, with
//! `--result-file`, into that file: the operator's migrate Job points it at the container's termination-message
//! file, so the result reaches the Job's pod status without anyone scraping logs. A database whose schema is
//! newer than this binary knows exits with code 3 (`EXIT_SCHEMA_TOO_NEW`), from `migrate` and from `serve`.

use clap::{Parser, Subcommand};
use tmi_server::config::Config;
use tmi_server::store::{Postgres, Sqlite, StoreError, schema};

#[derive(Parser)]
#[command(version, about = "A drop-in compatible TMI server", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply pending migrations and exit (run as a Job before upgrades).
    Migrate {
        /// Also write the one-line JSON result to this file (e.g. `/dev/termination-log`).
        #[arg(long)]
        result_file: Option<std::path::PathBuf>,
    },
}

/// mimalloc instead of the C library's allocator: small JSON values are allocated and freed on every
/// request, and glibc's malloc (and musl's, in the images) was the top of the CPU profile under load
/// (docs/server.md, Benchmark).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_process_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tmi-server: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    tmi_server::telemetry::init(&config.log_level);
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate { result_file } => return migrate(&config, result_file.as_deref()).await,
        Command::Serve => run(config).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "tmi-server failed");
            eprintln!("tmi-server: {e:#}");
            exit_code(&e)
        }
    }
}

/// The refusal of a newer schema anywhere in `e`'s chain.
fn too_new(e: &anyhow::Error) -> Option<schema::SchemaTooNew> {
    e.chain().find_map(|c| match c.downcast_ref::<StoreError>() {
        Some(StoreError::SchemaTooNew(s)) => Some(*s),
        _ => c.downcast_ref::<schema::SchemaTooNew>().copied(),
    })
}

/// Exit code for an error: [`schema::EXIT_SCHEMA_TOO_NEW`] when the database is newer than this binary.
fn exit_code(e: &anyhow::Error) -> std::process::ExitCode {
    if too_new(e).is_some() {
        std::process::ExitCode::from(schema::EXIT_SCHEMA_TOO_NEW)
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// `tmi-server migrate`: applies pending migrations (refusing a newer schema) and reports the outcome.
async fn migrate(config: &Config, result_file: Option<&std::path::Path>) -> std::process::ExitCode {
    let outcome = migrate_database(config).await;
    let (result, code) = match outcome {
        Ok(r) => {
            tracing::info!(schema_version = r.current, applied = ?r.applied, "migrations applied");
            let known = r.current;
            (
                schema::MigrationResult::Migrated {
                    schema_version: r.current,
                    previous_schema_version: r.previous,
                    applied: r.applied,
                    known_schema_version: known,
                },
                std::process::ExitCode::SUCCESS,
            )
        }
        Err(e) => match too_new(&e) {
            Some(too_new) => {
                tracing::error!(error = %too_new, "refusing to migrate");
                eprintln!("tmi-server: {too_new}");
                (
                    schema::MigrationResult::SchemaTooNew {
                        schema_version: too_new.database,
                        known_schema_version: too_new.known,
                        error: too_new.to_string(),
                    },
                    std::process::ExitCode::from(schema::EXIT_SCHEMA_TOO_NEW),
                )
            }
            None => {
                let error = format!("database migration failed: {e:#}");
                tracing::error!(%error, "tmi-server migrate failed");
                eprintln!("tmi-server: {error}");
                (
                    schema::MigrationResult::Failed { error },
                    std::process::ExitCode::FAILURE,
                )
            }
        },
    };
    // serde_json cannot fail on this enum of strings and integers; an empty line would be reported as such.
    let line = serde_json::to_string(&result).unwrap_or_default();
    println!("{line}");
    if let Some(path) = result_file
        && let Err(e) = std::fs::write(path, format!("{line}\n"))
    {
        eprintln!("tmi-server: cannot write {}: {e}", path.display());
    }
    code
}

async fn migrate_database(config: &Config) -> anyhow::Result<schema::MigrationReport> {
    use anyhow::Context as _;
    let url = tmi_server::database_url(config)?;
    let max = config.db_max_connections.clamp(1, 2);
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let pg = Postgres::connect(&url, max)
            .await
            .context("cannot connect to the database (TMI_DATABASE_URL)")?;
        Ok(pg.migrate_report().await?)
    } else {
        let lite = Sqlite::connect(&url, max)
            .await
            .context("cannot open the SQLite database (TMI_DATABASE_URL)")?;
        Ok(lite.migrate_report().await?)
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let addr = format!("{}:{}", config.interface, config.port);
    let zero_config = config.database_url.is_none();
    let dev_login = config.tmi_provider_enabled && config.build_mode.is_dev_or_test();
    let port = config.port;
    let loopback = config
        .interface
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
        || config.interface == "localhost";
    let state = tmi_server::build_state(config).await?;
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    tracing::info!(%addr, startup_ms = started.elapsed().as_millis() as u64, "tmi-server ready");
    if zero_config {
        println!("tmi-server: serving on http://localhost:{port} with SQLite under ./data (dev mode)");
    }
    if loopback {
        println!(
            "tmi-server: listening on {addr} only: other machines cannot connect \
             (set TMI_SERVER_INTERFACE=0.0.0.0 to listen on every interface)"
        );
    } else {
        println!("tmi-server: listening on {addr}");
        if dev_login {
            tracing::warn!(%addr, "the password-less dev login is reachable from the network");
        }
    }
    if dev_login {
        println!(
            "Sign in (dev provider): open http://localhost:{port}/oauth2/authorize?idp=tmi&scope=openid&login_hint=alice\
             &client_callback=http://localhost:4200/oauth2/callback&code_challenge=<S256 of your verifier>&code_challenge_method=S256\n\
             then POST http://localhost:{port}/oauth2/token?idp=tmi with {{\"grant_type\":\"authorization_code\",\"code\":…,\"code_verifier\":…,\"redirect_uri\":…}},\n\
             or point the TMI web client (http://localhost:4200) at this server and pick \"TMI Provider\"."
        );
    }
    tmi_server::serve(listener, state, shutdown_signal()).await?;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C; `axum::serve` then stops accepting and drains in-flight requests.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received; draining in-flight requests");
}
