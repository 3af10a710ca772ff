//! The tmi-server Deployment. Pure.
//!
//! Defaults chosen here (and reported as effective values in status, not written to the spec):
//! - probes: startup and readiness on `/readyz` (database and cache reachable; the startup budget covers
//!   first-boot migrations), liveness on `/livez` (process alive only, so a database outage does not restart
//!   healthy pods);
//! - a restricted security context: non-root, read-only root filesystem with an `emptyDir` `/tmp`, no
//!   privilege escalation, all capabilities dropped, seccomp `RuntimeDefault`;
//! - `RollingUpdate` only with a cache (replicas share state through Redis); otherwise `Recreate`, so two
//!   server processes never hold separate collaboration state, and a SQLite volume is never mounted twice;
//! - topology spread over zones and nodes when replicas > 1, unless `scheduling.topologySpreadConstraints`
//!   is given;
//! - a 5 s `preStop` sleep (the kubelet's sleep action), so that endpoints are gone before SIGTERM, and
//!   `terminationMessagePolicy: FallbackToLogsOnError`, so that a crash's last log line reaches the status;
//! - `enableServiceLinks: false`: a Service named `tmi` would otherwise inject `TMI_*` variables that the
//!   server reads as configuration.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapEnvSource, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext,
    SleepAction, TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::controller::{
    names,
    validate::{CaBundle, Cache, Database, ValidInstance},
};
use crate::crd::{ProbeOverride, SecretKeyRef};

/// Seconds a terminating server pod keeps serving before SIGTERM, while its endpoint is removed everywhere.
const PRE_STOP_SECONDS: i64 = 5;

/// Non-root UID/GID of the server process (the distroless `nonroot` user).
const RUN_AS: i64 = 65532;

/// Where `spec.auth.trustedCA` is mounted (read-only), and the file name its key is projected to; the
/// ConfigMap points `TMI_OAUTH_CA_FILE` there.
pub const TRUSTED_CA_DIR: &str = "/etc/tmi/trusted-ca";
/// See [`TRUSTED_CA_DIR`].
pub const TRUSTED_CA_FILE: &str = "ca.crt";

/// Name of the trusted CA's volume.
const TRUSTED_CA_VOLUME: &str = "trusted-ca";

/// Renders the Deployment; `inputs_hash` goes on the pod template so that edited inputs roll the pods.
pub fn render(i: &ValidInstance, inputs_hash: &str) -> Deployment {
    let rolling = i.cache != Cache::None;
    let strategy = if rolling {
        DeploymentStrategy {
            type_: Some("RollingUpdate".to_owned()),
            rolling_update: Some(RollingUpdateDeployment {
                max_surge: Some(IntOrString::Int(1)),
                max_unavailable: Some(IntOrString::Int(0)),
            }),
        }
    } else {
        DeploymentStrategy {
            type_: Some("Recreate".to_owned()),
            rolling_update: None,
        }
    };
    Deployment {
        metadata: names::child_meta(i, names::deployment(i)),
        spec: Some(DeploymentSpec {
            replicas: Some(i.replicas),
            selector: names::pod_selector(i),
            strategy: Some(strategy),
            revision_history_limit: Some(5),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(names::labels(i)),
                    annotations: Some(BTreeMap::from([(
                        names::INPUTS_HASH_ANNOTATION.to_owned(),
                        inputs_hash.to_owned(),
                    )])),
                    ..Default::default()
                }),
                spec: Some(pod_spec(i)),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn pod_spec(i: &ValidInstance) -> PodSpec {
    let mut volumes = vec![Volume {
        name: "tmp".to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }];
    if let Database::Sqlite { .. } = i.database {
        volumes.push(Volume {
            name: "data".to_owned(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: names::data_volume_claim(i),
                read_only: None,
            }),
            ..Default::default()
        });
    }
    if let Some(ca) = &i.trusted_ca {
        // Only the referenced key, under a fixed name; world-readable (certificates are public), read-only.
        let items = |key: &str| {
            Some(vec![KeyToPath {
                key: key.to_owned(),
                path: TRUSTED_CA_FILE.to_owned(),
                mode: None,
            }])
        };
        let mut volume = Volume {
            name: TRUSTED_CA_VOLUME.to_owned(),
            ..Default::default()
        };
        match ca {
            CaBundle::ConfigMap(r) => {
                volume.config_map = Some(ConfigMapVolumeSource {
                    name: r.name.clone(),
                    items: items(&r.key),
                    default_mode: Some(0o444),
                    optional: None,
                })
            }
            CaBundle::Secret(r) => {
                volume.secret = Some(SecretVolumeSource {
                    secret_name: Some(r.name.clone()),
                    items: items(&r.key),
                    default_mode: Some(0o444),
                    optional: None,
                })
            }
        }
        volumes.push(volume);
    }
    let s = &i.scheduling;
    let spread = s
        .topology_spread_constraints
        .clone()
        .or_else(|| (i.replicas > 1).then(|| default_spread(i)));
    PodSpec {
        service_account_name: Some(names::service_account(i)),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        image_pull_secrets: (!i.image_pull_secrets.is_empty()).then(|| i.image_pull_secrets.clone()),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            fs_group: Some(RUN_AS),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        termination_grace_period_seconds: Some(30),
        containers: vec![container(i)],
        volumes: Some(volumes),
        node_selector: s.node_selector.clone(),
        tolerations: s.tolerations.clone(),
        affinity: s.affinity.clone(),
        topology_spread_constraints: spread,
        priority_class_name: s.priority_class_name.clone(),
        ..Default::default()
    }
}

fn default_spread(i: &ValidInstance) -> Vec<TopologySpreadConstraint> {
    ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
        .into_iter()
        .map(|key| TopologySpreadConstraint {
            max_skew: 1,
            topology_key: key.to_owned(),
            when_unsatisfiable: "ScheduleAnyway".to_owned(),
            label_selector: Some(names::pod_selector(i)),
            ..Default::default()
        })
        .collect()
}

pub(crate) fn container(i: &ValidInstance) -> Container {
    let mut mounts = vec![VolumeMount {
        name: "tmp".to_owned(),
        mount_path: "/tmp".to_owned(),
        ..Default::default()
    }];
    if let Database::Sqlite { .. } = i.database {
        mounts.push(VolumeMount {
            name: "data".to_owned(),
            mount_path: names::DATA_MOUNT_PATH.to_owned(),
            ..Default::default()
        });
    }
    if i.trusted_ca.is_some() {
        mounts.push(VolumeMount {
            name: TRUSTED_CA_VOLUME.to_owned(),
            mount_path: TRUSTED_CA_DIR.to_owned(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    let mut env_from = vec![EnvFromSource {
        config_map_ref: Some(ConfigMapEnvSource {
            name: names::config_map(i),
            optional: None,
        }),
        ..Default::default()
    }];
    env_from.extend(i.env_from.iter().cloned());
    let mut env = secret_env(i);
    env.extend(i.env.iter().cloned());
    let [startup, readiness, liveness] = &i.probes;
    Container {
        name: "server".to_owned(),
        image: Some(i.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        ports: Some(vec![ContainerPort {
            name: Some("http".to_owned()),
            container_port: names::SERVER_PORT,
            protocol: Some("TCP".to_owned()),
            ..Default::default()
        }]),
        env_from: Some(env_from),
        env: Some(env),
        resources: Some(resources(i)),
        startup_probe: Some(probe("/readyz", 5, 120, startup)),
        readiness_probe: Some(probe("/readyz", 10, 3, readiness)),
        liveness_probe: Some(probe("/livez", 10, 6, liveness)),
        // Kubernetes removes a terminating pod from the Service's endpoints while it sends SIGTERM; kube-proxy
        // and ingress controllers apply that a moment later. Waiting first keeps new connections from reaching a
        // server that has stopped accepting them. (The image has no shell: the kubelet's own sleep action.)
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: PRE_STOP_SECONDS,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        // The server's last log line says why it stopped (e.g. an unreachable database); the kubelet keeps it
        // in the container status, where the operator reads it into the instance's conditions.
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: None,
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        ..Default::default()
    }
}

/// Environment entries whose values live in Secrets: database and cache credentials, the JWT key and OAuth
/// client credentials. Each is a `secretKeyRef`, so no secret value is ever part of the Deployment.
pub fn secret_env(i: &ValidInstance) -> Vec<EnvVar> {
    let mut env = Vec::new();
    let mut from = |name: String, r: &SecretKeyRef| {
        env.push(EnvVar {
            name,
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: r.name.clone(),
                    key: r.key.clone(),
                    optional: None,
                }),
                ..Default::default()
            }),
        })
    };
    if let Database::External { url } = &i.database {
        from("TMI_DATABASE_URL".to_owned(), url);
    }
    match &i.cache {
        Cache::None => {}
        Cache::Url(url) => from("TMI_REDIS_URL".to_owned(), url),
        Cache::Host { password, .. } => {
            if let Some(p) = password {
                from("TMI_REDIS_PASSWORD".to_owned(), p);
            }
        }
    }
    from("TMI_JWT_SECRET".to_owned(), &i.jwt);
    for p in &i.providers {
        let id = names::provider_env_id(&p.id);
        from(format!("OAUTH_PROVIDERS_{id}_CLIENT_ID"), &p.client_id_secret_ref);
        from(
            format!("OAUTH_PROVIDERS_{id}_CLIENT_SECRET"),
            &p.client_secret_secret_ref,
        );
    }
    env
}

fn resources(i: &ValidInstance) -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_owned());
    match &i.resources {
        Some(r) => ResourceRequirements {
            requests: r.requests.clone(),
            limits: r.limits.clone(),
            ..Default::default()
        },
        None => ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), q("100m")),
                ("memory".to_owned(), q("128Mi")),
            ])),
            limits: Some(BTreeMap::from([("memory".to_owned(), q("1Gi"))])),
            ..Default::default()
        },
    }
}

fn probe(path: &str, period: i32, failures: i32, o: &Option<ProbeOverride>) -> Probe {
    let o = o.clone().unwrap_or_default();
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("http".to_owned()),
            scheme: Some("HTTP".to_owned()),
            ..Default::default()
        }),
        initial_delay_seconds: o.initial_delay_seconds,
        period_seconds: Some(o.period_seconds.unwrap_or(period)),
        timeout_seconds: Some(o.timeout_seconds.unwrap_or(3)),
        failure_threshold: Some(o.failure_threshold.unwrap_or(failures)),
        success_threshold: Some(1),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::test_support::{EXTERNAL, FULL, SIGN_IN, SQLITE, valid_from_yaml};
    use serde_json::json;

    #[test]
    fn restricted_security_context_and_probes() {
        let d = serde_json::to_value(render(&valid_from_yaml(EXTERNAL), "h1")).unwrap();
        let pod = &d["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], json!(true));
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            json!("RuntimeDefault")
        );
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], json!(true));
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], json!(false));
        assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(c["startupProbe"]["httpGet"]["path"], json!("/readyz"));
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], json!("/readyz"));
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], json!("/livez"));
        assert_eq!(c["image"], json!("ghcr.io/tmi-operator/tmi-server:1.2.3"));
        assert_eq!(
            d["spec"]["template"]["metadata"]["annotations"]["tmi.dev/inputs-hash"],
            json!("h1")
        );
        assert_eq!(d["spec"]["strategy"]["type"], json!("Recreate"));
        assert_eq!(pod["enableServiceLinks"], json!(false));
        assert!(pod.get("topologySpreadConstraints").is_none());
    }

    #[test]
    fn secrets_are_references_only() {
        let i = valid_from_yaml(FULL);
        let env = secret_env(&i);
        let names: Vec<_> = env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "TMI_DATABASE_URL",
                "TMI_REDIS_PASSWORD",
                "TMI_JWT_SECRET",
                "OAUTH_PROVIDERS_AZURE_AD_CLIENT_ID",
                "OAUTH_PROVIDERS_AZURE_AD_CLIENT_SECRET",
                "OAUTH_PROVIDERS_GITHUB_CLIENT_ID",
                "OAUTH_PROVIDERS_GITHUB_CLIENT_SECRET",
            ]
        );
        assert!(env.iter().all(|e| e.value.is_none()));
    }

    #[test]
    fn several_replicas_roll_and_spread() {
        let i = valid_from_yaml(FULL);
        let d = serde_json::to_value(render(&i, "h")).unwrap();
        assert_eq!(d["spec"]["replicas"], json!(3));
        assert_eq!(d["spec"]["strategy"]["type"], json!("RollingUpdate"));
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], json!(0));
        let spread = d["spec"]["template"]["spec"]["topologySpreadConstraints"]
            .as_array()
            .unwrap();
        assert_eq!(spread.len(), 2);
        // User env comes last, so it overrides the operator's entries.
        let env = d["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap();
        assert_eq!(
            env.last().unwrap()["name"],
            json!("TMI_OAUTH_CLIENT_CALLBACK_ALLOWLIST")
        );
        // Probe override keeps the unset fields' defaults.
        let startup = &d["spec"]["template"]["spec"]["containers"][0]["startupProbe"];
        assert_eq!(startup["failureThreshold"], json!(300));
        assert_eq!(startup["periodSeconds"], json!(5));
    }

    /// `spec.auth.trustedCA` is mounted read-only, only the referenced key, at the file `TMI_OAUTH_CA_FILE`
    /// names; from a Secret as from a ConfigMap. The client credentials stay `secretKeyRef`s.
    #[test]
    fn trusted_ca_is_mounted_read_only() {
        let i = valid_from_yaml(SIGN_IN);
        let d = serde_json::to_value(render(&i, "h")).unwrap();
        let pod = &d["spec"]["template"]["spec"];
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "trusted-ca")
            .unwrap();
        assert_eq!(
            volume["configMap"],
            json!({ "name": "corp-ca", "items": [{ "key": "ca.pem", "path": "ca.crt" }], "defaultMode": 0o444 })
        );
        let mount = pod["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "trusted-ca")
            .unwrap();
        assert_eq!(
            mount,
            &json!({ "name": "trusted-ca", "mountPath": "/etc/tmi/trusted-ca", "readOnly": true })
        );
        let names: Vec<_> = secret_env(&i).into_iter().map(|e| e.name).collect();
        assert!(
            names.contains(&"OAUTH_PROVIDERS_KEYCLOAK_CLIENT_SECRET".to_owned()),
            "{names:?}"
        );

        let mut from_secret = crate::controller::test_support::instance_from_yaml(SIGN_IN);
        from_secret.spec.auth.as_mut().unwrap().trusted_ca = Some(crate::crd::TrustedCa {
            config_map_key_ref: None,
            secret_key_ref: Some(SecretKeyRef {
                name: "idp-ca".into(),
                key: "ca.crt".into(),
            }),
        });
        let i = crate::controller::validate::validate(&from_secret).unwrap();
        let d = serde_json::to_value(render(&i, "h")).unwrap();
        let volume = d["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "trusted-ca")
            .unwrap()
            .clone();
        assert_eq!(volume["secret"]["secretName"], json!("idp-ca"));
        assert_eq!(
            volume["secret"]["items"][0],
            json!({ "key": "ca.crt", "path": "ca.crt" })
        );
        assert!(volume.get("configMap").is_none());
    }

    #[test]
    fn sqlite_mounts_the_claim() {
        let d = serde_json::to_value(render(&valid_from_yaml(SQLITE), "h")).unwrap();
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(
            pod["volumes"][1]["persistentVolumeClaim"]["claimName"],
            json!("notes-data")
        );
        assert_eq!(
            pod["containers"][0]["volumeMounts"][1]["mountPath"],
            json!("/data")
        );
        assert_eq!(d["spec"]["strategy"]["type"], json!("Recreate"));
    }
}
