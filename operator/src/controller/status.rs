//! Status: [`compute`] is pure (instance + outcome + clock reading → status); [`patch`] is IO (writes the
//! status subresource and publishes one Event per condition transition).
//!
//! Conditions follow kstatus: `Reconciling=True` while a rollout is in progress, `Stalled=True` when only a
//! human can fix things, `Ready` otherwise decides; `status.observedGeneration` and every condition's
//! `observedGeneration` say which generation they describe. Domain conditions (`ConfigValid`,
//! `SecretsResolved`, `ServerAvailable`) carry the specific reason. A condition keeps its
//! `lastTransitionTime` while its status is unchanged, so recomputing an unchanged state yields an identical
//! status, and [`patch`] then writes nothing.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::controller::exposure::{self, CERTIFICATE_READY, EXPOSURE_READY};
use crate::controller::{
    Context, Error, diagnose::ServerProblem, inputs::Problem, names, upgrade, validate::InvalidSpec,
    validate::ValidInstance,
};
use crate::crd::{EffectiveSettings, TmiInstance, TmiInstanceStatus};

/// kstatus: the instance serves at its current generation.
pub const READY: &str = "Ready";
/// kstatus: the operator is still working towards the spec.
pub const RECONCILING: &str = "Reconciling";
/// kstatus: the operator cannot make progress without a change by a human.
pub const STALLED: &str = "Stalled";
/// The spec passed validation.
pub const CONFIG_VALID: &str = "ConfigValid";
/// Every referenced Secret and ConfigMap key exists.
pub const SECRETS_RESOLVED: &str = "SecretsResolved";
/// The server Deployment has all replicas updated and available.
pub const SERVER_AVAILABLE: &str = "ServerAvailable";

/// What the reconcile achieved, as far as status is concerned.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// The spec is invalid; nothing was applied.
    Invalid(&'a InvalidSpec),
    /// `spec.suspend` is set; nothing was applied.
    Suspended(&'a ValidInstance),
    /// Referenced Secrets/ConfigMaps are missing; nothing was applied.
    InputsMissing(&'a ValidInstance, &'a [Problem]),
    /// The API server rejected an object the operator rendered (e.g. a bad `env` entry or a quota).
    Rejected(&'a ValidInstance, &'a str),
    /// Everything was applied; the Deployment is as read back.
    Applied {
        /// The instance.
        valid: &'a ValidInstance,
        /// The live Deployment.
        deployment: &'a Deployment,
        /// The pod-template inputs hash.
        inputs_hash: &'a str,
        /// Why the server pods fail, when the rollout is incomplete and they do ([`crate::controller::diagnose`]).
        problem: Option<&'a ServerProblem>,
        /// What the cluster shows of the Ingress/HTTPRoute and the Certificate.
        exposure: exposure::Observed<'a>,
        /// The upgrade's plan: its `status.upgrade`, and the condition it imposes while the Deployment is
        /// held (then the Deployment still runs the old version, which `status.version` keeps reporting).
        upgrade: Option<&'a upgrade::Plan>,
    },
}

struct Cond {
    type_: &'static str,
    status: bool,
    reason: String,
    message: String,
}

fn cond(type_: &'static str, status: bool, reason: &str, message: impl Into<String>) -> Cond {
    Cond {
        type_,
        status,
        reason: reason.to_owned(),
        message: message.into(),
    }
}

/// Computes the status for `obj` after `outcome`; `now` stamps conditions whose status changed.
pub fn compute(obj: &TmiInstance, outcome: Outcome<'_>, now: &Time) -> TmiInstanceStatus {
    let old = obj.status.clone().unwrap_or_default();
    let generation = obj.metadata.generation;
    let mut status = TmiInstanceStatus {
        observed_generation: generation,
        ..old.clone()
    };
    let mut dropped: Vec<&str> = Vec::new();
    let conds: Vec<Cond> = match outcome {
        Outcome::Invalid(e) => {
            let m = e.to_string();
            vec![
                cond(READY, false, "InvalidSpec", m.clone()),
                cond(RECONCILING, false, "InvalidSpec", "waiting for a corrected spec"),
                cond(STALLED, true, "InvalidSpec", m.clone()),
                cond(CONFIG_VALID, false, "InvalidSpec", m),
            ]
        }
        Outcome::Suspended(v) => {
            set_static(&mut status, v, None);
            let ready = old_cond(&old, READY);
            vec![
                cond(
                    READY,
                    ready.as_ref().is_some_and(|c| c.status == "True"),
                    "Suspended",
                    "spec.suspend is true; objects are left as they are",
                ),
                cond(RECONCILING, false, "Suspended", "spec.suspend is true"),
                cond(STALLED, false, "Suspended", "spec.suspend is true"),
                cond(CONFIG_VALID, true, "Valid", "spec is valid"),
            ]
        }
        Outcome::InputsMissing(v, problems) => {
            set_static(&mut status, v, None);
            let reason = problems.first().map_or("SecretNotFound", Problem::reason);
            let m = problems
                .iter()
                .map(Problem::message)
                .collect::<Vec<_>>()
                .join("; ");
            vec![
                cond(READY, false, reason, m.clone()),
                cond(RECONCILING, false, reason, "waiting for the referenced objects"),
                cond(STALLED, true, reason, m.clone()),
                cond(CONFIG_VALID, true, "Valid", "spec is valid"),
                cond(SECRETS_RESOLVED, false, reason, m),
            ]
        }
        Outcome::Rejected(v, message) => {
            set_static(&mut status, v, None);
            vec![
                cond(READY, false, "ApplyRejected", message),
                cond(
                    RECONCILING,
                    false,
                    "ApplyRejected",
                    "waiting for a corrected spec",
                ),
                cond(STALLED, true, "ApplyRejected", message),
                cond(CONFIG_VALID, true, "Valid", "spec is valid"),
                cond(SECRETS_RESOLVED, true, "Resolved", "all referenced keys exist"),
            ]
        }
        Outcome::Applied {
            valid,
            deployment,
            inputs_hash,
            problem,
            exposure,
            upgrade,
        } => {
            set_static(&mut status, valid, Some(inputs_hash));
            if let Some(s) = upgrade.and_then(|p| p.status.clone()) {
                status.upgrade = Some(s);
            }
            let gate = upgrade.filter(|p| p.hold).and_then(|p| p.gate.as_ref());
            let (checks, url) = exposure::evaluate(valid, &exposure);
            status.url = Some(url);
            if let Some(e) = status.effective.as_mut() {
                // The preset as the CRD spells it (`ALB`, `HAProxy`, …).
                e.ingress_controller = exposure
                    .ingress_controller
                    .and_then(|c| serde_json::to_value(c).ok())
                    .and_then(|v| v.as_str().map(str::to_owned));
            }
            // Conditions of an exposure (or certificate) that is no longer configured go away.
            for type_ in [EXPOSURE_READY, CERTIFICATE_READY] {
                if !checks.iter().any(|c| c.type_ == type_) {
                    dropped.push(type_);
                }
            }
            // What only a human can fix outranks what time will.
            let blocking = checks
                .iter()
                .find(|c| !c.ok && c.stalled)
                .or_else(|| checks.iter().find(|c| !c.ok))
                .cloned();
            let d = DeploymentState::of(deployment, valid.replicas);
            status.replicas = Some(d.replicas);
            status.ready_replicas = Some(d.ready);
            let counts = format!(
                "{} of {} replicas available, {} updated",
                d.available, valid.replicas, d.updated
            );
            let mut conds = vec![
                cond(CONFIG_VALID, true, "Valid", "spec is valid"),
                cond(SECRETS_RESOLVED, true, "Resolved", "all referenced keys exist"),
            ];
            conds.extend(checks.iter().map(|c| Cond {
                type_: c.type_,
                status: c.ok,
                reason: c.reason.clone(),
                message: c.message.clone(),
            }));
            if let Some(g) = gate {
                // The old version serves; the new spec waits for its migration (or for a human).
                let (available, reason) = if d.rolled_out {
                    (true, "Available")
                } else {
                    (false, "DeploymentUnavailable")
                };
                conds.extend([
                    cond(READY, false, g.reason, g.message.clone()),
                    cond(RECONCILING, !g.stalled, g.reason, g.message.clone()),
                    cond(
                        STALLED,
                        g.stalled,
                        if g.stalled { g.reason } else { "None" },
                        if g.stalled {
                            g.message.clone()
                        } else {
                            "no problems".to_owned()
                        },
                    ),
                    cond(SERVER_AVAILABLE, available, reason, counts),
                ]);
            } else if d.deadline_exceeded {
                conds.extend([
                    cond(READY, false, "ProgressDeadlineExceeded", counts.clone()),
                    cond(RECONCILING, false, "ProgressDeadlineExceeded", counts.clone()),
                    cond(
                        STALLED,
                        true,
                        "ProgressDeadlineExceeded",
                        format!("rollout stuck: {counts}"),
                    ),
                    cond(SERVER_AVAILABLE, false, "ProgressDeadlineExceeded", counts),
                ]);
            } else if d.rolled_out {
                status.version = Some(valid.version.clone());
                status.image = Some(valid.image.clone());
                let reason = if valid.replicas == 0 {
                    "ScaledToZero"
                } else {
                    "Available"
                };
                conds.push(cond(SERVER_AVAILABLE, true, reason, counts.clone()));
                match blocking {
                    // The server runs; users cannot reach it yet (or only a human can make them).
                    Some(b) => conds.extend([
                        cond(READY, false, &b.reason, format!("{}: {}", b.type_, b.message)),
                        cond(RECONCILING, !b.stalled, &b.reason, b.message.clone()),
                        cond(
                            STALLED,
                            b.stalled,
                            if b.stalled { &b.reason } else { "None" },
                            if b.stalled {
                                b.message.clone()
                            } else {
                                "no problems".to_owned()
                            },
                        ),
                    ]),
                    None => conds.extend([
                        cond(READY, true, reason, counts),
                        cond(RECONCILING, false, "UpToDate", "the server runs the current spec"),
                        cond(STALLED, false, "None", "no problems"),
                    ]),
                }
            } else if let Some(p) = problem {
                // Pods that crash at start or cannot pull their image wait for a human (or for the database
                // to come back): say why, with the reason naming what failed.
                conds.extend([
                    cond(READY, false, p.reason, p.message.clone()),
                    cond(RECONCILING, false, p.reason, counts.clone()),
                    cond(STALLED, true, p.reason, p.message.clone()),
                    cond(SERVER_AVAILABLE, false, p.reason, counts),
                ]);
            } else {
                conds.extend([
                    cond(READY, false, "DeploymentUnavailable", counts.clone()),
                    cond(RECONCILING, true, "RollingOut", counts.clone()),
                    cond(STALLED, false, "None", "no problems"),
                    cond(SERVER_AVAILABLE, false, "DeploymentUnavailable", counts),
                ]);
            }
            conds
        }
    };
    let kept: Vec<Condition> = old
        .conditions
        .iter()
        .flatten()
        .filter(|c| !dropped.contains(&c.type_.as_str()))
        .cloned()
        .collect();
    status.conditions = Some(merge(&kept, conds, generation, now));
    status
}

fn old_cond(old: &TmiInstanceStatus, type_: &str) -> Option<Condition> {
    old.conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
        .cloned()
}

fn set_static(status: &mut TmiInstanceStatus, v: &ValidInstance, inputs_hash: Option<&str>) {
    // The URL users reach is only known once the route is observed (`Outcome::Applied`); until then an
    // earlier observation stands, or the in-cluster URL.
    if status.url.is_none() || v.exposure.route == crate::controller::validate::Route::None {
        status.url = Some(v.service_url.clone());
    }
    status.selector = Some(names::selector_string(v));
    let previous_hash = status
        .effective
        .as_ref()
        .map(|e| e.inputs_hash.clone())
        .unwrap_or_default();
    status.effective = Some(EffectiveSettings {
        replicas: v.replicas,
        build_mode: v.build_mode.env_value().to_owned(),
        database: v.database.mode().to_owned(),
        cache: v.cache.mode().to_owned(),
        jwt_secret: v.jwt.name.clone(),
        inputs_hash: inputs_hash.map_or(previous_hash, str::to_owned),
        exposure: Some(v.exposure.mode().to_owned()),
        ingress_controller: None,
        session_affinity: Some(
            if v.exposure.cookie_affinity {
                "Cookie"
            } else {
                "None"
            }
            .to_owned(),
        ),
    });
}

/// Replaces the computed conditions in `old` (keeping `lastTransitionTime` when the status is unchanged),
/// keeps the ones not computed this time, and orders them: kstatus first, then domain conditions.
fn merge(old: &[Condition], new: Vec<Cond>, generation: Option<i64>, now: &Time) -> Vec<Condition> {
    let order = [
        READY,
        RECONCILING,
        STALLED,
        CONFIG_VALID,
        SECRETS_RESOLVED,
        SERVER_AVAILABLE,
        EXPOSURE_READY,
        CERTIFICATE_READY,
    ];
    let mut out: Vec<Condition> = Vec::new();
    for type_ in order {
        let prev = old.iter().find(|c| c.type_ == type_);
        match new.iter().find(|c| c.type_ == type_) {
            Some(c) => {
                let status = if c.status { "True" } else { "False" }.to_owned();
                let last_transition_time = match prev {
                    Some(p) if p.status == status => p.last_transition_time.clone(),
                    _ => now.clone(),
                };
                out.push(Condition {
                    type_: type_.to_owned(),
                    status,
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                    observed_generation: generation,
                    last_transition_time,
                });
            }
            None => out.extend(prev.cloned()),
        }
    }
    out
}

/// Whether the Deployment runs `desired` updated, available replicas of its current generation.
pub fn rolled_out(d: &Deployment, desired: i32) -> bool {
    DeploymentState::of(d, desired).rolled_out
}

/// The parts of a Deployment's status that decide availability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DeploymentState {
    replicas: i32,
    ready: i32,
    available: i32,
    updated: i32,
    rolled_out: bool,
    deadline_exceeded: bool,
}

impl DeploymentState {
    fn of(d: &Deployment, desired: i32) -> Self {
        let s = d.status.clone().unwrap_or_default();
        let observed = s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(1);
        let (replicas, ready) = (s.replicas.unwrap_or(0), s.ready_replicas.unwrap_or(0));
        let (available, updated) = (s.available_replicas.unwrap_or(0), s.updated_replicas.unwrap_or(0));
        let deadline_exceeded = s.conditions.iter().flatten().any(|c| {
            c.type_ == "Progressing"
                && c.status == "False"
                && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        });
        let rolled_out =
            observed && updated >= desired && available >= desired && replicas == desired && ready >= desired;
        DeploymentState {
            replicas,
            ready,
            available,
            updated,
            rolled_out,
            deadline_exceeded,
        }
    }
}

/// Conditions in `new` whose status or reason differs from `old` (one Event each).
pub fn transitions(old: Option<&TmiInstanceStatus>, new: &TmiInstanceStatus) -> Vec<Condition> {
    let old = old.and_then(|s| s.conditions.clone()).unwrap_or_default();
    new.conditions
        .iter()
        .flatten()
        .filter(|c| {
            !old.iter()
                .any(|o| o.type_ == c.type_ && o.status == c.status && o.reason == c.reason)
        })
        .cloned()
        .collect()
}

/// IO: writes `status` to the status subresource (server-side apply, our field manager) unless it equals the
/// current one, then publishes an Event per condition transition.
pub async fn patch(ctx: &Context, obj: &TmiInstance, status: TmiInstanceStatus) -> Result<(), Error> {
    if obj.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<TmiInstance> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let body = json!({ "apiVersion": "tmi.dev/v1alpha1", "kind": "TmiInstance", "status": &status });
    ctx.metrics.write("TmiInstance/status");
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(names::FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(Error::PatchStatus)?;
    let reference = obj.object_ref(&());
    for c in transitions(obj.status.as_ref(), &status) {
        let warning = (c.type_ == STALLED && c.status == "True") || (c.type_ == READY && c.status == "False");
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: c.reason.clone(),
            note: Some(format!("{}={}: {}", c.type_, c.status, c.message)),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        // An Event is a notification, not state: failing to publish one must not fail the reconcile.
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(error = &e as &dyn std::error::Error, "publishing event failed");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::test_support::{EXTERNAL, instance_from_yaml, valid_from_yaml};
    use k8s_openapi::api::apps::v1::DeploymentStatus;
    use k8s_openapi::jiff::Timestamp;

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn deployment(generation: i64, observed: i64, replicas: i32, updated: i32, available: i32) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.generation = Some(generation);
        d.status = Some(DeploymentStatus {
            observed_generation: Some(observed),
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            available_replicas: Some(available),
            ready_replicas: Some(available),
            ..Default::default()
        });
        d
    }

    fn get<'a>(s: &'a TmiInstanceStatus, type_: &str) -> &'a Condition {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap()
    }

    /// A running server whose Ingress has no address yet is not Ready: users cannot reach it. Once the
    /// exposure is removed, its conditions go away and the URL is the in-cluster one.
    #[test]
    fn ready_waits_for_the_exposure_and_forgets_it_when_removed() {
        use crate::controller::test_support::INGRESS;
        let mut obj = instance_from_yaml(INGRESS);
        let v = valid_from_yaml(INGRESS);
        let d = deployment(2, 2, 2, 2, 2);
        let applied = |v, exposure| Outcome::Applied {
            valid: v,
            deployment: &d,
            inputs_hash: "h",
            problem: None,
            exposure,
            upgrade: None,
        };
        let pending = exposure::Observed {
            cert_manager: true,
            ..Default::default()
        };
        let s = compute(&obj, applied(&v, pending), &t(10));
        assert_eq!(get(&s, READY).status, "False");
        assert_eq!(get(&s, READY).reason, "AddressPending");
        assert_eq!(get(&s, RECONCILING).status, "True");
        assert_eq!(get(&s, STALLED).status, "False");
        assert_eq!(get(&s, SERVER_AVAILABLE).status, "True");
        assert_eq!(get(&s, EXPOSURE_READY).status, "False");
        assert_eq!(get(&s, CERTIFICATE_READY).reason, "Pending");
        assert_eq!(s.url.as_deref(), Some("http://acme.tenant.svc"));

        let missing = compute(&obj, applied(&v, exposure::Observed::default()), &t(10));
        assert_eq!(get(&missing, STALLED).status, "True");
        assert_eq!(get(&missing, STALLED).reason, "CertManagerNotInstalled");

        obj.status = Some(s);
        obj.spec.exposure = None;
        let plain = crate::controller::validate::validate(&obj).unwrap();
        let s = compute(&obj, applied(&plain, exposure::Observed::default()), &t(20));
        assert_eq!(get(&s, READY).status, "True");
        let types: Vec<_> = s.conditions.iter().flatten().map(|c| c.type_.as_str()).collect();
        assert!(
            !types.contains(&EXPOSURE_READY) && !types.contains(&CERTIFICATE_READY),
            "{types:?}"
        );
        assert_eq!(s.url.as_deref(), Some("http://acme.tenant.svc"));
    }

    #[test]
    fn available_deployment_is_ready_at_current_generation() {
        let obj = instance_from_yaml(EXTERNAL);
        let v = valid_from_yaml(EXTERNAL);
        let d = deployment(2, 2, 1, 1, 1);
        let s = compute(
            &obj,
            Outcome::Applied {
                valid: &v,
                deployment: &d,
                inputs_hash: "h",
                problem: None,
                exposure: Default::default(),
                upgrade: None,
            },
            &t(10),
        );
        assert_eq!(s.observed_generation, Some(1));
        assert_eq!(get(&s, READY).status, "True");
        assert_eq!(get(&s, READY).reason, "Available");
        assert_eq!(get(&s, READY).observed_generation, Some(1));
        assert_eq!(get(&s, RECONCILING).status, "False");
        assert_eq!(get(&s, STALLED).status, "False");
        assert_eq!(s.version.as_deref(), Some("1.2.3"));
        assert_eq!(s.url.as_deref(), Some("http://acme.tenant.svc"));
        assert_eq!(s.effective.as_ref().unwrap().inputs_hash, "h");
        assert_eq!(
            s.selector.as_deref(),
            Some(
                "app.kubernetes.io/component=server,app.kubernetes.io/instance=acme,app.kubernetes.io/name=tmi"
            )
        );
    }

    #[test]
    fn rollout_in_progress_is_reconciling() {
        let obj = instance_from_yaml(EXTERNAL);
        let v = valid_from_yaml(EXTERNAL);
        for d in [
            deployment(2, 1, 1, 1, 1),
            deployment(2, 2, 2, 1, 1),
            deployment(2, 2, 1, 1, 0),
        ] {
            let s = compute(
                &obj,
                Outcome::Applied {
                    valid: &v,
                    deployment: &d,
                    inputs_hash: "h",
                    problem: None,
                    exposure: Default::default(),
                    upgrade: None,
                },
                &t(10),
            );
            assert_eq!(get(&s, READY).status, "False", "{d:?}");
            assert_eq!(get(&s, READY).reason, "DeploymentUnavailable");
            assert_eq!(get(&s, RECONCILING).status, "True");
            assert_eq!(s.version, None, "version reports what runs, not what is wanted");
        }
    }

    #[test]
    fn failing_server_pods_stall_with_their_reason_until_the_rollout_completes() {
        let obj = instance_from_yaml(EXTERNAL);
        let v = valid_from_yaml(EXTERNAL);
        let problem = ServerProblem {
            reason: "DatabaseUnreachable",
            message: "the server cannot reach its database (2 restarts): …".to_owned(),
        };
        let s = compute(
            &obj,
            Outcome::Applied {
                valid: &v,
                deployment: &deployment(1, 1, 1, 1, 0),
                inputs_hash: "h",
                problem: Some(&problem),
                exposure: Default::default(),
                upgrade: None,
            },
            &t(10),
        );
        for type_ in [READY, RECONCILING, SERVER_AVAILABLE] {
            assert_eq!(get(&s, type_).status, "False", "{type_}");
            assert_eq!(get(&s, type_).reason, "DatabaseUnreachable", "{type_}");
        }
        assert_eq!(get(&s, STALLED).status, "True");
        assert_eq!(get(&s, READY).message, problem.message);
        // Once the pods are available, a stale diagnosis cannot hold the instance back.
        let s = compute(
            &obj,
            Outcome::Applied {
                valid: &v,
                deployment: &deployment(1, 1, 1, 1, 1),
                inputs_hash: "h",
                problem: Some(&problem),
                exposure: Default::default(),
                upgrade: None,
            },
            &t(20),
        );
        assert_eq!(get(&s, READY).status, "True");
        assert_eq!(get(&s, STALLED).status, "False");
    }

    #[test]
    fn missing_secret_is_stalled_with_reason() {
        let obj = instance_from_yaml(EXTERNAL);
        let v = valid_from_yaml(EXTERNAL);
        let problems = [Problem::SecretNotFound {
            name: "acme-db".into(),
        }];
        let s = compute(&obj, Outcome::InputsMissing(&v, &problems), &t(10));
        assert_eq!(get(&s, STALLED).status, "True");
        assert_eq!(get(&s, STALLED).reason, "SecretNotFound");
        assert_eq!(get(&s, READY).reason, "SecretNotFound");
        assert_eq!(get(&s, SECRETS_RESOLVED).status, "False");
    }

    #[test]
    fn invalid_spec_is_stalled() {
        let obj = instance_from_yaml(EXTERNAL);
        let e = InvalidSpec {
            field: "spec.server.replicas".into(),
            message: "bad".into(),
        };
        let s = compute(&obj, Outcome::Invalid(&e), &t(10));
        assert_eq!(get(&s, STALLED).reason, "InvalidSpec");
        assert_eq!(get(&s, STALLED).message, "spec.server.replicas: bad");
    }

    #[test]
    fn recompute_is_identical_and_keeps_transition_times() {
        let mut obj = instance_from_yaml(EXTERNAL);
        let v = valid_from_yaml(EXTERNAL);
        let d = deployment(1, 1, 1, 1, 1);
        let first = compute(
            &obj,
            Outcome::Applied {
                valid: &v,
                deployment: &d,
                inputs_hash: "h",
                problem: None,
                exposure: Default::default(),
                upgrade: None,
            },
            &t(10),
        );
        obj.status = Some(first.clone());
        let second = compute(
            &obj,
            Outcome::Applied {
                valid: &v,
                deployment: &d,
                inputs_hash: "h",
                problem: None,
                exposure: Default::default(),
                upgrade: None,
            },
            &t(99),
        );
        assert_eq!(first, second);
        assert!(transitions(Some(&first), &second).is_empty());
        // A new generation changes observedGeneration but not transition times of unchanged statuses.
        obj.metadata.generation = Some(2);
        let third = compute(
            &obj,
            Outcome::Applied {
                valid: &v,
                deployment: &d,
                inputs_hash: "h",
                problem: None,
                exposure: Default::default(),
                upgrade: None,
            },
            &t(99),
        );
        assert_eq!(get(&third, READY).last_transition_time, t(10));
        assert_eq!(get(&third, READY).observed_generation, Some(2));
    }

    #[test]
    fn transitions_fire_on_status_or_reason_change() {
        let mut obj = instance_from_yaml(EXTERNAL);
        let v = valid_from_yaml(EXTERNAL);
        let d = deployment(1, 1, 1, 0, 0);
        let rolling = compute(
            &obj,
            Outcome::Applied {
                valid: &v,
                deployment: &d,
                inputs_hash: "h",
                problem: None,
                exposure: Default::default(),
                upgrade: None,
            },
            &t(1),
        );
        obj.status = Some(rolling.clone());
        let d = deployment(1, 1, 1, 1, 1);
        let ready = compute(
            &obj,
            Outcome::Applied {
                valid: &v,
                deployment: &d,
                inputs_hash: "h",
                problem: None,
                exposure: Default::default(),
                upgrade: None,
            },
            &t(2),
        );
        let types: Vec<_> = transitions(Some(&rolling), &ready)
            .into_iter()
            .map(|c| c.type_)
            .collect();
        assert_eq!(types, [READY, RECONCILING, SERVER_AVAILABLE]);
        assert_eq!(get(&ready, READY).last_transition_time, t(2));
        assert_eq!(get(&ready, STALLED).last_transition_time, t(1));
    }

    #[test]
    fn suspended_is_neither_reconciling_nor_stalled() {
        let mut obj = instance_from_yaml(EXTERNAL);
        let v = valid_from_yaml(EXTERNAL);
        let d = deployment(1, 1, 1, 1, 1);
        obj.status = Some(compute(
            &obj,
            Outcome::Applied {
                valid: &v,
                deployment: &d,
                inputs_hash: "h",
                problem: None,
                exposure: Default::default(),
                upgrade: None,
            },
            &t(1),
        ));
        obj.metadata.generation = Some(2);
        let s = compute(&obj, Outcome::Suspended(&v), &t(2));
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(get(&s, RECONCILING).reason, "Suspended");
        assert_eq!(get(&s, STALLED).status, "False");
        assert_eq!(
            get(&s, READY).status,
            "True",
            "a suspended instance keeps serving"
        );
        assert_eq!(get(&s, READY).reason, "Suspended");
    }
}
