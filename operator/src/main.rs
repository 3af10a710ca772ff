//! `tmi-operator` binary: `tmi-operator crd` prints the CRD; `tmi-operator run` runs the operator.
//!
//! `run` wires the pieces together: logging, the API client, the admin server, and the controller (behind
//! leader election unless `--leader-elect=false`); SIGTERM/SIGINT shut everything down gracefully (in-flight
//! reconciles finish, the Lease is released).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand};
use futures::FutureExt;
use tmi_operator::{admin, client, controller, leader, metrics::Metrics, telemetry};

#[derive(Parser, Debug)]
#[command(name = "tmi-operator", version, about = "Kubernetes operator for TMI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the TmiInstance CustomResourceDefinition as YAML.
    Crd,
    /// Run the operator.
    Run(Box<RunArgs>),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Kubeconfig file; default: KUBECONFIG, ~/.kube/config, or the in-cluster service account.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Comma-separated namespaces to watch; empty watches all namespaces.
    #[arg(long, env = "WATCH_NAMESPACES", value_delimiter = ',', default_value = "")]
    watch_namespaces: Vec<String>,
    /// Label selector: reconcile only TmiInstances matching it (shards instances across operators).
    #[arg(long, env = "INSTANCE_SELECTOR")]
    instance_selector: Option<String>,
    /// Reconciles running at once (per watched namespace).
    #[arg(long, env = "MAX_CONCURRENT_RECONCILES", default_value_t = 10)]
    max_concurrent_reconciles: u16,
    /// Instances upgrading (migrating or rolling out a new version) at once, across every watched namespace;
    /// 0 for no limit. The rest wait in order of their `tmi.dev/upgrade-priority` label.
    #[arg(long, env = "MAX_CONCURRENT_UPGRADES", default_value_t = 5)]
    max_concurrent_upgrades: u32,
    /// What a failed upgrade does to the others: `pause` starts no new upgrades until it recovers; `continue`
    /// keeps going.
    #[arg(long, env = "UPGRADE_FAILURE_POLICY", value_enum, default_value = "pause")]
    upgrade_failure_policy: FailurePolicyArg,
    /// The TMI version instances with `spec.upgrade.policy` Patch or Minor follow: by default the release this
    /// operator was built and tested with.
    #[arg(long, env = "DEFAULT_TMI_VERSION", default_value = env!("CARGO_PKG_VERSION"))]
    default_tmi_version: String,
    /// Seconds a migrate Job may run before it is failed (`activeDeadlineSeconds`).
    #[arg(long, env = "MIGRATION_TIMEOUT_SECONDS", default_value_t = 600)]
    migration_timeout_seconds: u64,
    /// Seconds between periodic re-reconciles of a healthy instance.
    #[arg(long, env = "RESYNC_PERIOD_SECONDS", default_value_t = 600)]
    resync_period_seconds: u64,
    /// Elect a leader on a Lease so that only one replica writes.
    #[arg(long, env = "LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Name of the leader Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "tmi-operator")]
    lease_name: String,
    /// Namespace of the leader Lease; default: the pod's namespace (POD_NAMESPACE) or `default`.
    #[arg(long, env = "LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's identity on the Lease; default: POD_NAME or host name plus process id.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Address of the /healthz, /readyz and /metrics server.
    #[arg(long, env = "ADMIN_ADDR", default_value = "0.0.0.0:8081")]
    admin_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    log_format: telemetry::LogFormat,
}

/// `--upgrade-failure-policy`.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum FailurePolicyArg {
    /// Start no new upgrades while one has failed.
    Pause,
    /// Keep upgrading the others.
    Continue,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", tmi_operator::crd_yaml()?);
            Ok(())
        }
        Command::Run(args) => run(*args).await,
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c().map(|_| ());
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c.await,
        };
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    ctrl_c.await;
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format);
    let metrics = Arc::new(Metrics::default());
    let config = client::config(args.kubeconfig.as_deref()).await?;
    let client = client::counting(config, metrics.clone())?;
    let controller_config = controller::Config {
        namespaces: args
            .watch_namespaces
            .into_iter()
            .filter(|n| !n.is_empty())
            .collect(),
        instance_selector: args.instance_selector,
        concurrency: args.max_concurrent_reconciles,
        resync: Duration::from_secs(args.resync_period_seconds),
        upgrades: controller::fleet::Limits {
            max_concurrent: (args.max_concurrent_upgrades > 0).then_some(args.max_concurrent_upgrades),
            on_failure: match args.upgrade_failure_policy {
                FailurePolicyArg::Pause => controller::fleet::FailurePolicy::Pause,
                FailurePolicyArg::Continue => controller::fleet::FailurePolicy::Continue,
            },
        },
        migration_deadline: Duration::from_secs(args.migration_timeout_seconds.max(1)),
        default_version: args.default_tmi_version,
        ..controller::Config::default()
    };
    let shutdown = Box::pin(shutdown_signal()).shared();
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(args.admin_addr).await?;
    tracing::info!(addr = %args.admin_addr, "admin server listening");
    let admin_state = admin::AdminState {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    let admin = tokio::spawn(admin::serve(listener, admin_state, shutdown.clone()));

    if args.leader_elect {
        let identity = args.identity.unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "tmi-operator".to_owned());
            format!("{host}-{}", std::process::id())
        });
        let namespace = args
            .lease_namespace
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".to_owned());
        let lease = leader::LeaseConfig {
            name: args.lease_name,
            namespace,
            identity,
            duration_seconds: 15,
            grace_seconds: 5,
        };
        leader::run(client, controller_config, lease, metrics, ready, shutdown.clone()).await?;
    } else {
        ready.store(true, Ordering::SeqCst);
        controller::run(client, controller_config, metrics, shutdown.clone()).await;
    }
    admin.await??;
    tracing::info!("stopped");
    Ok(())
}
