//! The reconcile pipeline and the controller around it. IO: watches and the steps marked IO below.
//!
//! ```text
//! validate (pure) → ensure generated Secret (IO, create-once) → resolve inputs (IO, reads; and the Ingress
//!   preset from `cluster`) → render (pure) → observe the upgrade (IO: the migrate Job, its result; a slot from
//!   `fleet`) → upgrade::plan (pure) → apply (IO, server-side apply; the Deployment held while an upgrade
//!   waits or migrates; the migrate Job created) → upgrade::settle (pure) → status::compute (pure, with
//!   `exposure::evaluate`) → status::patch (IO)
//! ```
//!
//! The operator never writes `spec`. Problems a retry cannot fix (an invalid spec, a missing Secret, an object
//! the API server rejects) end the pass with a `Stalled` status and wait for a change; anything else is an
//! error that `error_policy` retries with exponential backoff.

pub mod apply;
pub mod cache;
pub mod cluster;
pub mod diagnose;
pub mod exposure;
pub mod fleet;
pub mod inputs;
pub mod names;
pub mod render;
pub mod status;
#[cfg(test)]
pub mod test_support;
pub mod upgrade;
pub mod validate;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{info, instrument, warn};

use crate::crd::TmiInstance;
use crate::external::{Certificate, HTTPRoute};
use crate::metrics::Metrics;

/// Settings of the controller (from the CLI).
#[derive(Debug, Clone)]
pub struct Config {
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// Label selector restricting which instances this operator reconciles (sharding).
    pub instance_selector: Option<String>,
    /// Reconciles running at once, per watched namespace.
    pub concurrency: u16,
    /// Interval of the periodic re-reconcile of a healthy instance.
    pub resync: Duration,
    /// Interval of the re-check while a rollout is in progress.
    pub progress_poll: Duration,
    /// Name of the reporting controller on Events.
    pub reporter: String,
    /// Fleet waves: upgrades at once, and what a failed one does to the rest.
    pub upgrades: fleet::Limits,
    /// `activeDeadlineSeconds` of a migrate Job.
    pub migration_deadline: Duration,
    /// The TMI version this operator release was tested with: what `spec.upgrade.policy` follows.
    pub default_version: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            namespaces: Vec::new(),
            instance_selector: None,
            concurrency: 10,
            resync: Duration::from_secs(600),
            progress_poll: Duration::from_secs(15),
            reporter: names::FIELD_MANAGER.to_owned(),
            upgrades: fleet::Limits::default(),
            migration_deadline: Duration::from_secs(600),
            default_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// Watch caches of the objects the operator owns (label-filtered) and of Secret metadata.
#[derive(Clone)]
pub struct Stores {
    /// ServiceAccounts with the managed-by label.
    pub service_accounts: Store<ServiceAccount>,
    /// ConfigMaps with the managed-by label.
    pub config_maps: Store<ConfigMap>,
    /// PersistentVolumeClaims with the managed-by label.
    pub data_volume_claims: Store<PersistentVolumeClaim>,
    /// Deployments with the managed-by label.
    pub deployments: Store<Deployment>,
    /// Services with the managed-by label.
    pub services: Store<Service>,
    /// PodDisruptionBudgets with the managed-by label.
    pub pod_disruption_budgets: Store<PodDisruptionBudget>,
    /// Ingresses with the managed-by label.
    pub ingresses: Store<Ingress>,
    /// HTTPRoutes with the managed-by label (empty until the Gateway API is served).
    pub http_routes: Store<HTTPRoute>,
    /// cert-manager Certificates with the managed-by label (empty until cert-manager is served).
    pub certificates: Store<Certificate>,
    /// Metadata (no data) of every Secret except Helm release Secrets.
    pub secrets_meta: Store<PartialObjectMeta<Secret>>,
    /// Migrate Jobs with the managed-by label.
    pub jobs: Store<Job>,
}

/// Which instances reference which Secret: `(namespace, secret)` → instance names.
pub type SecretIndex = Arc<Mutex<HashMap<(String, String), BTreeSet<String>>>>;

/// Shared state of one controller.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Settings.
    pub config: Config,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Event recorder.
    pub recorder: Recorder,
    /// Watch caches.
    pub stores: Stores,
    /// `namespace/secret` → digests at a resourceVersion (values are never kept).
    pub secret_digests: Mutex<HashMap<String, inputs::ObjectDigests>>,
    /// Secret → instances, for mapping Secret events to reconciles.
    pub secret_index: SecretIndex,
    /// Consecutive failures per instance, for exponential backoff.
    pub failures: Mutex<HashMap<ObjectRef<TmiInstance>, u32>>,
    /// Which optional APIs (Gateway API, cert-manager) the cluster serves.
    pub apis: Arc<cluster::OptionalApis>,
    /// The cluster's IngressClasses as last listed, and when (see `cluster::ingress_preset`).
    pub ingress_classes: cluster::IngressClassMemo,
    /// The operator-wide upgrade slots (shared by every watched namespace's controller).
    pub fleet: Arc<fleet::Fleet>,
    /// The instance caches of every controller of this process, for the fleet's view of its peers.
    pub instances: InstanceStores,
}

/// The TmiInstance caches of all controllers in the process.
pub type InstanceStores = Arc<std::sync::RwLock<Vec<Store<TmiInstance>>>>;

/// A reconcile failure; each variant names the step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading a referenced object failed.
    #[error("resolve inputs: reading {kind} {name:?} failed")]
    Read {
        /// Kind.
        kind: &'static str,
        /// Name.
        name: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// Applying (or creating, deleting) a child failed.
    #[error("apply: {kind} {name:?} failed")]
    Apply {
        /// Kind.
        kind: String,
        /// Name.
        name: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// Serializing a child failed.
    #[error("apply: serializing {kind} {name:?} failed")]
    Serialize {
        /// Kind.
        kind: String,
        /// Name.
        name: String,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// Writing the status failed.
    #[error("status: patching the status failed")]
    PatchStatus(#[source] kube::Error),
    /// A lock was poisoned by a panicking reconcile.
    #[error("internal: a lock was poisoned")]
    Poisoned,
}

impl Error {
    /// Low-cardinality metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Read { .. } => "Read",
            Error::Apply { .. } => "Apply",
            Error::Serialize { .. } => "Serialize",
            Error::PatchStatus(_) => "PatchStatus",
            Error::Poisoned => "Poisoned",
        }
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Whether a failed write is the API server rejecting the object (fix the spec), not a transient error.
fn rejected(e: &Error) -> Option<String> {
    match e {
        Error::Apply {
            kind,
            name,
            source: kube::Error::Api(s),
        } if matches!(s.code, 400 | 403 | 422) => Some(format!("{kind} {name:?} rejected: {}", s.message)),
        _ => None,
    }
}

/// Reconciles one instance. Idempotent: starts from the spec every time.
#[instrument(skip_all, fields(instance.name = %obj.name_any(), instance.namespace = ?obj.namespace()))]
pub async fn reconcile(obj: Arc<TmiInstance>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&obj, &ctx).await;
    ctx.metrics.reconciled(
        started.elapsed().as_secs_f64(),
        result.as_ref().err().map(Error::reason),
    );
    if result.is_ok()
        && let Ok(mut f) = ctx.failures.lock()
    {
        f.remove(&ObjectRef::from_obj(obj.as_ref()));
    }
    result
}

/// The validated instance with its automated-update policy applied (pure).
fn effective(obj: &TmiInstance, config: &Config) -> Result<validate::ValidInstance, validate::InvalidSpec> {
    let mut valid = validate::validate(obj)?;
    upgrade::follow(&mut valid, &config.default_version);
    Ok(valid)
}

async fn reconcile_inner(obj: &TmiInstance, ctx: &Context) -> Result<Action, Error> {
    let valid = match effective(obj, &ctx.config) {
        Ok(valid) => valid,
        Err(invalid) => {
            // A retry cannot fix a bad spec: report it and wait for an edit.
            info!(error = %invalid, "invalid spec");
            status::patch(
                ctx,
                obj,
                status::compute(obj, status::Outcome::Invalid(&invalid), &now()),
            )
            .await?;
            return Ok(Action::await_change());
        }
    };
    index_secrets(ctx, &valid)?;
    if valid.suspend {
        status::patch(
            ctx,
            obj,
            status::compute(obj, status::Outcome::Suspended(&valid), &now()),
        )
        .await?;
        return Ok(Action::await_change());
    }
    apply::ensure_generated_secret(ctx, &valid).await?;
    let mut inputs = inputs::resolve(ctx, &valid).await?;
    (inputs.ingress_controller, inputs.exposure_note) = cluster::ingress_preset(ctx, &valid).await;
    if !inputs.problems.is_empty() {
        // The Secret watch brings us back when the missing object appears; the slow requeue is a safety net.
        let outcome = status::Outcome::InputsMissing(&valid, &inputs.problems);
        status::patch(ctx, obj, status::compute(obj, outcome, &now())).await?;
        return Ok(Action::requeue(ctx.config.resync));
    }
    let render::Rendered {
        desired,
        inputs_hash: hash,
    } = render::render_with_hash(&valid, &inputs);
    let key = (valid.namespace.clone(), valid.name.clone());
    let priority = upgrade::priority(obj.labels());
    let mut plan = plan_upgrade(ctx, obj, &valid, &key, priority).await;
    let applied = match apply_planned(ctx, &valid, desired, &plan).await {
        Ok(applied) => applied,
        Err(e) => match rejected(&e) {
            Some(message) => {
                warn!(
                    error = &e as &dyn std::error::Error,
                    "the API server rejected a rendered object"
                );
                // A reserved slot goes back to the queue until the spec is fixed.
                if plan.fleet == upgrade::FleetReport::Holds {
                    ctx.fleet.report(&key, upgrade::FleetReport::Wants, priority);
                }
                let outcome = status::Outcome::Rejected(&valid, &message);
                status::patch(ctx, obj, status::compute(obj, outcome, &now())).await?;
                return Ok(Action::await_change());
            }
            None => return Err(e),
        },
    };
    let rolled_out = status::rolled_out(&applied.deployment, valid.replicas);
    let problem = if rolled_out {
        None
    } else {
        diagnose::server_problem(&server_pods(ctx, &valid).await)
    };
    let rolled_out_image = rolled_out.then(|| server_image(&applied.deployment)).flatten();
    upgrade::settle(
        &mut plan,
        rolled_out_image.as_deref(),
        problem.as_ref().map(|p| p.message.as_str()),
        &now(),
    );
    ctx.fleet.report(&key, plan.fleet, priority);
    let tls_secret_present = match &valid.exposure.tls {
        Some(validate::Tls::Secret(name)) => cluster::secret_exists(ctx, &valid, name),
        _ => false,
    };
    let certificate_request = match &applied.certificate {
        Some(cert) => cluster::certificate_request_problem(ctx, cert).await,
        None => None,
    };
    let outcome = status::Outcome::Applied {
        valid: &valid,
        deployment: &applied.deployment,
        inputs_hash: &hash,
        problem: problem.as_ref(),
        exposure: exposure::Observed {
            ingress: applied.ingress.as_ref(),
            http_route: applied.http_route.as_ref(),
            certificate: applied.certificate.as_ref(),
            gateway_api: ctx.apis.served(cluster::OptionalApi::Gateway),
            cert_manager: ctx.apis.served(cluster::OptionalApi::CertManager),
            tls_secret_present,
            note: inputs.exposure_note.as_deref(),
            ingress_controller: inputs.ingress_controller,
            certificate_request: certificate_request.as_deref(),
        },
        upgrade: Some(&plan),
    };
    let new_status = status::compute(obj, outcome, &now());
    let settled = new_status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == status::RECONCILING && c.status == "False");
    status::patch(ctx, obj, new_status).await?;
    Ok(Action::requeue(if settled {
        ctx.config.resync
    } else {
        ctx.config.progress_poll
    }))
}

/// Observes the upgrade (the live Deployment's image, the migrate Job and its result, a fleet slot) and plans
/// it (IO: reads caches; lists the Job's pods once it finished).
async fn plan_upgrade(
    ctx: &Context,
    obj: &TmiInstance,
    valid: &validate::ValidInstance,
    key: &fleet::Key,
    priority: i32,
) -> upgrade::Plan {
    let live = ctx
        .stores
        .deployments
        .get(&ObjectRef::new(&names::deployment(valid)).within(&valid.namespace));
    let running_image = live.as_deref().and_then(server_image);
    let pending = upgrade::pending(&valid.image, running_image.as_deref());
    let sqlite = matches!(valid.database, validate::Database::Sqlite { .. });
    let job_name = running_image
        .as_deref()
        .map(|from| names::migrate_job(valid, from, &valid.image))
        .unwrap_or_default();
    let job = if pending && !sqlite {
        observe_job(ctx, valid, &job_name).await
    } else {
        None
    };
    let slot = if pending && job.is_none() {
        ctx.fleet.request(key, priority, &peers(ctx))
    } else {
        upgrade::Slot::Granted
    };
    let status = obj.status.as_ref();
    let observed = upgrade::Observed {
        version: &valid.version,
        image: &valid.image,
        running_image: running_image.as_deref(),
        running_version: status.and_then(|s| s.version.as_deref()),
        sqlite,
        job,
        job_name: &job_name,
        slot,
        previous: status.and_then(|s| s.upgrade.as_ref()),
        priority,
        failed_job_exists: !pending && !apply::failed_jobs(&ctx.stores.jobs, valid).is_empty(),
    };
    upgrade::plan(&observed, &now())
}

/// Carries out the plan's Job action, then applies the desired objects (holding the Deployment if planned).
async fn apply_planned(
    ctx: &Context,
    valid: &validate::ValidInstance,
    desired: render::Desired,
    plan: &upgrade::Plan,
) -> Result<apply::Applied, Error> {
    match plan.job {
        upgrade::JobAction::Create => {
            let status = plan.status.as_ref();
            let name = status.and_then(|s| s.job.clone()).unwrap_or_default();
            let from = status
                .and_then(|s| s.from_version.as_deref())
                .unwrap_or("unknown");
            let job = render::migration_job::render(
                valid,
                &name,
                ctx.config
                    .migration_deadline
                    .as_secs()
                    .try_into()
                    .unwrap_or(i64::MAX),
                from,
            );
            apply::create_migration_job(ctx, valid, job).await?;
        }
        upgrade::JobAction::DeleteFailed => apply::delete_failed_jobs(ctx, valid).await?,
        upgrade::JobAction::None => {}
    }
    apply::apply(ctx, valid, desired, plan.hold).await
}

/// The image of a Deployment's server container.
fn server_image(d: &Deployment) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == "server")?
        .image
        .clone()
}

/// The migrate Job `name`, as observed: from the cache, and once it finished, its result from its pod's
/// termination message (IO: one uncached pod list).
async fn observe_job(
    ctx: &Context,
    valid: &validate::ValidInstance,
    name: &str,
) -> Option<upgrade::JobState> {
    let job = ctx
        .stores
        .jobs
        .get(&ObjectRef::new(name).within(&valid.namespace))?;
    let complete = apply::job_condition(&job, "Complete");
    let failed = apply::job_condition(&job, "Failed");
    if !complete && !failed {
        return Some(upgrade::JobState::Running);
    }
    let pods = job_pods(ctx, valid, name).await;
    let message = migrate_message(&pods);
    let result = message.as_deref().and_then(upgrade::MigrationResult::parse);
    let backup = backup_outcome(&pods);
    if complete {
        return Some(upgrade::JobState::Succeeded {
            result,
            completed_at: job.status.as_ref().and_then(|s| s.completion_time.clone()),
            backup: backup.and_then(|(ok, m)| ok.then_some(m)),
        });
    }
    if let Some((false, m)) = backup {
        // The newest pod's backup failed: its migration never started.
        return Some(upgrade::JobState::BackupFailed {
            message: diagnose::tail(&m),
        });
    }
    let reason = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Failed"))
        .map(|c| {
            format!(
                "{}: {}",
                c.reason.as_deref().unwrap_or("Failed"),
                c.message.as_deref().unwrap_or_default()
            )
        })
        .unwrap_or_default();
    let text = result
        .as_ref()
        .and_then(|r| r.error.clone())
        .or(message)
        .filter(|m| !m.trim().is_empty())
        .unwrap_or(reason);
    Some(upgrade::JobState::Failed {
        result,
        message: diagnose::tail(&text),
    })
}

/// The Job's pods (IO, uncached); none when the list fails (only the diagnosis is lost).
async fn job_pods(
    ctx: &Context,
    valid: &validate::ValidInstance,
    job: &str,
) -> Vec<k8s_openapi::api::core::v1::Pod> {
    let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(ctx.client.clone(), &valid.namespace);
    match api
        .list(&kube::api::ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
        .await
    {
        Ok(list) => list.items,
        Err(e) => {
            warn!(
                error = &e as &dyn std::error::Error,
                "listing the migrate Job's pods failed"
            );
            Vec::new()
        }
    }
}

/// The backup init container of the Job's newest pod that ran one, once it terminated: whether it succeeded,
/// and its termination message (the dump's file name, or the log tail of a failure).
fn backup_outcome(pods: &[k8s_openapi::api::core::v1::Pod]) -> Option<(bool, String)> {
    pods.iter()
        .filter_map(|p| {
            let c = p
                .status
                .as_ref()?
                .init_container_statuses
                .as_ref()?
                .iter()
                .find(|c| c.name == render::migration_job::BACKUP_CONTAINER)?;
            let t = c.state.as_ref()?.terminated.as_ref()?;
            Some((
                p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                (t.exit_code == 0, t.message.clone().unwrap_or_default()),
            ))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, outcome)| outcome)
}

/// The termination message of the newest terminated migrate container of the Job's pods.
fn migrate_message(pods: &[k8s_openapi::api::core::v1::Pod]) -> Option<String> {
    pods.iter()
        .filter_map(|p| {
            let c = p
                .status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .iter()
                .find(|c| c.name == render::migration_job::CONTAINER)?;
            let t = c.state.as_ref()?.terminated.as_ref()?;
            Some((t.finished_at.clone(), t.message.clone()?))
        })
        .max_by(|a, b| a.0.as_ref().map(|t| t.0).cmp(&b.0.as_ref().map(|t| t.0)))
        .map(|(_, m)| m)
}

/// Every instance this process watches, as its status shows it (for the fleet).
fn peers(ctx: &Context) -> Vec<fleet::Peer> {
    let Ok(stores) = ctx.instances.read() else {
        return Vec::new();
    };
    stores
        .iter()
        .flat_map(|s| s.state())
        .map(|i| {
            let status = i.status.as_ref();
            // Pending: the spec's image is not the one the pods were last reported running (a new instance
            // is not: it has no running image, and installs without an upgrade).
            let pending = match (
                effective(&i, &ctx.config),
                status.and_then(|s| s.image.as_deref()),
            ) {
                (Ok(v), Some(running)) => v.image != running,
                _ => false,
            };
            fleet::Peer {
                key: (i.namespace().unwrap_or_default(), i.name_any()),
                phase: status.and_then(|s| s.upgrade.as_ref()).map(|u| u.phase),
                priority: upgrade::priority(i.labels()),
                pending,
            }
        })
        .collect()
}

/// The instance's server pods, read only while a rollout is incomplete (IO, uncached: a pod cache would cost
/// memory in proportion to every tenant's pods). A failed list only loses the diagnosis, never the reconcile.
async fn server_pods(ctx: &Context, valid: &validate::ValidInstance) -> Vec<k8s_openapi::api::core::v1::Pod> {
    let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(ctx.client.clone(), &valid.namespace);
    match api
        .list(&kube::api::ListParams::default().labels(&names::selector_string(valid)))
        .await
    {
        Ok(list) => list.items,
        Err(e) => {
            warn!(
                error = &e as &dyn std::error::Error,
                "listing the server pods failed"
            );
            Vec::new()
        }
    }
}

fn index_secrets(ctx: &Context, valid: &validate::ValidInstance) -> Result<(), Error> {
    let mut wanted = inputs::secret_names(valid);
    // The user's TLS Secret is not read (the proxy reads it), but its appearance is a reason to look again.
    if let Some(validate::Tls::Secret(name)) = &valid.exposure.tls {
        wanted.insert(name.clone());
    }
    let mut index = ctx.secret_index.lock().map_err(|_| Error::Poisoned)?;
    for ((ns, secret), instances) in index.iter_mut() {
        if ns == &valid.namespace && !wanted.contains(secret) {
            instances.remove(&valid.name);
        }
    }
    index.retain(|_, instances| !instances.is_empty());
    for secret in wanted {
        index
            .entry((valid.namespace.clone(), secret))
            .or_default()
            .insert(valid.name.clone());
    }
    Ok(())
}

/// Requeues failed reconciles with exponential backoff: 1 s, 2 s, 4 s, … capped at 5 minutes.
pub fn error_policy(obj: Arc<TmiInstance>, err: &Error, ctx: Arc<Context>) -> Action {
    warn!(error = err as &dyn std::error::Error, instance.name = %obj.name_any(), "reconcile failed");
    let attempts = ctx
        .failures
        .lock()
        .map(|mut f| {
            let n = f.entry(ObjectRef::from_obj(obj.as_ref())).or_insert(0);
            *n = n.saturating_add(1);
            *n
        })
        .unwrap_or(1);
    Action::requeue(backoff(attempts))
}

/// Delay before retry number `attempts` (1-based).
pub fn backoff(attempts: u32) -> Duration {
    let secs = 1u64
        .checked_shl(attempts.saturating_sub(1).min(16))
        .unwrap_or(u64::MAX)
        .min(300);
    Duration::from_secs(secs)
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs controllers (one per watched namespace, or one cluster-wide) until `shutdown` resolves; in-flight
/// reconciles finish first.
pub async fn run(
    client: Client,
    config: Config,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let scopes: Vec<Option<String>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().cloned().map(Some).collect()
    };
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let shared = Shared {
        fleet: Arc::new(fleet::Fleet::new(config.upgrades)),
        instances: InstanceStores::default(),
    };
    let controllers = scopes.into_iter().map(|scope| {
        run_scope(
            client.clone(),
            config.clone(),
            metrics.clone(),
            scope,
            shared.clone(),
            shutdown.clone(),
        )
    });
    futures::future::join_all(controllers).await;
}

/// What the controllers of one process share.
#[derive(Clone)]
struct Shared {
    fleet: Arc<fleet::Fleet>,
    instances: InstanceStores,
}

async fn run_scope(
    client: Client,
    config: Config,
    metrics: Arc<Metrics>,
    namespace: Option<String>,
    shared: Shared,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let ns = namespace.as_deref();
    let owned = watcher::Config::default()
        .labels(&names::managed_selector())
        .any_semantic();
    let instances = match &config.instance_selector {
        Some(sel) => watcher::Config::default().labels(sel).any_semantic(),
        None => watcher::Config::default().any_semantic(),
    };
    // The instance cache keeps spec and status (both read), not managedFields (see `cache`).
    let (instance_store, writer) = reflector::store::<TmiInstance>();
    let instance_events =
        watcher(api::<TmiInstance>(&client, ns), instances).modify(|i| cache::trim_meta(i.meta_mut()));
    let mut controller = Controller::for_stream(
        reflector::reflector(writer, instance_events).applied_objects(),
        instance_store,
    )
    .with_config(kube::runtime::controller::Config::default().concurrency(config.concurrency));

    macro_rules! owned_store {
        ($kind:ty) => {{
            let (reader, writer) = reflector::store::<$kind>();
            // Trimmed to what the apply diff and status read before caching (see `cache`).
            let events = watcher(api::<$kind>(&client, ns), owned.clone()).modify(cache::trim_owned::<$kind>);
            let stream = reflector::reflector(writer, events)
                .default_backoff()
                .touched_objects();
            controller = controller.owns_stream(stream);
            reader
        }};
    }
    let service_accounts = owned_store!(ServiceAccount);
    let config_maps = owned_store!(ConfigMap);
    let data_volume_claims = owned_store!(PersistentVolumeClaim);
    let deployments = owned_store!(Deployment);
    let services = owned_store!(Service);
    let pod_disruption_budgets = owned_store!(PodDisruptionBudget);
    let ingresses = owned_store!(Ingress);
    let jobs = owned_store!(Job);
    if let Ok(mut stores) = shared.instances.write() {
        stores.push(controller.store());
    }

    // The optional APIs: watched once discovery shows them (see `cluster`); until then their stores stay
    // empty, and instances that need them are reconciled again when they appear.
    let apis = Arc::new(cluster::OptionalApis::default());
    let (appeared_tx, appeared_rx) = futures::channel::mpsc::unbounded::<()>();
    macro_rules! optional_store {
        ($kind:ty, $api:expr) => {{
            let (reader, writer) = reflector::store::<$kind>();
            let (client, apis, owned, tx) =
                (client.clone(), apis.clone(), owned.clone(), appeared_tx.clone());
            let namespace = namespace.clone();
            let stream = futures::stream::once(async move {
                cluster::wait_for_api(client.clone(), apis, $api, Duration::from_secs(60)).await;
                let _ = tx.unbounded_send(());
                watcher(api::<$kind>(&client, namespace.as_deref()), owned).modify(cache::trim_owned::<$kind>)
            })
            .flatten();
            let stream = reflector::reflector(writer, stream)
                .default_backoff()
                .touched_objects();
            controller = controller.owns_stream(stream);
            reader
        }};
    }
    let http_routes = optional_store!(HTTPRoute, cluster::OptionalApi::Gateway);
    let certificates = optional_store!(Certificate, cluster::OptionalApi::CertManager);
    drop(appeared_tx);
    controller = controller.reconcile_all_on(appeared_rx);

    // Metadata only: the operator learns that a referenced Secret changed without holding its data.
    // Helm release Secrets are large, numerous and never referenced: they stay out of the cache.
    let secret_index: SecretIndex = Arc::default();
    let (secrets_meta, writer) = reflector::store::<PartialObjectMeta<Secret>>();
    let secret_cfg = watcher::Config::default()
        .fields("type!=helm.sh/release.v1")
        .any_semantic();
    let secret_events =
        watcher(api::<PartialObjectMeta<Secret>>(&client, ns), secret_cfg).modify(cache::trim_secret_meta);
    let secret_stream = reflector::reflector(writer, secret_events)
        .default_backoff()
        .touched_objects();
    let index = secret_index.clone();
    controller = controller.watches_stream(secret_stream, move |secret: PartialObjectMeta<Secret>| {
        let key = (secret.namespace().unwrap_or_default(), secret.name_any());
        let instances = index
            .lock()
            .map(|i| i.get(&key).cloned().unwrap_or_default())
            .unwrap_or_default();
        instances
            .into_iter()
            .map(move |name| ObjectRef::new(&name).within(&key.0))
            .collect::<Vec<_>>()
    });

    let stores = Stores {
        service_accounts,
        config_maps,
        data_volume_claims,
        deployments,
        services,
        pod_disruption_budgets,
        ingresses,
        http_routes,
        certificates,
        secrets_meta,
        jobs,
    };
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: config.reporter.clone(),
            instance: None,
        },
    );
    let ctx = Arc::new(Context {
        client,
        config,
        metrics,
        recorder,
        stores: stores.clone(),
        secret_digests: Mutex::default(),
        secret_index,
        failures: Mutex::default(),
        apis,
        ingress_classes: Mutex::default(),
        fleet: shared.fleet,
        instances: shared.instances,
    });

    info!(namespace = ?namespace, "controller starting");
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = &e as &dyn std::error::Error, "reconcile stream");
            }
        })
        .await;
    info!(namespace = ?namespace, "controller stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(9), Duration::from_secs(256));
        assert_eq!(backoff(10), Duration::from_secs(300));
        assert_eq!(backoff(1000), Duration::from_secs(300));
    }
}
