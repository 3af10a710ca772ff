//! The `TmiInstance` custom resource (`tmi.dev/v1alpha1`): types only, no IO.
//!
//! The Rust types are the source of the CRD schema (`tmi-operator crd`). Every field carries a doc comment,
//! which becomes its `description`. Cross-field constraints are CEL rules (`x-kubernetes-validations`) whose
//! messages name the field they constrain, so `kubectl apply` rejects bad input before the operator sees it.
//!
//! Deliberately absent: schema `default`s. A default the apiserver writes into `spec` is drift that GitOps
//! tools report forever; the operator applies its defaults when rendering and reports the effective values
//! in `status`.
//!
//! Sections are optional structs rather than flat fields so that later issues (managed PostgreSQL, upgrades,
//! exposure, the web front end) can add siblings without renaming anything.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::TopologySpreadConstraint;
use k8s_openapi::api::core::v1::{Affinity, EnvFromSource, EnvVar, LocalObjectReference, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of one TMI installation: a tmi-server Deployment and everything it needs.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tmi.dev",
    version = "v1alpha1",
    kind = "TmiInstance",
    namespaced,
    shortname = "tmi",
    category = "tmi",
    status = "TmiInstanceStatus",
    doc = "A TMI (Threat Modeling Improved) installation managed by tmi-operator.",
    scale(
        spec_replicas_path = ".spec.server.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the instance serves at its current generation"
    ),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.version", description = "Running TMI version"),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url", description = "Base URL of the server"),
    printcolumn(
        name = "Upgrade",
        type_ = "string",
        json_path = ".status.upgrade.phase",
        description = "Phase of the latest upgrade: Waiting, Migrating, RollingOut, Succeeded, Failed, Refused or Cancelled"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Reason of the Ready condition"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    selectable = ".spec.version",
    validation = Rule::new("size(self.metadata.name) <= 45 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must be a DNS label of at most 45 characters: child objects and the Service are named after it")
)]
#[x_kube(
    validation = Rule::new("!has(self.database.sqlite) || !has(self.server) || !has(self.server.replicas) || self.server.replicas == 1")
        .message("spec.server.replicas must be 1 when spec.database.sqlite is set: SQLite is one file on one ReadWriteOnce volume")
        .field_path(".server.replicas"),
    validation = Rule::new("!has(self.server) || !has(self.server.replicas) || self.server.replicas <= 1 || has(self.cache)")
        .message("spec.server.replicas > 1 requires spec.cache.external: replicas share collaboration state through Redis")
        .field_path(".server.replicas"),
    validation = Rule::new("!has(self.exposure) || self.exposure.type == 'None' || has(self.hostname)")
        .message("spec.exposure.type Ingress or Gateway requires spec.hostname: routes and certificates are for that name")
        .field_path(".exposure.type"),
    validation = Rule::new("!has(self.auth) || !has(self.auth.devLogin) || !self.auth.devLogin || (has(self.buildMode) && self.buildMode != 'Production')")
        .message("spec.auth.devLogin requires spec.buildMode Development or Test: the dev login issues tokens without a password")
        .field_path(".auth.devLogin"),
)]
#[serde(rename_all = "camelCase")]
pub struct TmiInstanceSpec {
    /// TMI release to run, e.g. `1.0.0`. Selects the default image tag
    /// (`ghcr.io/tmi-operator/tmi-server:<version>`) and is reported in `status.version`.
    #[x_kube(validation = Rule::new("self.matches('^v?[0-9]+\\\\.[0-9]+\\\\.[0-9]+(-[0-9A-Za-z.-]+)?$')")
        .message("spec.version must be a release version such as 1.0.0"))]
    #[schemars(length(max = 64))]
    pub version: String,

    /// Container image override for the server (a digest reference is recommended). When omitted the
    /// operator runs `ghcr.io/tmi-operator/tmi-server:<version>`.
    #[x_kube(validation = Rule::new("self.matches('^[^\\\\s]+$')").message("spec.image must be an image reference without whitespace"))]
    #[schemars(length(min = 1, max = 512))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Secrets in this namespace holding registry credentials for pulling the server image.
    #[schemars(length(max = 8))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,

    /// Runtime mode of the server (`TMI_BUILD_MODE`). `Development` and `Test` allow the dev login provider.
    /// Effective default: `Production`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_mode: Option<BuildMode>,

    /// Public DNS name users reach TMI at, e.g. `tmi.example.com`. Drives the server base URL, the OAuth
    /// callback URL and the allowed CORS origin (`https://<hostname>`). Without it the in-cluster Service URL
    /// is used.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$')")
        .message("spec.hostname must be a lower-case DNS name (RFC 1123), e.g. tmi.example.com"))]
    #[schemars(length(max = 253))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,

    /// Stop reconciling this instance. Existing objects are left as they are; the `Reconciling` condition
    /// reports `Suspended`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,

    /// The tmi-server Deployment: replicas, resources, scheduling, probes and extra environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerSpec>,

    /// Where TMI stores its data. Exactly one of `external` or `sqlite`.
    pub database: DatabaseSpec,

    /// The Redis cache shared by server replicas. Omit for no cache (one replica only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSpec>,

    /// Login providers and administrators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,

    /// Secrets the operator generates, and the references that replace them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<SecretsSpec>,

    /// How version changes happen: whether the operator moves this instance to newer versions by itself, in
    /// fleet waves, and whether the migrate Job backs the database up first (docs/upgrades.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeSpec>,

    /// How users reach TMI from outside the cluster: an Ingress or a Gateway API HTTPRoute for
    /// `spec.hostname`, with WebSocket timeouts and session affinity set for the chosen controller, and TLS
    /// from cert-manager or an existing Secret. Omit (or `type: None`) to keep TMI inside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposure: Option<ExposureSpec>,
}

/// Automated updates and backups before migration.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeSpec {
    /// `Manual` (effective default): run `spec.version`, nothing else. `Patch`: run the operator's default TMI
    /// version (the release it was tested with, `--default-tmi-version`) when that is a newer patch release of
    /// `spec.version` (same major and minor). `Minor`: also when it is a newer minor release (same major).
    /// The version run is reported in `status.upgrade.targetVersion` and `status.version`; `spec` is never
    /// changed. Ignored when `spec.image` is set (an image pins the version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<UpgradePolicy>,

    /// A `pg_dump` of the database before each migration, onto a PersistentVolumeClaim you name (off unless
    /// `enabled`). External PostgreSQL only: a SQLite instance with it enabled is refused (`ConfigValid=False`).
    /// A failed backup fails the upgrade before anything is migrated (`Stalled/BackupFailed`); the old version
    /// keeps serving. Restore with `pg_restore` (docs/upgrades.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<UpgradeBackup>,
}

/// The backup the migrate Job takes before it migrates.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeBackup {
    /// Take the backup. Effective default: `false` (the settings below are kept but unused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,

    /// Where the dumps go: an existing PersistentVolumeClaim in the instance's namespace, writable by UID/GID
    /// 65532 (the pod's `fsGroup`). Each backup is one file,
    /// `<instance>-<fromVersion>-to-<toVersion>-<UTC timestamp>.dump` (`pg_dump --format=custom`), written under
    /// a temporary name and renamed once complete. Size it for `keep` dumps (a custom-format dump is
    /// compressed and holds no index data, so it is usually much smaller than the database on disk).
    pub persistent_volume_claim: BackupVolumeClaim,

    /// Image holding `/bin/sh` and a `pg_dump` (on its `PATH`) whose major version is the server's or newer:
    /// `pg_dump` must never be older than the server it dumps (it refuses to). Effective default:
    /// `docker.io/library/postgres:18-alpine`, which dumps PostgreSQL 9.2 to 18. Pin a digest in production.
    #[x_kube(validation = Rule::new("self.matches('^[^\\\\s]+$')").message("spec.upgrade.backup.image must be an image reference without whitespace"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// How many of this instance's dumps to keep on the volume, the newest first; older ones are removed after
    /// a successful backup. Omit to keep every dump.
    #[schemars(range(min = 1, max = 1000))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<i32>,
}

/// A PersistentVolumeClaim and a directory in it.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackupVolumeClaim {
    /// Name of an existing PersistentVolumeClaim in the instance's namespace. The operator never creates or
    /// deletes it.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$') && size(self) <= 253").message("spec.upgrade.backup.persistentVolumeClaim.claimName must be a PersistentVolumeClaim name"))]
    pub claim_name: String,

    /// Directory inside the volume for the dumps, relative to its root; the backup creates it when missing.
    /// Effective default: the volume's root. Give each instance its own when instances share a claim.
    #[x_kube(validation = Rule::new("!self.startsWith('/') && !self.matches('(^|/)[.][.](/|$)')").message("spec.upgrade.backup.persistentVolumeClaim.subPath must be a relative path without '..'"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
}

/// Which newer versions an instance follows by itself.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UpgradePolicy {
    /// Only `spec.version`.
    #[default]
    Manual,
    /// The operator's default version when it is a newer patch release of `spec.version`.
    Patch,
    /// The operator's default version when it is a newer release with the same major version.
    Minor,
}

/// Runtime mode of the server.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BuildMode {
    /// `TMI_BUILD_MODE=production`.
    #[default]
    Production,
    /// `TMI_BUILD_MODE=dev`.
    Development,
    /// `TMI_BUILD_MODE=test`.
    Test,
}

/// The tmi-server Deployment.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServerSpec {
    /// Number of server pods. Effective default: 1. More than one requires `spec.cache`; `spec.database.sqlite`
    /// requires exactly one. Target of the scale subresource.
    #[schemars(range(min = 0, max = 100))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,

    /// CPU and memory for the server container. Effective default: requests 100m CPU / 128Mi memory,
    /// limit 1Gi memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,

    /// Where server pods may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<Scheduling>,

    /// Extra environment variables for the server container, applied after (and so overriding) the ones the
    /// operator renders. An escape hatch for settings without a typed field.
    // No CEL rule on the names: over an unbounded `EnvVar` list it exceeds the apiserver's cost budget. A bad
    // name is refused when the Deployment is applied and reported as `Stalled/ApplyRejected`.
    #[schemars(length(max = 64))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,

    /// Extra sources of environment variables (Secrets, ConfigMaps) for the server container; variables in
    /// `env` and the operator's own take precedence.
    #[schemars(length(max = 16))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_from: Option<Vec<EnvFromSource>>,

    /// Overrides for the startup, readiness and liveness probes (on `/readyz` and `/livez`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<Probes>,
}

/// Compute resources of the server container.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// Minimum resources, e.g. `{cpu: 100m, memory: 128Mi}`.
    #[x_kube(validation = Rule::new("self.all(k, !string(self[k]).startsWith('-') && isQuantity(string(self[k])) && quantity(string(self[k])).isLessThan(quantity('1Pi')))")
        .message("spec.server.resources.requests values must be non-negative quantities below 1Pi"))]
    #[schemars(extend("maxProperties" = 6))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    /// Maximum resources, e.g. `{memory: 1Gi}`.
    #[x_kube(validation = Rule::new("self.all(k, !string(self[k]).startsWith('-') && isQuantity(string(self[k])) && quantity(string(self[k])).isLessThan(quantity('1Pi')))")
        .message("spec.server.resources.limits values must be non-negative quantities below 1Pi"))]
    #[schemars(extend("maxProperties" = 6))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
}

/// Pod scheduling constraints of the server pods.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Scheduling {
    /// Node labels a server pod's node must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations of the server pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Affinity of the server pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Topology spread constraints; replace the operator's default (spread over zones and nodes when
    /// replicas > 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    /// PriorityClass of the server pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// Probe overrides; unset fields keep the operator's defaults.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Probes {
    /// Startup probe on `/readyz`; gives first-boot migrations time. Default: every 5 s, 120 failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup: Option<ProbeOverride>,
    /// Readiness probe on `/readyz` (database and cache reachable). Default: every 10 s, 3 failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<ProbeOverride>,
    /// Liveness probe on `/livez` (process alive). Default: every 10 s, 6 failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<ProbeOverride>,
}

/// Timing of one probe.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProbeOverride {
    /// Seconds after container start before the first probe.
    #[schemars(range(min = 0, max = 3600))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<i32>,
    /// Seconds between probes.
    #[schemars(range(min = 1, max = 3600))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<i32>,
    /// Seconds after which one probe times out.
    #[schemars(range(min = 1, max = 600))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
    /// Consecutive failures before the probe counts as failed.
    #[schemars(range(min = 1, max = 10000))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<i32>,
}

/// Where TMI stores its data. Exactly one of the fields is set.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("has(self.external) != has(self.sqlite)")
        .message("exactly one of spec.database.external or spec.database.sqlite must be set"),
    validation = Rule::new("has(self.sqlite) == has(oldSelf.sqlite)")
        .message("spec.database cannot switch between sqlite and external: the data would be left behind"),
)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// An existing PostgreSQL database, reached through a URL held in a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalDatabase>,
    /// A SQLite file on a PersistentVolumeClaim the operator creates. Single replica only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqlite: Option<SqliteDatabase>,
}

/// An existing PostgreSQL database.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalDatabase {
    /// Secret key holding the connection URL
    /// (`postgres://user:password@host:5432/db?sslmode=require`), passed as `TMI_DATABASE_URL`.
    pub url_secret_ref: SecretKeyRef,
}

/// SQLite on a PersistentVolumeClaim.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SqliteDatabase {
    /// Size of the volume, e.g. `1Gi`.
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0')) && quantity(self).isLessThan(quantity('64Ti'))")
        .message("spec.database.sqlite.size must be a positive quantity below 64Ti, e.g. 1Gi"))]
    #[schemars(length(max = 32))]
    pub size: String,
    /// StorageClass of the volume; the cluster default when omitted.
    #[schemars(length(max = 253))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// The Redis cache.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.external)")
    .message("spec.cache.external is required when spec.cache is set; omit spec.cache for no cache"))]
#[serde(rename_all = "camelCase")]
pub struct CacheSpec {
    /// An existing Redis server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalCache>,
}

/// An existing Redis server: either a URL in a Secret, or a host with an optional password Secret.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("has(self.urlSecretRef) != has(self.host)")
        .message("exactly one of spec.cache.external.urlSecretRef or spec.cache.external.host must be set"),
    validation = Rule::new("has(self.host) || (!has(self.port) && !has(self.db) && !has(self.passwordSecretRef))")
        .message("spec.cache.external.port, .db and .passwordSecretRef apply only with spec.cache.external.host"),
)]
#[serde(rename_all = "camelCase")]
pub struct ExternalCache {
    /// Secret key holding `redis://[:password@]host:port[/db]`, passed as `TMI_REDIS_URL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret_ref: Option<SecretKeyRef>,
    /// Redis host name (`TMI_REDIS_HOST`).
    #[x_kube(validation = Rule::new("self.matches('^[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?(\\\\.[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?)*$')")
        .message("spec.cache.external.host must be a DNS name"))]
    #[schemars(length(max = 253))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Redis port (`TMI_REDIS_PORT`). Effective default: 6379.
    #[schemars(range(min = 1, max = 65535))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Redis logical database (`TMI_REDIS_DB`). Effective default: 0.
    #[schemars(range(min = 0, max = 15))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<i32>,
    /// Secret key holding the Redis password (`TMI_REDIS_PASSWORD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
}

/// A key of a Secret in the instance's namespace.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')")
        .message("secret name must be a lower-case DNS subdomain"))]
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[x_kube(validation = Rule::new("self.matches('^[-._a-zA-Z0-9]+$')")
        .message("secret key must consist of alphanumerics, '-', '_' or '.'"))]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Login providers and administrators.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Default)]
#[x_kube(
    validation = Rule::new("!has(self.providers) || self.providers.all(p, self.providers.exists_one(q, q.id == p.id))")
        .message("spec.auth.providers[].id must be unique")
        .field_path(".providers"),
    validation = Rule::new("!has(self.administrators) || self.administrators.all(a, (a.provider == 'tmi' && has(self.devLogin) && self.devLogin) || (has(self.providers) && self.providers.exists(p, p.id == a.provider)))")
        .message("spec.auth.administrators[].provider must name a provider in spec.auth.providers (or 'tmi' with spec.auth.devLogin)")
        .field_path(".administrators"),
)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Enable TMI's built-in `tmi` login provider, which signs in any user name without a password
    /// (`OAUTH_PROVIDERS_TMI_ENABLED`). Only allowed with `spec.buildMode` Development or Test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_login: Option<bool>,
    /// OAuth 2.0 / OpenID Connect providers, rendered as `OAUTH_PROVIDERS_<ID>_*` (worked configurations for
    /// common identity providers: docs/sign-in.md).
    #[schemars(length(max = 16))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub providers: Option<Vec<OAuthProvider>>,
    /// Administrators bootstrapped at server start (`TMI_ADMIN_*`). TMI reads one administrator from its
    /// environment, hence at most one entry.
    #[schemars(length(max = 1))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub administrators: Option<Vec<Administrator>>,
    /// Make the first user who signs in an administrator (`TMI_AUTH_AUTO_PROMOTE_FIRST_USER`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_promote_first_user: Option<bool>,
    /// PEM certificates trusted, besides the public roots, for the server's calls to identity providers (an IdP
    /// behind a private CA). Mounted read-only into the server pods (`TMI_OAUTH_CA_FILE`); a changed bundle
    /// rolls them.
    #[serde(default, rename = "trustedCA", skip_serializing_if = "Option::is_none")]
    pub trusted_ca: Option<TrustedCa>,
}

/// One OAuth 2.0 / OpenID Connect provider, rendered one to one as tmi-server's (and upstream TMI's)
/// `OAUTH_PROVIDERS_<ID>_*` variables. With `issuer` it is an OpenID Connect provider: the server's discovery
/// (`<issuer>/.well-known/openid-configuration`) fills every endpoint not given. Without `issuer` it is a plain
/// OAuth 2.0 provider (GitHub style), which needs `authorizationUrl`, `tokenUrl`, a userinfo endpoint and a
/// subject claim mapping. The client id and secret only ever come from Secrets.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("has(self.issuer) || has(self.authorizationUrl)")
        .message("spec.auth.providers[].authorizationUrl is required for a provider without issuer (plain OAuth 2.0); set issuer for an OpenID Connect provider")
        .field_path(".authorizationUrl"),
    validation = Rule::new("has(self.issuer) || has(self.tokenUrl)")
        .message("spec.auth.providers[].tokenUrl is required for a provider without issuer (plain OAuth 2.0); set issuer for an OpenID Connect provider")
        .field_path(".tokenUrl"),
    validation = Rule::new("has(self.issuer) || has(self.userinfoUrl) || has(self.userinfo)")
        .message("spec.auth.providers[].userinfoUrl (or userinfo) is required for a provider without issuer (plain OAuth 2.0): it is where the user's identity comes from")
        .field_path(".userinfoUrl"),
    validation = Rule::new("has(self.issuer) || has(self.subjectClaim) || (has(self.userinfo) && self.userinfo.exists(u, has(u.claims) && has(u.claims.subject)))")
        .message("spec.auth.providers[].subjectClaim (or userinfo[].claims.subject) is required for a provider without issuer (plain OAuth 2.0): the field of the userinfo answer that identifies the user, e.g. id for GitHub")
        .field_path(".subjectClaim"),
    validation = Rule::new("!has(self.issuer) || !has(self.scopes) || 'openid' in self.scopes")
        .message("spec.auth.providers[].scopes must include openid for an OpenID Connect provider (issuer set)")
        .field_path(".scopes"),
    validation = Rule::new("!has(self.userinfo) || !(has(self.userinfoUrl) || has(self.subjectClaim) || has(self.emailClaim) || has(self.nameClaim))")
        .message("spec.auth.providers[].userinfo cannot be combined with the shorthand userinfoUrl, subjectClaim, emailClaim and nameClaim: move them into userinfo[0]")
        .field_path(".userinfo"),
    validation = Rule::new("has(self.userinfoUrl) || !(has(self.subjectClaim) || has(self.emailClaim) || has(self.nameClaim))")
        .message("spec.auth.providers[].subjectClaim, emailClaim and nameClaim map the answer of userinfoUrl, which they require")
        .field_path(".userinfoUrl"),
)]
#[serde(rename_all = "camelCase")]
pub struct OAuthProvider {
    /// Provider id: lower-case letters, digits and `-`; becomes `<ID>` in `OAUTH_PROVIDERS_<ID>_*` (upper-cased,
    /// `-` as `_`) and the `idp` of TMI's sign-in URLs. `tmi` is reserved for the dev login.
    #[x_kube(
        validation = Rule::new("self.matches('^[a-z][a-z0-9]*(-[a-z0-9]+)*$')")
            .message("spec.auth.providers[].id must be lower-case letters, digits and single dashes, e.g. google"),
        validation = Rule::new("self != 'tmi'")
            .message("spec.auth.providers[].id 'tmi' is reserved; use spec.auth.devLogin")
    )]
    #[schemars(length(min = 1, max = 32))]
    pub id: String,
    /// Name shown on the sign-in button (`NAME`). Default: the id.
    #[schemars(length(max = 64))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Icon shown on the sign-in button (`ICON`): a Font Awesome name or an image URL. Default: the id.
    #[schemars(length(max = 256))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    /// Secret key holding the OAuth client id (`CLIENT_ID`).
    pub client_id_secret_ref: SecretKeyRef,
    /// Secret key holding the OAuth client secret (`CLIENT_SECRET`).
    pub client_secret_secret_ref: SecretKeyRef,
    /// OpenID Connect issuer (`ISSUER`), e.g. `https://accounts.google.com`. Makes the provider an OpenID Connect
    /// one: endpoints not given here are discovered, a nonce is sent and the id_token is verified.
    #[x_kube(validation = Rule::new("self.matches('^https://[^\\\\s/]+[^\\\\s]*$')").message("spec.auth.providers[].issuer must be an https URL"))]
    #[schemars(length(max = 2048))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Authorization endpoint (`AUTHORIZATION_URL`). Required without `issuer`; with it, discovered when omitted.
    #[x_kube(validation = Rule::new("self.matches('^https://[^\\\\s/]+[^\\\\s]*$')").message("spec.auth.providers[].authorizationUrl must be an https URL"))]
    #[schemars(length(max = 2048))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_url: Option<String>,
    /// Token endpoint (`TOKEN_URL`). Required without `issuer`; with it, discovered when omitted.
    #[x_kube(validation = Rule::new("self.matches('^https://[^\\\\s/]+[^\\\\s]*$')").message("spec.auth.providers[].tokenUrl must be an https URL"))]
    #[schemars(length(max = 2048))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    /// JWKS endpoint verifying id_tokens (`JWKS_URL`). Discovered from `issuer` when omitted.
    #[x_kube(validation = Rule::new("self.matches('^https://[^\\\\s/]+[^\\\\s]*$')").message("spec.auth.providers[].jwksUrl must be an https URL"))]
    #[schemars(length(max = 2048))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// Scopes to request (`SCOPES`, comma-separated), e.g. `[openid, email, profile]`. Must include `openid` for
    /// an OpenID Connect provider. Effective default: `openid, profile, email` with `issuer`, none without.
    #[x_kube(validation = Rule::new("self.all(s, s.matches('^[!#-\\\\[\\\\]-~]+$') && !s.contains(','))")
        .message("spec.auth.providers[].scopes must be OAuth scope tokens (printable ASCII without spaces, commas, quotes or backslashes)"))]
    #[schemars(length(max = 32), inner(length(min = 1, max = 128)))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// Shorthand for `userinfo[0].url` (`USERINFO_URL`): the userinfo endpoint, called with the access token.
    /// Discovered from `issuer` when omitted. Not combined with `userinfo`.
    #[x_kube(validation = Rule::new("self.matches('^https://[^\\\\s/]+[^\\\\s]*$')").message("spec.auth.providers[].userinfoUrl must be an https URL"))]
    #[schemars(length(max = 2048))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userinfo_url: Option<String>,
    /// Shorthand for `userinfo[0].claims.subject` (`USERINFO_CLAIMS_SUBJECT_CLAIM`), e.g. `id` for GitHub.
    #[schemars(length(min = 1, max = 128))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_claim: Option<String>,
    /// Shorthand for `userinfo[0].claims.email` (`USERINFO_CLAIMS_EMAIL_CLAIM`).
    #[schemars(length(min = 1, max = 128))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_claim: Option<String>,
    /// Shorthand for `userinfo[0].claims.name` (`USERINFO_CLAIMS_NAME_CLAIM`).
    #[schemars(length(min = 1, max = 128))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_claim: Option<String>,
    /// Userinfo endpoints, called in this order with the access token, and where each answer holds the user's
    /// claims: the first entry is the primary endpoint (`USERINFO_URL`, `USERINFO_CLAIMS_*`), the second the
    /// secondary (`USERINFO_SECONDARY_*`), the third the additional one (`USERINFO_ADDITIONAL_*`). The first
    /// endpoint to answer a claim wins. Not combined with the shorthand `userinfoUrl`/`*Claim` fields.
    #[schemars(length(min = 1, max = 3))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userinfo: Option<Vec<UserinfoEndpoint>>,
    /// Extra authorization-request parameters (`ADDITIONAL_PARAMS_<NAME>`), e.g. `{access_type: offline}` or
    /// `{hd: example.com}`. The parameters the server sets itself (`response_type`, `client_id`,
    /// `redirect_uri`, `scope`, `state`, `nonce`, `code_challenge`, `code_challenge_method`, `client_secret`)
    /// are refused.
    #[x_kube(
        validation = Rule::new("self.all(k, k.matches('^[a-z][a-z0-9_]{0,63}$'))")
            .message("spec.auth.providers[].additionalParams keys must be lower-case parameter names (letters, digits and _), e.g. access_type"),
        validation = Rule::new("self.all(k, !(k in ['response_type', 'client_id', 'redirect_uri', 'scope', 'state', 'nonce', 'code_challenge', 'code_challenge_method', 'client_secret']))")
            .message("spec.auth.providers[].additionalParams cannot set response_type, client_id, redirect_uri, scope, state, nonce, code_challenge, code_challenge_method or client_secret: the server sets them itself")
    )]
    #[schemars(extend("maxProperties" = 16, "additionalProperties" = { "type": "string", "minLength": 1, "maxLength": 512 }))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_params: Option<BTreeMap<String, String>>,
    /// `Authorization` header of the userinfo calls (`AUTH_HEADER_FORMAT`), exactly one `%s` standing for the
    /// access token. Effective default: `Bearer %s`; GitHub: `token %s`.
    #[x_kube(validation = Rule::new("self.indexOf('%s') >= 0 && self.indexOf('%s') == self.lastIndexOf('%s') && !self.matches('[\\\\r\\\\n]')")
        .message("spec.auth.providers[].authHeaderFormat must contain exactly one %s (the access token) and no line breaks, e.g. 'token %s'"))]
    #[schemars(length(min = 2, max = 128))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_header_format: Option<String>,
    /// `Accept` header of the userinfo calls (`ACCEPT_HEADER`). Effective default: `application/json`; GitHub:
    /// `application/vnd.github+json`.
    #[x_kube(validation = Rule::new("!self.matches('[\\\\r\\\\n]')")
        .message("spec.auth.providers[].acceptHeader must not contain line breaks"))]
    #[schemars(length(min = 1, max = 256))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept_header: Option<String>,
}

/// One userinfo endpoint and where its answer holds the user's claims.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UserinfoEndpoint {
    /// The endpoint's URL (`USERINFO[_SECONDARY|_ADDITIONAL]_URL`), called with the access token.
    #[x_kube(validation = Rule::new("self.matches('^https://[^\\\\s/]+[^\\\\s]*$')").message("spec.auth.providers[].userinfo[].url must be an https URL"))]
    #[schemars(length(max = 2048))]
    pub url: String,
    /// Where the answer holds each claim (`USERINFO[_SECONDARY|_ADDITIONAL]_CLAIMS_*`). Unmapped claims use the
    /// OpenID Connect names (`sub`, `email`, `name`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims: Option<UserinfoClaims>,
}

/// Claim mappings of one userinfo answer. Each value is a field (`email`), a path (`user.email`, `[0].email`,
/// `[*].name` for a list) or a literal (`true`).
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UserinfoClaims {
    /// The stable user id (`…_CLAIMS_SUBJECT_CLAIM`), e.g. `id` for GitHub.
    #[schemars(length(min = 1, max = 128))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The e-mail address (`…_CLAIMS_EMAIL_CLAIM`), e.g. `[0].email` on GitHub's `/user/emails`.
    #[schemars(length(min = 1, max = 128))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The display name (`…_CLAIMS_NAME_CLAIM`).
    #[schemars(length(min = 1, max = 128))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The given name (`…_CLAIMS_GIVEN_NAME_CLAIM`).
    #[schemars(length(min = 1, max = 128))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    /// The family name (`…_CLAIMS_FAMILY_NAME_CLAIM`).
    #[schemars(length(min = 1, max = 128))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    /// The picture URL (`…_CLAIMS_PICTURE_CLAIM`).
    #[schemars(length(min = 1, max = 128))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub picture: Option<String>,
    /// Whether the e-mail address is verified (`…_CLAIMS_EMAIL_VERIFIED_CLAIM`), e.g. `[0].verified`.
    #[schemars(length(min = 1, max = 128))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<String>,
    /// The user's groups at the provider (`…_CLAIMS_GROUPS_CLAIM`); they become TMI groups of this provider,
    /// usable in ACLs and in `spec.auth.administrators[].group`.
    #[schemars(length(min = 1, max = 128))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<String>,
}

/// PEM certificates the server trusts, besides the public roots, when it calls identity providers (an IdP
/// behind a private CA). Exactly one of `configMapKeyRef` or `secretKeyRef`.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("has(self.configMapKeyRef) != has(self.secretKeyRef)")
        .message("spec.auth.trustedCA needs exactly one of configMapKeyRef or secretKeyRef"),
)]
#[serde(rename_all = "camelCase")]
pub struct TrustedCa {
    /// A ConfigMap key holding the PEM bundle (e.g. the `ca.crt` of a trust-manager Bundle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<ConfigMapKeyRef>,
    /// A Secret key holding the PEM bundle (e.g. the `ca.crt` of a cert-manager CA Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
}

/// A key of a ConfigMap in the instance's namespace.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyRef {
    /// Name of the ConfigMap.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')")
        .message("configmap name must be a lower-case DNS subdomain"))]
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the ConfigMap.
    #[x_kube(validation = Rule::new("self.matches('^[-._a-zA-Z0-9]+$')")
        .message("configmap key must consist of alphanumerics, '-', '_' or '.'"))]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// An administrator: a user (by subject or e-mail) or a group, at one provider.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("has(self.subject) || has(self.email) || has(self.group)")
        .message("spec.auth.administrators[] needs one of subject, email or group"),
    validation = Rule::new("!has(self.group) || (!has(self.subject) && !has(self.email))")
        .message("spec.auth.administrators[].group cannot be combined with subject or email"),
)]
#[serde(rename_all = "camelCase")]
pub struct Administrator {
    /// Provider id the administrator signs in with (`TMI_ADMIN_PROVIDER`).
    #[schemars(length(min = 1, max = 32))]
    pub provider: String,
    /// The user's subject at the provider (`TMI_ADMIN_PROVIDER_ID`).
    #[schemars(length(min = 1, max = 256))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The user's e-mail address (`TMI_ADMIN_EMAIL`).
    #[x_kube(validation = Rule::new("self.matches('^[^@\\\\s]+@[^@\\\\s]+$')").message("spec.auth.administrators[].email must be an e-mail address"))]
    #[schemars(length(max = 254))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// A group at the provider whose members are administrators (`TMI_ADMIN_GROUP_NAME`).
    #[schemars(length(min = 1, max = 256))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// Secrets the operator generates once (in `<name>-generated`) unless a reference replaces them.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretsSpec {
    /// Secret key holding the JWT signing key (`TMI_JWT_SECRET`), instead of the generated one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_secret_ref: Option<SecretKeyRef>,
}

/// How TMI is reached from outside the cluster.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("self.type == 'Ingress' || !has(self.ingress)")
        .message("spec.exposure.ingress is only allowed with spec.exposure.type Ingress")
        .field_path(".ingress"),
    validation = Rule::new("(self.type == 'Gateway') == has(self.gateway)")
        .message("spec.exposure.gateway (its parentRefs) is required with spec.exposure.type Gateway, and only allowed with it")
        .field_path(".gateway"),
    validation = Rule::new("self.type != 'None' || (!has(self.tls) && !has(self.sessionAffinity) && !has(self.websocketIdleTimeoutSeconds))")
        .message("spec.exposure.tls, sessionAffinity and websocketIdleTimeoutSeconds need spec.exposure.type Ingress or Gateway")
        .field_path(".type"),
    validation = Rule::new("!has(self.tls) || !has(self.ingress) || !has(self.ingress.controller) || self.ingress.controller != 'ALB'")
        .message("spec.exposure.tls cannot be used with spec.exposure.ingress.controller ALB: the AWS load balancer terminates TLS with ACM certificates (set alb.ingress.kubernetes.io/certificate-arn in spec.exposure.ingress.annotations)")
        .field_path(".tls"),
)]
#[serde(rename_all = "camelCase")]
pub struct ExposureSpec {
    /// `Ingress` (a networking.k8s.io/v1 Ingress), `Gateway` (a Gateway API HTTPRoute attached to existing
    /// Gateways) or `None` (in-cluster only).
    #[serde(rename = "type")]
    pub type_: ExposureType,
    /// Ingress settings, for `type: Ingress`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressExposure>,
    /// Gateway API settings, required for `type: Gateway`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayExposure>,
    /// TLS for `https://<hostname>`: a cert-manager issuer the operator requests a Certificate from, or an
    /// existing Secret. Without it TMI is served over plain HTTP at `http://<hostname>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Whether the proxy pins a browser to one server pod with a cookie. `Auto`: cookie affinity when more
    /// than one replica runs (Ingress only; on a Gateway `Auto` adds none, see the docs). `Cookie`: always.
    /// `None`: never; collaboration stays correct without it, since replicas share sessions through Redis.
    /// Effective default: `Auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<SessionAffinity>,
    /// Seconds a WebSocket may stay silent before the proxy closes it, where the controller lets a route set
    /// it (ingress-nginx, HAProxy, ALB); the server's keepalive pings are sent more often than this.
    /// Effective default: 3600 (one hour).
    #[schemars(range(min = 30, max = 86400))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket_idle_timeout_seconds: Option<i32>,
}

/// Kind of exposure.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExposureType {
    /// A Kubernetes Ingress.
    Ingress,
    /// A Gateway API HTTPRoute.
    Gateway,
    /// Nothing outside the cluster.
    None,
}

/// Session affinity at the proxy.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionAffinity {
    /// Cookie affinity when more than one replica runs.
    Auto,
    /// Always cookie affinity.
    Cookie,
    /// No affinity.
    None,
}

/// The Ingress the operator renders.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct IngressExposure {
    /// IngressClass to use; the cluster's default IngressClass when omitted.
    #[schemars(length(min = 1, max = 253))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// Which controller's annotations to set for WebSockets and affinity. `Auto` (effective default) reads the
    /// IngressClass's `spec.controller`; an unknown controller gets no annotations (say which one it is here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<IngressController>,
    /// Extra annotations on the Ingress, merged over the ones the operator sets. Annotations that carry
    /// configuration snippets (any key containing `snippet`) are refused: they let a tenant inject proxy
    /// configuration.
    #[x_kube(validation = Rule::new("self.all(k, !k.contains('snippet'))")
        .message("spec.exposure.ingress.annotations must not carry configuration snippets (keys containing 'snippet'): they inject raw proxy configuration"))]
    #[schemars(extend("maxProperties" = 64))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Ingress controller presets.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum IngressController {
    /// From the IngressClass's `spec.controller`.
    Auto,
    /// ingress-nginx (`k8s.io/ingress-nginx`).
    Nginx,
    /// Traefik (`traefik.io/ingress-controller`).
    Traefik,
    /// HAProxy Kubernetes Ingress Controller (`haproxy.org/ingress-controller/...`).
    HAProxy,
    /// AWS Load Balancer Controller (`ingress.k8s.aws/alb`).
    #[serde(rename = "ALB")]
    Alb,
    /// Any other controller: only the Ingress itself and the user's annotations.
    Generic,
}

/// The HTTPRoute the operator renders.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayExposure {
    /// Gateways (or their listeners) the route attaches to. Each Gateway must allow routes from this
    /// namespace, and serve the TLS certificate itself (see the docs).
    #[schemars(length(min = 1, max = 8))]
    pub parent_refs: Vec<GatewayParentRef>,
}

/// A Gateway the route attaches to.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayParentRef {
    /// Name of the Gateway.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the Gateway; the instance's namespace when omitted.
    #[schemars(length(min = 1, max = 63))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Listener of the Gateway to attach to; every listener that accepts the route when omitted.
    #[schemars(length(min = 1, max = 253))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// Where the TLS certificate comes from. Exactly one of the fields is set.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.issuerRef) != has(self.secretName)")
    .message("exactly one of spec.exposure.tls.issuerRef or spec.exposure.tls.secretName must be set"))]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// A cert-manager `Issuer` or `ClusterIssuer`: the operator creates a `Certificate` for `spec.hostname`
    /// (Secret `<name>-tls`) and reports its readiness as `CertificateReady`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,
    /// An existing `kubernetes.io/tls` Secret in this namespace holding the certificate for `spec.hostname`.
    #[schemars(length(min = 1, max = 253))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
}

/// A cert-manager issuer.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// Name of the issuer.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// `Issuer` (in this namespace) or `ClusterIssuer`.
    pub kind: IssuerKind,
}

/// Kind of a cert-manager issuer.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssuerKind {
    /// A namespaced `Issuer`.
    Issuer,
    /// A `ClusterIssuer`.
    ClusterIssuer,
}

/// Observed state, written only by the operator.
// The schema defaults an absent status to `{observedGeneration: 0}`. The API server applies it when it reads
// the object, so a TmiInstance the operator has not yet seen shows a generation ahead of its status, and
// kstatus (Flux, `kubectl wait`, cli-utils) reads it as InProgress instead of Current: without it, a freshly
// applied object looks healthy until the operator's first status write. Users never see it as drift: status is
// not part of their manifests. (e2e/tests/gitops.rs checks this with the real kstatus library.)
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("default" = {"observedGeneration": 0}))]
pub struct TmiInstanceStatus {
    /// The `metadata.generation` the operator last reconciled completely.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` and `Stalled` (kstatus) plus `ConfigValid`, `SecretsResolved`,
    /// `ServerAvailable`, and with `spec.exposure` `ExposureReady` and `CertificateReady`; each carries the
    /// generation it describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// Where users reach the server: `https://<hostname>` once TLS is configured and its certificate ready,
    /// `http://<hostname>` when exposed without TLS, and the in-cluster Service URL otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// TMI version of the running server pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Image of the server pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Server pods (scale subresource `statusReplicasPath`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Server pods that are Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Label selector of the server pods (scale subresource `labelSelectorPath`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Effective settings after operator defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective: Option<EffectiveSettings>,
    /// The latest version change: its phase (the `Upgrade` column of `kubectl get tmi`), its migrate Job, and
    /// when each step happened. Absent until the first version change after creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeStatus>,
}

/// Where an upgrade stands. A version change runs `tmi-server migrate` with the new image as a Job first, and
/// rolls the Deployment only once the Job succeeded (docs/upgrades.md).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpgradePhase {
    /// Queued behind the operator's limit on upgrades at once (or a paused fleet); the old version serves.
    Waiting,
    /// The migrate Job runs with the new image; the old version serves.
    Migrating,
    /// The migration succeeded; the Deployment rolls to the new image.
    RollingOut,
    /// The new version serves.
    Succeeded,
    /// The migration (or the rollout) failed; the old version keeps serving. Set `spec.version` back to recover.
    Failed,
    /// The database's schema is newer than the target version knows (a downgrade below it); nothing changed.
    Refused,
    /// `spec.version` went back before the upgrade finished; the old version serves.
    Cancelled,
}

/// The latest version change of an instance.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStatus {
    /// Where the upgrade stands.
    pub phase: UpgradePhase,
    /// Version the server ran when the change was requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_version: Option<String>,
    /// Version being moved to.
    pub target_version: String,
    /// Image being moved to.
    pub target_image: String,
    /// Name of the migrate Job (kept for a day after it finishes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// What is happening, or what went wrong (the tail of the Job's output, credentials masked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The instance's place in the fleet's upgrade order (label `tmi.dev/upgrade-priority`, lower first;
    /// effective default 100).
    pub priority: i32,
    /// When the version change was first seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// When the upgrade got its slot and its migrate Job was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// When the migrate Job completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrated_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// When the new version was rolled out (or the upgrade failed, was refused or cancelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// Schema version of the database after the last successful migration (its highest migration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<i64>,
    /// The version whose migrate Job brought the database to `schemaVersion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_migrated_by: Option<String>,
    /// The dump the migrate Job wrote before this upgrade's migration (`spec.upgrade.backup`): its file name
    /// in the backup volume's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
}

/// Effective settings: the operator's defaults applied to the spec.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveSettings {
    /// Desired server replicas.
    pub replicas: i32,
    /// `TMI_BUILD_MODE` value.
    pub build_mode: String,
    /// `External` or `Sqlite`.
    pub database: String,
    /// `External` or `None`.
    pub cache: String,
    /// Name of the Secret holding the JWT key.
    pub jwt_secret: String,
    /// SHA-256 over every referenced Secret and ConfigMap key, as annotated on the pod template.
    pub inputs_hash: String,
    /// `Ingress`, `Gateway` or `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposure: Option<String>,
    /// The Ingress controller preset in use (`Nginx`, `Traefik`, `HAProxy`, `ALB`, `Generic`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_controller: Option<String>,
    /// `Cookie` or `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;
    use serde_json::json;

    #[test]
    fn crd_shape() {
        let crd = serde_json::to_value(TmiInstance::crd()).unwrap();
        let spec = &crd["spec"];
        assert_eq!(spec["scope"], "Namespaced");
        assert_eq!(spec["names"]["shortNames"], json!(["tmi"]));
        assert_eq!(spec["names"]["categories"], json!(["tmi"]));
        let version = &spec["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert_eq!(version["subresources"]["status"], json!({}));
        assert_eq!(
            version["subresources"]["scale"]["specReplicasPath"],
            ".spec.server.replicas"
        );
        assert_eq!(
            version["subresources"]["scale"]["statusReplicasPath"],
            ".status.replicas"
        );
        let columns: Vec<&str> = version["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(columns, ["Ready", "Version", "URL", "Upgrade", "Reason", "Age"]);
    }

    /// Every property in the schema has a description, and none has a default (defaults become GitOps drift),
    /// but for the one deliberate default: an absent status reads as `{observedGeneration: 0}`.
    #[test]
    fn every_field_documented_and_no_defaults() {
        fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
            assert!(schema.get("default").is_none(), "{path} has a schema default");
            if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
                for (name, prop) in props {
                    let p = format!("{path}.{name}");
                    if prop.get("description").is_none()
                        && !["apiVersion", "kind", "metadata"].contains(&name.as_str())
                    {
                        missing.push(p.clone());
                    }
                    walk(&p, prop, missing);
                }
            }
            for key in ["items", "additionalProperties"] {
                if let Some(inner) = schema.get(key).filter(|v| v.is_object()) {
                    walk(&format!("{path}[]"), inner, missing);
                }
            }
        }
        let crd = serde_json::to_value(TmiInstance::crd()).unwrap();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut missing = Vec::new();
        walk("", &schema["properties"]["spec"], &mut missing);
        let mut status = schema["properties"]["status"].clone();
        let status_default = status.as_object_mut().unwrap().remove("default");
        assert_eq!(status_default, Some(json!({ "observedGeneration": 0 })));
        walk("", &status, &mut missing);
        assert!(missing.is_empty(), "fields without description: {missing:#?}");
    }
}
