//! The upgrade state machine: observed state (the Deployment's image, the migrate Job, the fleet's answer,
//! the previous `status.upgrade`) → what to do (hold or apply the Deployment, create the Job) and the new
//! `status.upgrade`. Pure: the controller gathers the observations (IO) and carries out the plan.
//!
//! ```text
//!   image unchanged ─────────────────────────────────────────────────────────────▶ apply as usual
//!   image changed ─▶ Waiting ─(slot)─▶ Migrating ─(Job Complete)─▶ RollingOut ─(rolled out)─▶ Succeeded
//!                     (hold)            (Job, hold)       │           (apply)         │
//!                                                          ├─(Job Failed)──▶ Failed   (hold; stops the wave)
//!                                                          └─(exit 3)──────▶ Refused  (hold; a downgrade)
//!   spec.version set back to the running version while Waiting/Migrating/Failed/Refused ─▶ Cancelled
//! ```
//!
//! "Hold" means the live Deployment is left exactly as it is: the old version keeps serving, and nothing of
//! the new spec reaches the pods before the database is ready for it.
//!
//! Version rules (the one place they are written):
//! - Skipping versions is allowed: migrations are ordered and cumulative, so one Job takes the database from
//!   any older schema to the target's (1.0 → 1.3 applies 1.1's, 1.2's and 1.3's migrations in order).
//! - A downgrade is attempted like an upgrade, and the target's own `tmi-server migrate` decides: when the
//!   database holds a migration the target does not know, it exits with code 3 and changes nothing, and the
//!   upgrade is `Refused` with a message naming both versions. A downgrade to a release with the same
//!   schema is allowed.
//! - Automated updates (`spec.upgrade.policy`, [`follow`]): `Patch` moves an instance to the operator's default
//!   version when that is a newer patch release of `spec.version`, `Minor` also to a newer minor release; never
//!   across a major version, never to a pre-release, never with `spec.image` set, and never by writing `spec`.
//!   So upgrading the operator upgrades the instances that opted in (in waves), and restarts no other: their
//!   rendered pod template does not change.
//! - With `spec.upgrade.backup`, the Job dumps the database before it migrates; a failed backup fails the
//!   upgrade (`BackupFailed`) with nothing migrated, like a failed migration, and a successful one is named in
//!   `status.upgrade.backup`.
//! - A SQLite instance has no migrate Job (its volume is mounted by the one server pod); its server migrates
//!   at start, and refuses a newer schema there (the pod's condition says so).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Deserialize;

use crate::controller::{names, validate::ValidInstance};
use crate::crd::{UpgradePhase, UpgradePolicy, UpgradeStatus};

/// A release version `MAJOR.MINOR.PATCH` with an optional pre-release (`v` prefix allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Major.
    pub major: u64,
    /// Minor.
    pub minor: u64,
    /// Patch.
    pub patch: u64,
    /// Whether it carries a pre-release suffix (`1.2.3-rc.1`).
    pub pre_release: bool,
}

impl Version {
    /// Parses `v?MAJOR.MINOR.PATCH(-PRE)?`.
    pub fn parse(s: &str) -> Option<Version> {
        let s = s.strip_prefix('v').unwrap_or(s);
        let (core, pre) = match s.split_once('-') {
            Some((c, p)) => (c, !p.is_empty()),
            None => (s, false),
        };
        let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
        let (major, minor, patch) = (parts.next()??, parts.next()??, parts.next()??);
        parts.next().is_none().then_some(Version {
            major,
            minor,
            patch,
            pre_release: pre,
        })
    }
}

/// Applies the instance's automated-update policy: the version (and default image) it should run, given the
/// operator's default version. Pure; `spec` is not touched, only the effective values.
pub fn follow(valid: &mut ValidInstance, default_version: &str) {
    if valid.image_pinned || valid.upgrade_policy == UpgradePolicy::Manual {
        return;
    }
    let (Some(current), Some(default)) = (Version::parse(&valid.version), Version::parse(default_version))
    else {
        return;
    };
    let same_channel = match valid.upgrade_policy {
        UpgradePolicy::Manual => false,
        UpgradePolicy::Patch => (default.major, default.minor) == (current.major, current.minor),
        UpgradePolicy::Minor => default.major == current.major,
    };
    let newer = (default.major, default.minor, default.patch) > (current.major, current.minor, current.patch);
    if same_channel && newer && !default.pre_release {
        valid.version = default_version.to_owned();
        valid.image = format!("{}:{default_version}", names::DEFAULT_IMAGE_REPOSITORY);
    }
}

/// Label that orders instances in the fleet's upgrade queue: an integer, lower goes first.
pub const PRIORITY_LABEL: &str = "tmi.dev/upgrade-priority";
/// Priority of an instance without (or with an unreadable) [`PRIORITY_LABEL`].
pub const DEFAULT_PRIORITY: i32 = 100;

/// The instance's priority from its labels.
pub fn priority(labels: &std::collections::BTreeMap<String, String>) -> i32 {
    labels
        .get(PRIORITY_LABEL)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_PRIORITY)
}

/// `tmi-server migrate`'s one-line JSON result, as the Job's termination message carries it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrationResult {
    /// `Migrated`, `SchemaTooNew` or `Failed`.
    pub result: String,
    /// The database's schema version (after the run, or the newer one that was refused).
    #[serde(default)]
    pub schema_version: Option<i64>,
    /// The highest migration the binary knows.
    #[serde(default)]
    pub known_schema_version: Option<i64>,
    /// What went wrong.
    #[serde(default)]
    pub error: Option<String>,
}

impl MigrationResult {
    /// Parses the last line of a termination message that is a JSON result.
    pub fn parse(message: &str) -> Option<Self> {
        message
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<Self>(l.trim()).ok())
    }
}

/// The migrate Job, as observed.
#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    /// Created, not finished.
    Running,
    /// Complete; the result read from its pod, when available.
    Succeeded {
        /// The parsed result.
        result: Option<MigrationResult>,
        /// `status.completionTime`.
        completed_at: Option<Time>,
        /// The dump file the backup init container wrote, when it ran.
        backup: Option<String>,
    },
    /// The backup before the migration failed (`spec.upgrade.backup`): nothing was migrated.
    BackupFailed {
        /// The tail of the backup container's output, credentials masked.
        message: String,
    },
    /// Failed (retries exhausted, deadline exceeded, or exit code 3).
    Failed {
        /// The parsed result, when the binary wrote one.
        result: Option<MigrationResult>,
        /// The tail of the pod's termination message or the Job's condition message, credentials masked.
        message: String,
    },
}

/// The fleet's answer to "may this instance start its upgrade?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// Yes (or the instance already holds a slot).
    Granted,
    /// Not yet; why.
    Wait(String),
}

/// What the instance tells the fleet after this reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetReport {
    /// No upgrade pending (or it ended without failing the wave).
    Idle,
    /// Wants a slot.
    Wants,
    /// Holds a slot (migrating or rolling out).
    Holds,
    /// Failed: stops the wave when the operator pauses on failures.
    Failed,
}

/// What to create or delete besides the usual objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobAction {
    /// Nothing.
    None,
    /// Create the migrate Job (it does not exist yet).
    Create,
    /// Delete this instance's failed migrate Jobs, so that a later attempt at the same versions runs again.
    DeleteFailed,
}

/// A condition the upgrade imposes on the instance while the Deployment is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    /// Condition reason: `UpgradeWaiting`, `Migrating`, `MigrationFailed`, `BackupFailed` or `DowngradeRefused`.
    pub reason: &'static str,
    /// Human-readable.
    pub message: String,
    /// Whether only a human can move it on (`Stalled`), rather than time (`Reconciling`).
    pub stalled: bool,
}

/// Everything the state machine looks at.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// `spec.version`.
    pub version: &'a str,
    /// The image `spec.version`/`spec.image` selects.
    pub image: &'a str,
    /// The live Deployment's server image; `None` when there is no Deployment yet.
    pub running_image: Option<&'a str>,
    /// `status.version`: the version the running pods were last reported at.
    pub running_version: Option<&'a str>,
    /// Whether the instance runs SQLite (no migrate Job).
    pub sqlite: bool,
    /// The migrate Job for (running image → image), when one exists.
    pub job: Option<JobState>,
    /// Its name.
    pub job_name: &'a str,
    /// The fleet's answer (asked only when an upgrade is pending and no Job exists).
    pub slot: Slot,
    /// The previous `status.upgrade`.
    pub previous: Option<&'a UpgradeStatus>,
    /// The instance's priority.
    pub priority: i32,
    /// Whether a migrate Job of this instance exists that failed (any versions).
    pub failed_job_exists: bool,
}

/// What to do, and the status to report.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Leave the live Deployment as it is.
    pub hold: bool,
    /// The Job to create or delete.
    pub job: JobAction,
    /// The new `status.upgrade` (`None`: leave it as it was).
    pub status: Option<UpgradeStatus>,
    /// The condition to impose while held.
    pub gate: Option<Gate>,
    /// The instance's report to the fleet.
    pub fleet: FleetReport,
}

/// Whether the instance has a version change to make: a Deployment runs another image.
pub fn pending(image: &str, running_image: Option<&str>) -> bool {
    running_image.is_some_and(|r| r != image)
}

fn base(o: &Observed<'_>, phase: UpgradePhase, now: &Time) -> UpgradeStatus {
    // The same target keeps its history; a new target starts a new record.
    let same = o.previous.filter(|p| p.target_image == o.image);
    UpgradeStatus {
        phase,
        from_version: same
            .and_then(|p| p.from_version.clone())
            .or_else(|| o.running_version.map(str::to_owned)),
        target_version: o.version.to_owned(),
        target_image: o.image.to_owned(),
        job: same.and_then(|p| p.job.clone()),
        message: None,
        priority: o.priority,
        requested_at: Some(
            same.and_then(|p| p.requested_at.clone())
                .unwrap_or_else(|| now.clone()),
        ),
        started_at: same.and_then(|p| p.started_at.clone()),
        migrated_at: same.and_then(|p| p.migrated_at.clone()),
        finished_at: None,
        schema_version: o.previous.and_then(|p| p.schema_version),
        schema_migrated_by: o.previous.and_then(|p| p.schema_migrated_by.clone()),
        backup: same.and_then(|p| p.backup.clone()),
    }
}

/// The plan for this reconcile. `now` stamps the steps that happen now.
pub fn plan(o: &Observed<'_>, now: &Time) -> Plan {
    if !pending(o.image, o.running_image) {
        return settled(o, now);
    }
    let from = o.running_version.unwrap_or("the running version");
    if o.sqlite {
        // No Job: the slot alone gates the rollout; the server migrates at start.
        return match &o.slot {
            Slot::Granted => {
                let mut s = base(o, UpgradePhase::RollingOut, now);
                s.started_at.get_or_insert_with(|| now.clone());
                s.message = Some(format!(
                    "rolling out {} (SQLite: the server migrates at start)",
                    o.version
                ));
                Plan {
                    hold: false,
                    job: JobAction::None,
                    status: Some(s),
                    gate: None,
                    fleet: FleetReport::Holds,
                }
            }
            Slot::Wait(why) => waiting(o, why, now),
        };
    }
    match &o.job {
        None => match &o.slot {
            Slot::Granted => {
                let mut s = base(o, UpgradePhase::Migrating, now);
                s.started_at = Some(now.clone());
                s.migrated_at = None;
                s.job = Some(o.job_name.to_owned());
                let message = format!(
                    "migrating the database with {} (Job {}) before rolling out; {from} keeps serving",
                    o.version, o.job_name
                );
                s.message = Some(message.clone());
                Plan {
                    hold: true,
                    job: JobAction::Create,
                    status: Some(s),
                    gate: Some(Gate {
                        reason: "Migrating",
                        message,
                        stalled: false,
                    }),
                    fleet: FleetReport::Holds,
                }
            }
            Slot::Wait(why) => waiting(o, why, now),
        },
        Some(JobState::Running) => {
            let mut s = base(o, UpgradePhase::Migrating, now);
            s.started_at.get_or_insert_with(|| now.clone());
            s.job = Some(o.job_name.to_owned());
            let message = format!(
                "migrating the database with {} (Job {}) before rolling out; {from} keeps serving",
                o.version, o.job_name
            );
            s.message = Some(message.clone());
            Plan {
                hold: true,
                job: JobAction::None,
                status: Some(s),
                gate: Some(Gate {
                    reason: "Migrating",
                    message,
                    stalled: false,
                }),
                fleet: FleetReport::Holds,
            }
        }
        Some(JobState::Succeeded {
            result,
            completed_at,
            backup,
        }) => {
            let mut s = base(o, UpgradePhase::RollingOut, now);
            if backup.is_some() {
                s.backup.clone_from(backup);
            }
            s.job = Some(o.job_name.to_owned());
            s.started_at.get_or_insert_with(|| now.clone());
            s.migrated_at = Some(completed_at.clone().unwrap_or_else(|| now.clone()));
            if let Some(v) = result.as_ref().and_then(|r| r.schema_version) {
                s.schema_version = Some(v);
                s.schema_migrated_by = Some(o.version.to_owned());
            }
            s.message = Some(format!(
                "{}the migration succeeded{}; rolling out {}",
                s.backup
                    .as_ref()
                    .map(|b| format!("the backup {b} was written; "))
                    .unwrap_or_default(),
                s.schema_version
                    .map(|v| format!(" (schema version {v})"))
                    .unwrap_or_default(),
                o.version
            ));
            Plan {
                hold: false,
                job: JobAction::None,
                status: Some(s),
                gate: None,
                fleet: FleetReport::Holds,
            }
        }
        Some(JobState::BackupFailed { message }) => {
            let mut s = base(o, UpgradePhase::Failed, now);
            s.job = Some(o.job_name.to_owned());
            s.finished_at = Some(
                o.previous
                    .filter(|p| p.target_image == o.image && p.finished_at.is_some())
                    .and_then(|p| p.finished_at.clone())
                    .unwrap_or_else(|| now.clone()),
            );
            let m = format!(
                "the backup before the migration to {} failed (Job {}); nothing was migrated, {from} keeps \
                 serving, the Deployment is unchanged. Fix spec.upgrade.backup (or its volume), set spec.version \
                 back to {from}, then to {} again. Output: {message}",
                o.version, o.job_name, o.version
            );
            s.message = Some(m.clone());
            Plan {
                hold: true,
                job: JobAction::None,
                status: Some(s),
                gate: Some(Gate {
                    reason: "BackupFailed",
                    message: m,
                    stalled: true,
                }),
                // A failed upgrade, like a failed migration: the wave stops (the fleet rebuilds a pause from
                // `phase: Failed` after a restart, whatever failed).
                fleet: FleetReport::Failed,
            }
        }
        Some(JobState::Failed { result, message }) => {
            let mut s = base(o, UpgradePhase::Failed, now);
            s.job = Some(o.job_name.to_owned());
            s.finished_at = Some(
                o.previous
                    .filter(|p| p.target_image == o.image && p.finished_at.is_some())
                    .and_then(|p| p.finished_at.clone())
                    .unwrap_or_else(|| now.clone()),
            );
            match result.as_ref().filter(|r| r.result == "SchemaTooNew") {
                Some(r) => {
                    s.phase = UpgradePhase::Refused;
                    let db = r.schema_version.map_or("newer".to_owned(), |v| v.to_string());
                    let by = s
                        .schema_migrated_by
                        .clone()
                        .filter(|_| s.schema_version == r.schema_version)
                        .map(|v| format!(", migrated by {v}"))
                        .unwrap_or_default();
                    let known = r
                        .known_schema_version
                        .map_or("an older one".to_owned(), |v| v.to_string());
                    let m = format!(
                        "downgrade refused: spec.version {} knows database schema versions up to {known}, but the \
                         database is at schema version {db}{by}; {from} keeps serving. Set spec.version back to \
                         {from} (or newer), or restore a backup taken before the upgrade",
                        o.version
                    );
                    s.message = Some(m.clone());
                    Plan {
                        hold: true,
                        job: JobAction::None,
                        status: Some(s),
                        gate: Some(Gate {
                            reason: "DowngradeRefused",
                            message: m,
                            stalled: true,
                        }),
                        // A refused downgrade says nothing about the release: the wave goes on.
                        fleet: FleetReport::Idle,
                    }
                }
                None => {
                    let m = format!(
                        "the migration to {} failed (Job {}); {from} keeps serving, the Deployment is unchanged. \
                         Set spec.version back to {from} to recover. Output: {message}",
                        o.version, o.job_name
                    );
                    s.message = Some(m.clone());
                    Plan {
                        hold: true,
                        job: JobAction::None,
                        status: Some(s),
                        gate: Some(Gate {
                            reason: "MigrationFailed",
                            message: m,
                            stalled: true,
                        }),
                        fleet: FleetReport::Failed,
                    }
                }
            }
        }
    }
}

fn waiting(o: &Observed<'_>, why: &str, now: &Time) -> Plan {
    let mut s = base(o, UpgradePhase::Waiting, now);
    s.started_at = None;
    s.migrated_at = None;
    s.job = None;
    let from = o.running_version.unwrap_or("the running version");
    let message = format!("the upgrade to {} waits: {why}; {from} keeps serving", o.version);
    s.message = Some(message.clone());
    Plan {
        hold: true,
        job: JobAction::None,
        status: Some(s),
        gate: Some(Gate {
            reason: "UpgradeWaiting",
            message,
            stalled: false,
        }),
        fleet: FleetReport::Wants,
    }
}

/// No version change pending: the Deployment is applied as usual. A rollout of the target finishes the
/// upgrade (see [`settle`]); an upgrade that never reached its target was cancelled.
fn settled(o: &Observed<'_>, now: &Time) -> Plan {
    let job = if o.failed_job_exists {
        JobAction::DeleteFailed
    } else {
        JobAction::None
    };
    let status = match o.previous {
        Some(p) if p.target_image == o.image && p.phase == UpgradePhase::RollingOut => Some(p.clone()),
        Some(p)
            if p.target_image != o.image
                && matches!(
                    p.phase,
                    UpgradePhase::Waiting
                        | UpgradePhase::Migrating
                        | UpgradePhase::RollingOut
                        | UpgradePhase::Failed
                        | UpgradePhase::Refused
                ) =>
        {
            let mut s = p.clone();
            s.phase = UpgradePhase::Cancelled;
            s.finished_at = Some(now.clone());
            s.message = Some(format!(
                "spec.version went back to {} before the upgrade to {} finished",
                o.version, p.target_version
            ));
            Some(s)
        }
        _ => None,
    };
    let fleet = match &status {
        Some(s) if s.phase == UpgradePhase::RollingOut => FleetReport::Holds,
        _ => FleetReport::Idle,
    };
    Plan {
        hold: false,
        job,
        status,
        gate: None,
        fleet,
    }
}

/// After the Deployment was applied: a rollout of the target that completed finishes the upgrade; one whose
/// pods fail (`problem`) fails it, which stops the wave like a failed migration.
pub fn settle(plan: &mut Plan, rolled_out_image: Option<&str>, problem: Option<&str>, now: &Time) {
    let Some(s) = plan.status.as_mut() else {
        return;
    };
    if s.phase != UpgradePhase::RollingOut {
        return;
    }
    if rolled_out_image == Some(s.target_image.as_str()) {
        s.phase = UpgradePhase::Succeeded;
        s.finished_at = Some(now.clone());
        s.message = Some(format!("{} serves", s.target_version));
        plan.fleet = FleetReport::Idle;
    } else if let Some(p) = problem {
        s.phase = UpgradePhase::Failed;
        s.finished_at = Some(now.clone());
        s.message = Some(format!(
            "the rollout of {} fails: {p}. Set spec.version back to recover (once the database allows it)",
            s.target_version
        ));
        plan.fleet = FleetReport::Failed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    const OLD: &str = "tmi:1.0.0";
    const NEW: &str = "tmi:1.1.0";

    fn observed<'a>(previous: Option<&'a UpgradeStatus>) -> Observed<'a> {
        Observed {
            version: "1.1.0",
            image: NEW,
            running_image: Some(OLD),
            running_version: Some("1.0.0"),
            sqlite: false,
            job: None,
            job_name: "acme-migrate-0123abcd",
            slot: Slot::Granted,
            previous,
            priority: DEFAULT_PRIORITY,
            failed_job_exists: false,
        }
    }

    fn migrated(schema: i64) -> JobState {
        JobState::Succeeded {
            result: MigrationResult::parse(&format!(
                r#"{{"result":"Migrated","schemaVersion":{schema},"applied":[{schema}],"knownSchemaVersion":{schema}}}"#
            )),
            completed_at: Some(t(20)),
            backup: None,
        }
    }

    /// Walks one upgrade through every step, each time feeding the previous status back in, as the
    /// controller does.
    #[test]
    fn an_upgrade_waits_migrates_rolls_out_and_succeeds() {
        // No slot: the Deployment is held and the instance waits.
        let mut o = observed(None);
        o.slot = Slot::Wait("3 of 3 upgrades running".into());
        let p = plan(&o, &t(1));
        assert!(p.hold);
        assert_eq!(p.job, JobAction::None);
        assert_eq!(p.fleet, FleetReport::Wants);
        let s = p.status.unwrap();
        assert_eq!(s.phase, UpgradePhase::Waiting);
        assert_eq!(s.from_version.as_deref(), Some("1.0.0"));
        assert_eq!(p.gate.unwrap().reason, "UpgradeWaiting");

        // A slot: the Job is created, the Deployment still held.
        let mut o = observed(Some(&s));
        o.slot = Slot::Granted;
        let p = plan(&o, &t(5));
        assert!(p.hold);
        assert_eq!(p.job, JobAction::Create);
        assert_eq!(p.fleet, FleetReport::Holds);
        let gate = p.gate.unwrap();
        assert_eq!((gate.reason, gate.stalled), ("Migrating", false));
        let s = p.status.unwrap();
        assert_eq!(s.phase, UpgradePhase::Migrating);
        assert_eq!(s.requested_at, Some(t(1)), "the request time is kept");
        assert_eq!(s.started_at, Some(t(5)));
        assert_eq!(s.job.as_deref(), Some("acme-migrate-0123abcd"));

        // The Job runs: nothing new.
        let mut o = observed(Some(&s));
        o.job = Some(JobState::Running);
        let p = plan(&o, &t(9));
        assert!(p.hold && p.job == JobAction::None);
        assert_eq!(p.status.as_ref().unwrap().started_at, Some(t(5)));

        // The Job completed: the Deployment is applied with the new image.
        let mut o = observed(Some(&s));
        o.job = Some(migrated(11));
        let p = plan(&o, &t(21));
        assert!(!p.hold);
        assert_eq!(
            p.fleet,
            FleetReport::Holds,
            "the slot is held through the rollout"
        );
        let s = p.status.unwrap();
        assert_eq!(s.phase, UpgradePhase::RollingOut);
        assert_eq!(s.migrated_at, Some(t(20)));
        assert_eq!(s.schema_version, Some(11));
        assert_eq!(s.schema_migrated_by.as_deref(), Some("1.1.0"));

        // The Deployment now has the new image; its rollout is incomplete, then complete.
        let mut o = observed(Some(&s));
        o.running_image = Some(NEW);
        let mut p = plan(&o, &t(22));
        assert!(!p.hold);
        settle(&mut p, Some(OLD), None, &t(22));
        assert_eq!(p.status.as_ref().unwrap().phase, UpgradePhase::RollingOut);
        assert_eq!(p.fleet, FleetReport::Holds);
        let mut p = plan(&o, &t(30));
        settle(&mut p, Some(NEW), None, &t(30));
        assert_eq!(p.fleet, FleetReport::Idle);
        let s = p.status.unwrap();
        assert_eq!(s.phase, UpgradePhase::Succeeded);
        assert_eq!(
            (s.requested_at, s.started_at, s.migrated_at, s.finished_at),
            (Some(t(1)), Some(t(5)), Some(t(20)), Some(t(30)))
        );

        // Steady state afterwards: the status stays as it is.
        let done = UpgradeStatus {
            phase: UpgradePhase::Succeeded,
            ..observed_status()
        };
        let mut o = observed(Some(&done));
        o.running_image = Some(NEW);
        let p = plan(&o, &t(99));
        assert_eq!(p.status, None);
        assert_eq!(p.fleet, FleetReport::Idle);
    }

    fn observed_status() -> UpgradeStatus {
        let o = observed(None);
        plan(&o, &t(1)).status.unwrap()
    }

    #[test]
    fn a_failed_migration_holds_the_deployment_stalls_and_stops_the_wave() {
        let s = observed_status();
        let mut o = observed(Some(&s));
        o.job = Some(JobState::Failed {
            result: MigrationResult::parse(
                r#"{"result":"Failed","error":"database migration failed: relation \"x\" does not exist"}"#,
            ),
            message: "database migration failed: relation \"x\" does not exist".into(),
        });
        let p = plan(&o, &t(40));
        assert!(p.hold, "the Deployment is untouched");
        assert_eq!(p.fleet, FleetReport::Failed);
        let gate = p.gate.unwrap();
        assert_eq!((gate.reason, gate.stalled), ("MigrationFailed", true));
        assert!(
            gate.message.contains("relation \"x\" does not exist"),
            "{}",
            gate.message
        );
        assert!(gate.message.contains("1.0.0 keeps serving"), "{}", gate.message);
        let s = p.status.unwrap();
        assert_eq!(s.phase, UpgradePhase::Failed);
        assert_eq!(s.finished_at, Some(t(40)));
        // Recomputed later, the failure keeps its time.
        let mut o2 = observed(Some(&s));
        o2.job = o.job.clone();
        assert_eq!(plan(&o2, &t(50)).status.unwrap().finished_at, Some(t(40)));

        // Setting the version back: the Deployment is applied with the old image, the failed Job removed, and
        // the upgrade recorded as cancelled; the wave is no longer stopped by it.
        let mut back = observed(Some(&s));
        back.version = "1.0.0";
        back.image = OLD;
        back.failed_job_exists = true;
        let p = plan(&back, &t(60));
        assert!(!p.hold);
        assert_eq!(p.job, JobAction::DeleteFailed);
        assert_eq!(p.fleet, FleetReport::Idle);
        assert_eq!(p.status.unwrap().phase, UpgradePhase::Cancelled);
    }

    #[test]
    fn a_failed_backup_holds_the_deployment_and_stalls_with_its_own_reason() {
        let s = observed_status();
        let mut o = observed(Some(&s));
        o.job = Some(JobState::BackupFailed {
            message: "backup failed: cannot write to /backup on PersistentVolumeClaim dumps".into(),
        });
        let p = plan(&o, &t(40));
        assert!(p.hold, "the Deployment is untouched");
        assert_eq!(p.job, JobAction::None);
        assert_eq!(p.fleet, FleetReport::Failed);
        let gate = p.gate.unwrap();
        assert_eq!((gate.reason, gate.stalled), ("BackupFailed", true));
        for part in [
            "cannot write to /backup",
            "nothing was migrated",
            "1.0.0 keeps serving",
        ] {
            assert!(gate.message.contains(part), "{part}: {}", gate.message);
        }
        assert_eq!(p.status.unwrap().phase, UpgradePhase::Failed);
    }

    #[test]
    fn the_backup_written_is_named_in_the_status() {
        let s = observed_status();
        let mut o = observed(Some(&s));
        o.job = Some(JobState::Succeeded {
            result: None,
            completed_at: Some(t(20)),
            backup: Some("acme-1.0.0-to-1.1.0-20261203T160000Z.dump".into()),
        });
        let s = plan(&o, &t(21)).status.unwrap();
        assert_eq!(
            s.backup.as_deref(),
            Some("acme-1.0.0-to-1.1.0-20261203T160000Z.dump")
        );
        assert!(
            s.message
                .as_deref()
                .unwrap()
                .contains("acme-1.0.0-to-1.1.0-20261203T160000Z.dump")
        );
        // Kept through the rollout (the Job is no longer looked at).
        let mut o = observed(Some(&s));
        o.running_image = Some(NEW);
        let mut p = plan(&o, &t(30));
        settle(&mut p, Some(NEW), None, &t(30));
        let s = p.status.unwrap();
        assert_eq!(s.phase, UpgradePhase::Succeeded);
        assert!(s.backup.is_some());
    }

    #[test]
    fn a_downgrade_below_the_schema_is_refused_naming_both_versions() {
        let previous = UpgradeStatus {
            phase: UpgradePhase::Succeeded,
            schema_version: Some(90000),
            schema_migrated_by: Some("1.1.0".into()),
            ..observed_status()
        };
        let mut o = observed(Some(&previous));
        o.version = "1.0.0";
        o.image = OLD;
        o.running_image = Some(NEW);
        o.running_version = Some("1.1.0");
        o.job = Some(JobState::Failed {
            result: MigrationResult::parse(
                r#"{"result":"SchemaTooNew","schemaVersion":90000,"knownSchemaVersion":10,"error":"…"}"#,
            ),
            message: "…".into(),
        });
        let p = plan(&o, &t(70));
        assert!(p.hold);
        assert_eq!(
            p.fleet,
            FleetReport::Idle,
            "a refused downgrade does not stop the wave"
        );
        let gate = p.gate.unwrap();
        assert_eq!((gate.reason, gate.stalled), ("DowngradeRefused", true));
        for part in [
            "spec.version 1.0.0",
            "up to 10",
            "schema version 90000",
            "migrated by 1.1.0",
            "1.1.0 keeps serving",
        ] {
            assert!(gate.message.contains(part), "{part}: {}", gate.message);
        }
        assert_eq!(p.status.unwrap().phase, UpgradePhase::Refused);
    }

    #[test]
    fn a_rollout_whose_pods_fail_fails_the_upgrade() {
        let rolling = UpgradeStatus {
            phase: UpgradePhase::RollingOut,
            ..observed_status()
        };
        let mut o = observed(Some(&rolling));
        o.running_image = Some(NEW);
        let mut p = plan(&o, &t(80));
        settle(&mut p, Some(OLD), Some("the server exits at start"), &t(80));
        assert_eq!(p.fleet, FleetReport::Failed);
        assert_eq!(p.status.unwrap().phase, UpgradePhase::Failed);
    }

    #[test]
    fn sqlite_rolls_out_without_a_job_once_it_has_a_slot() {
        let mut o = observed(None);
        o.sqlite = true;
        let p = plan(&o, &t(1));
        assert!(!p.hold);
        assert_eq!(p.job, JobAction::None);
        assert_eq!(p.status.unwrap().phase, UpgradePhase::RollingOut);
        o.slot = Slot::Wait("full".into());
        assert_eq!(plan(&o, &t(1)).status.unwrap().phase, UpgradePhase::Waiting);
    }

    #[test]
    fn a_new_instance_and_an_unchanged_image_need_no_upgrade() {
        let mut o = observed(None);
        o.running_image = None;
        let p = plan(&o, &t(1));
        assert_eq!(
            (p.hold, p.job, p.status, p.gate),
            (false, JobAction::None, None, None)
        );
        o.running_image = Some(NEW);
        assert_eq!(plan(&o, &t(1)).status, None);
    }

    #[test]
    fn priority_comes_from_the_label() {
        let mut labels = std::collections::BTreeMap::new();
        assert_eq!(priority(&labels), DEFAULT_PRIORITY);
        labels.insert(PRIORITY_LABEL.to_owned(), "0".to_owned());
        assert_eq!(priority(&labels), 0);
        labels.insert(PRIORITY_LABEL.to_owned(), "canary".to_owned());
        assert_eq!(priority(&labels), DEFAULT_PRIORITY);
    }

    #[test]
    fn policies_follow_the_operators_version_within_their_channel_only() {
        use crate::controller::test_support::{EXTERNAL, valid_from_yaml};
        let run = |policy: UpgradePolicy, pinned: bool, default: &str| {
            let mut v = valid_from_yaml(EXTERNAL); // spec.version 1.2.3
            v.upgrade_policy = policy;
            v.image_pinned = pinned;
            follow(&mut v, default);
            (v.version, v.image)
        };
        let image = |v: &str| format!("ghcr.io/tmi-operator/tmi-server:{v}");
        assert_eq!(run(UpgradePolicy::Manual, false, "1.2.9").0, "1.2.3");
        assert_eq!(
            run(UpgradePolicy::Patch, false, "1.2.9"),
            ("1.2.9".into(), image("1.2.9"))
        );
        assert_eq!(
            run(UpgradePolicy::Patch, false, "1.3.0").0,
            "1.2.3",
            "not across a minor"
        );
        assert_eq!(run(UpgradePolicy::Minor, false, "1.3.0").0, "1.3.0");
        assert_eq!(
            run(UpgradePolicy::Minor, false, "2.0.0").0,
            "1.2.3",
            "never across a major"
        );
        assert_eq!(
            run(UpgradePolicy::Patch, false, "1.2.1").0,
            "1.2.3",
            "never backwards"
        );
        assert_eq!(
            run(UpgradePolicy::Patch, false, "1.2.9-rc.1").0,
            "1.2.3",
            "never to a pre-release"
        );
        assert_eq!(
            run(UpgradePolicy::Patch, true, "1.2.9").0,
            "1.2.3",
            "an image pins the version"
        );
        assert_eq!(Version::parse("v1.2.3").map(|v| v.minor), Some(2));
        assert_eq!(Version::parse("1.2"), None);
    }

    #[test]
    fn the_result_is_the_last_json_line() {
        let r = MigrationResult::parse("some log\n{\"result\":\"Migrated\",\"schemaVersion\":7}\n").unwrap();
        assert_eq!((r.result.as_str(), r.schema_version), ("Migrated", Some(7)));
        assert_eq!(MigrationResult::parse("no json"), None);
    }
}
