//! `tmi-server`: serve the TMI API (default) or apply database migrations (`tmi-server migrate`).

use clap::{Parser, Subcommand};
use tmi_server::config::Config;

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
    Migrate,
}

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
        Command::Migrate => tmi_server::connect_store(&config)
            .await
            .map(|_| tracing::info!("migrations applied")),
        Command::Serve => run(config).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "tmi-server failed");
            eprintln!("tmi-server: {e:#}");
            std::process::ExitCode::FAILURE
        }
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
