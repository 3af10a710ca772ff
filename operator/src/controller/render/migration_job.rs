//! The migrate Job of an upgrade and its ServiceAccount. Pure.
//!
//! The Job runs `tmi-server migrate` with the new image and the server's own environment (the same ConfigMap,
//! Secret references, `env`/`envFrom`, resources, scheduling and restricted security context), under a
//! ServiceAccount of its own without an API token. Choices:
//! - `backoffLimit: 1`: one retry covers a dropped connection; a migration that fails twice is a bad
//!   release, and retrying longer only delays the report;
//! - a pod-failure policy that fails the Job at once on exit code 3 (the database's schema is newer than the
//!   image knows): retrying cannot help;
//! - `activeDeadlineSeconds` (operator flag) bounds a migration that hangs on a lock;
//! - `ttlSecondsAfterFinished`: a day, long enough to read its logs;
//! - the container writes its one-line JSON result to the termination-message file, where the operator
//!   reads it from the pod status (`FallbackToLogsOnError` keeps the log tail when it could not write it).

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{PodTemplateSpec, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::controller::render::deployment;
use crate::controller::{names, validate::ValidInstance};

/// Name of the Job's container.
pub const CONTAINER: &str = "migrate";
/// Where the container writes its result (the kubelet's default termination-message path).
pub const RESULT_FILE: &str = "/dev/termination-log";
/// Exit code of `tmi-server migrate` for a database whose schema is newer than the image knows.
pub const EXIT_SCHEMA_TOO_NEW: i32 = 3;
/// Seconds a finished Job (and its pod, with the logs) is kept.
const TTL_SECONDS: i32 = 86_400;

/// Labels of the Job and its pods: the instance's, with `component: migrate` (so the Service never selects
/// the pod, and the server-pod listing never sees it).
pub fn labels(i: &ValidInstance) -> BTreeMap<String, String> {
    let mut l = names::labels(i);
    l.insert(
        names::COMPONENT_LABEL.to_owned(),
        names::MIGRATE_COMPONENT.to_owned(),
    );
    l
}

/// The Jobs' ServiceAccount.
pub fn service_account(i: &ValidInstance) -> ServiceAccount {
    let mut metadata = names::child_meta(i, names::migrate_service_account(i));
    metadata.labels = Some(labels(i));
    ServiceAccount {
        metadata,
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}

/// The Job migrating the database to `i.image`'s schema, named `name` (see `names::migrate_job`).
pub fn render(i: &ValidInstance, name: &str, deadline_seconds: i64) -> Job {
    let mut metadata = names::child_meta(i, name.to_owned());
    metadata.labels = Some(labels(i));
    let mut container = deployment::container(i);
    container.name = CONTAINER.to_owned();
    container.args = Some(vec![
        "migrate".to_owned(),
        "--result-file".to_owned(),
        RESULT_FILE.to_owned(),
    ]);
    container.ports = None;
    container.startup_probe = None;
    container.readiness_probe = None;
    container.liveness_probe = None;
    container.lifecycle = None;
    container.termination_message_path = Some(RESULT_FILE.to_owned());
    container.termination_message_policy = Some("FallbackToLogsOnError".to_owned());
    let mut pod = deployment::pod_spec(i);
    pod.containers = vec![container];
    pod.restart_policy = Some("Never".to_owned());
    pod.service_account_name = Some(names::migrate_service_account(i));
    // Spread constraints select the server pods; they mean nothing for a one-off pod.
    pod.topology_spread_constraints = None;
    Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(1),
            active_deadline_seconds: Some(deadline_seconds),
            ttl_seconds_after_finished: Some(TTL_SECONDS),
            pod_failure_policy: Some(PodFailurePolicy {
                rules: vec![PodFailurePolicyRule {
                    action: "FailJob".to_owned(),
                    on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                        container_name: Some(CONTAINER.to_owned()),
                        operator: "In".to_owned(),
                        values: vec![EXIT_SCHEMA_TOO_NEW],
                    }),
                    on_pod_conditions: None,
                }],
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(i)),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::test_support::{FULL, valid_from_yaml};
    use serde_json::json;

    #[test]
    fn the_job_runs_migrate_with_the_servers_environment_and_bounded_retries() {
        let i = valid_from_yaml(FULL);
        let job = serde_json::to_value(render(&i, "acme-migrate-01234567", 600)).unwrap();
        let server = serde_json::to_value(deployment::render(&i, "h")).unwrap();
        let pod = &job["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        let s = &server["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], s["image"]);
        assert_eq!(
            c["args"],
            json!(["migrate", "--result-file", "/dev/termination-log"])
        );
        assert_eq!(c["env"], s["env"], "the same Secret references and user env");
        assert_eq!(c["envFrom"], s["envFrom"]);
        assert_eq!(c["securityContext"], s["securityContext"]);
        assert!(c.get("readinessProbe").is_none() && c.get("lifecycle").is_none());
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(pod["serviceAccountName"], "acme-migrate");
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert_eq!(job["spec"]["backoffLimit"], 1);
        assert_eq!(job["spec"]["activeDeadlineSeconds"], 600);
        assert_eq!(job["spec"]["ttlSecondsAfterFinished"], 86400);
        assert_eq!(
            job["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"],
            json!([3])
        );
        assert_eq!(
            job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"],
            "migrate"
        );
        assert_eq!(
            job["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "tmi-operator"
        );
        assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "TmiInstance");
        let sa = service_account(&i);
        assert_eq!(sa.automount_service_account_token, Some(false));
    }

    #[test]
    fn each_pair_of_images_gets_its_own_job() {
        let i = valid_from_yaml(FULL);
        let a = names::migrate_job(&i, "tmi:1.0.0", "tmi:1.1.0");
        assert_ne!(a, names::migrate_job(&i, "tmi:1.1.0", "tmi:1.0.0"));
        assert_eq!(a, names::migrate_job(&i, "tmi:1.0.0", "tmi:1.1.0"));
        assert!(a.starts_with("acme-migrate-") && a.len() == "acme-migrate-".len() + 8);
    }
}
