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
//!
//! With `spec.upgrade.backup` enabled, an init container runs first: `pg_dump --format=custom` of the
//! instance's database onto the user's PersistentVolumeClaim, as `<instance>-<from>-to-<to>-<UTC time>.dump`
//! (written under a temporary name, renamed when complete; the oldest beyond `keep` removed). The database URL
//! reaches it through the environment from the server's own Secret reference, never in the Job's spec. It
//! writes the file name to its termination message; a failed backup fails the pod before the migration
//! container starts, so nothing is migrated. Exit code 2 (the volume is not writable) fails the Job at once.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, PersistentVolumeClaimVolumeSource, PodTemplateSpec, ServiceAccount, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::controller::render::deployment;
use crate::controller::validate::{Backup, Database};
use crate::controller::{names, validate::ValidInstance};

/// Name of the Job's container.
pub const CONTAINER: &str = "migrate";
/// Where the container writes its result (the kubelet's default termination-message path).
pub const RESULT_FILE: &str = "/dev/termination-log";
/// Exit code of `tmi-server migrate` for a database whose schema is newer than the image knows.
pub const EXIT_SCHEMA_TOO_NEW: i32 = 3;
/// Name of the Job's backup init container (`spec.upgrade.backup`).
pub const BACKUP_CONTAINER: &str = "backup";
/// Exit code of the backup for a volume it cannot write to: retrying cannot help.
pub const EXIT_BACKUP_UNWRITABLE: i32 = 2;
/// Where the backup volume is mounted in the backup container.
const BACKUP_MOUNT: &str = "/backup";
/// The backup volume's name in the pod.
const BACKUP_VOLUME: &str = "backup";
/// The backup container's program (`/bin/sh -c`). Inputs come from the environment: the database URL
/// (`TMI_DATABASE_URL`, from the server's Secret), `TMI_BACKUP_DIR`, `TMI_BACKUP_INSTANCE`, `TMI_BACKUP_NAME`
/// (`<instance>-<from>-to-<to>`), `TMI_BACKUP_KEEP` (empty: keep all) and `TMI_BACKUP_CLAIM` (for messages).
/// Its last line on failure says why (the operator shows the log tail); on success it writes the file name to
/// the termination message. `keep` counts only this instance's dumps: the versions in the name must look like
/// versions, so `acme`'s count never includes `acme-2-1.0.0-to-1.1.0-….dump`.
const BACKUP_SCRIPT: &str = r#"set -eu
dir=$TMI_BACKUP_DIR
mkdir -p "$dir" 2>/dev/null || true
probe="$dir/.tmi-backup-probe.$$"
if ! (: > "$probe") 2>/dev/null; then
  echo "backup failed: cannot write to $dir on PersistentVolumeClaim $TMI_BACKUP_CLAIM (it must be writable by UID $(id -u) or GID $(id -g))" >&2
  exit 2
fi
rm -f "$probe"
name="$TMI_BACKUP_NAME-$(date -u +%Y%m%dT%H%M%SZ).dump"
tmp="$dir/.$name.partial"
trap 'rm -f "$tmp"' EXIT
started=$(date +%s)
if ! out=$(pg_dump --format=custom --no-password --file="$tmp" --dbname="$TMI_DATABASE_URL" 2>&1); then
  printf '%s\n' "$out" >&2
  echo "backup failed: $(printf '%s' "$out" | tr '\n\t' '  ')" >&2
  exit 1
fi
mv "$tmp" "$dir/$name"
trap - EXIT
echo "wrote $name ($(wc -c < "$dir/$name") bytes) in $(( $(date +%s) - started )) s"
if [ -n "$TMI_BACKUP_KEEP" ]; then
  v='v?[0-9]+[.][0-9]+[.][0-9]+(-[0-9A-Za-z.-]+)?'
  ls -1 "$dir" | grep -E "^$TMI_BACKUP_INSTANCE-($v|unknown)-to-$v-[0-9]{8}T[0-9]{6}Z[.]dump$" \
    | sed -E 's/^(.*)-([0-9]{8}T[0-9]{6}Z)[.]dump$/\2 \1-\2.dump/' | sort -r \
    | tail -n +"$((TMI_BACKUP_KEEP + 1))" | cut -d ' ' -f 2 | while read -r old; do
      rm -f "$dir/$old" && echo "removed $old (keep $TMI_BACKUP_KEEP)"
    done
fi
printf '%s' "$name" > /dev/termination-log
"#;
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

/// The Job migrating the database to `i.image`'s schema, named `name` (see `names::migrate_job`), after a
/// backup when `spec.upgrade.backup` is enabled; `from_version` (the running version) names the dump.
pub fn render(i: &ValidInstance, name: &str, deadline_seconds: i64, from_version: &str) -> Job {
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
    let mut rules = vec![PodFailurePolicyRule {
        action: "FailJob".to_owned(),
        on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
            container_name: Some(CONTAINER.to_owned()),
            operator: "In".to_owned(),
            values: vec![EXIT_SCHEMA_TOO_NEW],
        }),
        on_pod_conditions: None,
    }];
    if let (Some(b), Database::External { .. }) = (&i.backup, &i.database) {
        pod.init_containers = Some(vec![backup_container(i, b, &container, from_version)]);
        pod.volumes.get_or_insert_with(Vec::new).push(Volume {
            name: BACKUP_VOLUME.to_owned(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: b.claim_name.clone(),
                read_only: None,
            }),
            ..Default::default()
        });
        rules.push(PodFailurePolicyRule {
            action: "FailJob".to_owned(),
            on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                container_name: Some(BACKUP_CONTAINER.to_owned()),
                operator: "In".to_owned(),
                values: vec![EXIT_BACKUP_UNWRITABLE],
            }),
            on_pod_conditions: None,
        });
    }
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
            pod_failure_policy: Some(PodFailurePolicy { rules }),
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

/// The backup init container: the migrate container's security context, resources and scheduling, the
/// backup image, and of its environment only the database URL (by reference to the server's Secret).
fn backup_container(i: &ValidInstance, b: &Backup, migrate: &Container, from_version: &str) -> Container {
    let url = migrate
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "TMI_DATABASE_URL" && e.value_from.is_some())
        .cloned();
    let var = |name: &str, value: String| EnvVar {
        name: name.to_owned(),
        value: Some(value),
        value_from: None,
    };
    let dir = match &b.sub_path {
        Some(p) => format!("{BACKUP_MOUNT}/{p}"),
        None => BACKUP_MOUNT.to_owned(),
    };
    let mut env: Vec<EnvVar> = url.into_iter().collect();
    env.extend([
        var("TMI_BACKUP_DIR", dir),
        var("TMI_BACKUP_INSTANCE", i.name.clone()),
        var(
            "TMI_BACKUP_NAME",
            format!(
                "{}-{}-to-{}",
                i.name,
                file_part(from_version),
                file_part(&i.version)
            ),
        ),
        var(
            "TMI_BACKUP_KEEP",
            b.keep.map(|k| k.to_string()).unwrap_or_default(),
        ),
        var("TMI_BACKUP_CLAIM", b.claim_name.clone()),
        // libpq looks for ~/.pgpass; the root filesystem is read-only and the user has no home.
        var("HOME", "/tmp".to_owned()),
        var("PGCONNECT_TIMEOUT", "15".to_owned()),
    ]);
    Container {
        name: BACKUP_CONTAINER.to_owned(),
        image: Some(b.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        command: Some(vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            BACKUP_SCRIPT.to_owned(),
        ]),
        env: Some(env),
        resources: migrate.resources.clone(),
        security_context: migrate.security_context.clone(),
        termination_message_path: Some(RESULT_FILE.to_owned()),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "tmp".to_owned(),
                mount_path: "/tmp".to_owned(),
                ..Default::default()
            },
            VolumeMount {
                name: BACKUP_VOLUME.to_owned(),
                mount_path: BACKUP_MOUNT.to_owned(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    }
}

/// A version as a file-name part: anything but letters, digits, `.`, `_` and `-` becomes `_`.
fn file_part(version: &str) -> String {
    version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::test_support::{EXTERNAL, FULL, SQLITE, valid_from_yaml};
    use serde_json::json;

    #[test]
    fn the_job_runs_migrate_with_the_servers_environment_and_bounded_retries() {
        let i = valid_from_yaml(FULL);
        let job = serde_json::to_value(render(&i, "acme-migrate-01234567", 600, "1.0.0")).unwrap();
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

    fn with_backup(yaml: &str, backup: &str) -> ValidInstance {
        let mut obj = crate::controller::test_support::instance_from_yaml(yaml);
        obj.spec.upgrade = Some(serde_json::from_str(&format!(r#"{{"backup": {backup}}}"#)).unwrap());
        crate::controller::validate::validate(&obj).unwrap()
    }

    #[test]
    fn without_an_enabled_backup_there_is_no_init_container() {
        let plain = serde_json::to_value(render(&valid_from_yaml(FULL), "j", 600, "1.0.0")).unwrap();
        let off = with_backup(FULL, r#"{"persistentVolumeClaim": {"claimName": "dumps"}}"#);
        let off = serde_json::to_value(render(&off, "j", 600, "1.0.0")).unwrap();
        for job in [&plain, &off] {
            let pod = &job["spec"]["template"]["spec"];
            assert!(pod.get("initContainers").is_none(), "{pod}");
            assert!(!pod["volumes"].to_string().contains("dumps"));
            assert_eq!(
                job["spec"]["podFailurePolicy"]["rules"].as_array().unwrap().len(),
                1
            );
        }
        assert_eq!(plain, off, "a disabled backup changes nothing");
    }

    #[test]
    fn an_enabled_backup_dumps_first_with_the_servers_secret_reference_only() {
        let i = with_backup(
            FULL,
            r#"{"enabled": true, "persistentVolumeClaim": {"claimName": "dumps", "subPath": "tenant/acme/"},
                "image": "registry.example/pg:17", "keep": 3}"#,
        );
        let job = serde_json::to_value(render(&i, "acme-migrate-01234567", 600, "1.0.0")).unwrap();
        let pod = &job["spec"]["template"]["spec"];
        let init = pod["initContainers"].as_array().unwrap();
        assert_eq!(init.len(), 1);
        let b = &init[0];
        assert_eq!(b["name"], "backup");
        assert_eq!(b["image"], "registry.example/pg:17");
        assert_eq!(b["command"][0], "/bin/sh");
        let script = b["command"][2].as_str().unwrap();
        assert!(script.contains("pg_dump --format=custom"), "{script}");
        assert!(
            script.contains(r#"mv "$tmp" "$dir/$name""#),
            "written under a temporary name, then renamed"
        );
        assert_eq!(
            pod["containers"][0]["name"], "migrate",
            "the migration runs after it"
        );
        let env = b["env"].as_array().unwrap();
        let get = |n: &str| {
            env.iter()
                .find(|e| e["name"] == n)
                .unwrap_or_else(|| panic!("{n}"))
        };
        assert_eq!(
            get("TMI_DATABASE_URL")["valueFrom"]["secretKeyRef"],
            json!({"name": "acme-db", "key": "url"}),
            "the server's own Secret reference"
        );
        assert!(get("TMI_DATABASE_URL").get("value").is_none());
        assert_eq!(get("TMI_BACKUP_NAME")["value"], "acme-1.0.0-to-1.2.3");
        assert_eq!(get("TMI_BACKUP_DIR")["value"], "/backup/tenant/acme");
        assert_eq!(get("TMI_BACKUP_KEEP")["value"], "3");
        // No other Secret reaches the backup, and nothing secret is in its command or arguments.
        let refs: Vec<_> = env.iter().filter(|e| e.get("valueFrom").is_some()).collect();
        assert_eq!(refs.len(), 1, "{refs:?}");
        assert!(b.get("args").is_none());
        assert!(!job.to_string().contains("postgres://"));
        assert_eq!(b["securityContext"], pod["containers"][0]["securityContext"]);
        assert_eq!(b["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(b["terminationMessagePolicy"], "FallbackToLogsOnError");
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "backup")
            .unwrap();
        assert_eq!(volume["persistentVolumeClaim"]["claimName"], "dumps");
        assert_eq!(
            job["spec"]["podFailurePolicy"]["rules"][1]["onExitCodes"],
            json!({"containerName": "backup", "operator": "In", "values": [2]}),
            "an unwritable volume fails the Job without a retry"
        );
    }

    #[test]
    fn the_backup_image_defaults_to_upstream_postgresql() {
        let i = with_backup(
            EXTERNAL,
            r#"{"enabled": true, "persistentVolumeClaim": {"claimName": "dumps"}}"#,
        );
        let job = serde_json::to_value(render(&i, "j", 600, "1.2.2")).unwrap();
        let b = &job["spec"]["template"]["spec"]["initContainers"][0];
        assert_eq!(b["image"], names::DEFAULT_BACKUP_IMAGE);
        let env = b["env"].as_array().unwrap();
        let dir = env.iter().find(|e| e["name"] == "TMI_BACKUP_DIR").unwrap();
        assert_eq!(dir["value"], "/backup");
        let keep = env.iter().find(|e| e["name"] == "TMI_BACKUP_KEEP").unwrap();
        assert_eq!(keep["value"], "", "every dump is kept");
    }

    #[test]
    fn a_backup_is_refused_for_sqlite() {
        let mut obj = crate::controller::test_support::instance_from_yaml(SQLITE);
        obj.spec.upgrade = Some(
            serde_json::from_value(
                json!({"backup": {"enabled": true, "persistentVolumeClaim": {"claimName": "dumps"}}}),
            )
            .unwrap(),
        );
        let e = crate::controller::validate::validate(&obj).unwrap_err();
        assert_eq!(e.field, "spec.upgrade.backup.enabled");
        assert!(e.message.contains("spec.database.external"), "{}", e.message);
        // Disabled, the same settings are accepted.
        obj.spec
            .upgrade
            .as_mut()
            .unwrap()
            .backup
            .as_mut()
            .unwrap()
            .enabled = Some(false);
        assert!(crate::controller::validate::validate(&obj).is_ok());
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
