//! Fleet waves: how many instances may upgrade at once, in which order, and whether a failure stops the rest.
//! Pure logic behind one mutex, shared by every controller of the operator process (no IO).
//!
//! Each reconcile of an instance with a pending version change asks [`Fleet::request`] for a slot, and every
//! reconcile reports where its upgrade stands ([`Fleet::report`]). A slot is held from the migrate Job's
//! creation until the new version is rolled out (or the upgrade fails), so at most `limit` instances migrate
//! or roll out at once. Waiting instances take free slots in order: lower `tmi.dev/upgrade-priority` first,
//! then first come, then by name. With `pause_on_failure`, a failed upgrade anywhere stops new upgrades from
//! starting (those under way finish) until that instance recovers (its version set back, or fixed).
//!
//! The operator's memory is the authority for instances it has reconciled since it started; for the others
//! (just after a restart or a leader change) the caller passes what their `status.upgrade` says, so a new
//! leader neither exceeds the limit nor forgets a failure.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::controller::upgrade::{FleetReport, Slot};
use crate::crd::UpgradePhase;

/// `namespace/name` of an instance.
pub type Key = (String, String);

/// What to do when an upgrade fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Start no new upgrades while one has failed (a bad release stops at its first tenants).
    #[default]
    Pause,
    /// Keep going.
    Continue,
}

/// Fleet settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Instances upgrading at once; `None` for no limit.
    pub max_concurrent: Option<u32>,
    /// What a failure does to the rest.
    pub on_failure: FailurePolicy,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_concurrent: Some(5),
            on_failure: FailurePolicy::Pause,
        }
    }
}

/// Another instance as its status shows it (for instances the operator has not reconciled yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The instance.
    pub key: Key,
    /// `status.upgrade.phase`.
    pub phase: Option<UpgradePhase>,
    /// Its priority.
    pub priority: i32,
    /// Whether its spec asks for another image than its pods were last reported running.
    pub pending: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    state: FleetReport,
    priority: i32,
    /// Order of arrival in the queue.
    since: u64,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    arrivals: u64,
}

/// The operator-wide slot table.
#[derive(Debug, Default)]
pub struct Fleet {
    limits: Limits,
    inner: Mutex<Inner>,
}

impl Fleet {
    /// A fleet with these limits.
    pub fn new(limits: Limits) -> Self {
        Fleet {
            limits,
            inner: Mutex::default(),
        }
    }

    /// The settings.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// May `key` start its upgrade now? `peers` are all instances the operator watches, as their statuses
    /// show them (instances that no longer exist are forgotten). A granted slot is reserved at once.
    pub fn request(&self, key: &Key, priority: i32, peers: &[Peer]) -> Slot {
        let Ok(mut inner) = self.inner.lock() else {
            return Slot::Wait("the operator's upgrade table is unavailable".to_owned());
        };
        let inner = &mut *inner;
        if !peers.is_empty() {
            inner
                .entries
                .retain(|k, _| k == key || peers.iter().any(|p| &p.key == k));
        }
        let arrival = inner.arrivals;
        let me = inner.entries.entry(key.clone()).or_insert(Entry {
            state: FleetReport::Wants,
            priority,
            since: arrival,
        });
        if me.state == FleetReport::Holds {
            return Slot::Granted;
        }
        if me.state != FleetReport::Wants {
            me.state = FleetReport::Wants;
            me.since = arrival;
        }
        me.priority = priority;
        inner.arrivals += 1;

        // Everyone's state: the operator's memory, else the status.
        let mut states: Vec<(Key, FleetReport, i32, u64)> = inner
            .entries
            .iter()
            .map(|(k, e)| (k.clone(), e.state, e.priority, e.since))
            .collect();
        for p in peers.iter().filter(|p| !inner.entries.contains_key(&p.key)) {
            let state = match p.phase {
                Some(UpgradePhase::Migrating | UpgradePhase::RollingOut) if p.pending => FleetReport::Holds,
                Some(UpgradePhase::Failed) if p.pending => FleetReport::Failed,
                _ if p.pending => FleetReport::Wants,
                _ => FleetReport::Idle,
            };
            states.push((p.key.clone(), state, p.priority, u64::MAX));
        }

        if self.limits.on_failure == FailurePolicy::Pause
            && let Some((failed, ..)) = states
                .iter()
                .filter(|(k, s, ..)| *s == FleetReport::Failed && k != key)
                .min_by(|a, b| a.0.cmp(&b.0))
        {
            return Slot::Wait(format!(
                "upgrades are paused because the upgrade of {}/{} failed (set its spec.version back, or fix it, \
                 to resume)",
                failed.0, failed.1
            ));
        }
        // Priorities are waves: a later wave starts once every instance of the earlier ones is done.
        if let Some((earlier, _, p, _)) = states
            .iter()
            .filter(|(k, s, p, _)| {
                k != key && *p < priority && matches!(s, FleetReport::Wants | FleetReport::Holds)
            })
            .min_by(|a, b| (a.2, &a.0).cmp(&(b.2, &b.0)))
        {
            return Slot::Wait(format!(
                "the earlier upgrade wave (priority {p}) is still upgrading, e.g. {}/{}",
                earlier.0, earlier.1
            ));
        }
        let holding = states
            .iter()
            .filter(|(_, s, ..)| *s == FleetReport::Holds)
            .count();
        let free = match self.limits.max_concurrent {
            Some(limit) => (limit as usize).saturating_sub(holding),
            None => usize::MAX,
        };
        let mut queue: Vec<&(Key, FleetReport, i32, u64)> = states
            .iter()
            .filter(|(_, s, ..)| *s == FleetReport::Wants)
            .collect();
        queue.sort_by(|a, b| (a.2, a.3, &a.0).cmp(&(b.2, b.3, &b.0)));
        let rank = queue.iter().position(|(k, ..)| k == key).unwrap_or(queue.len());
        if rank < free {
            if let Some(me) = inner.entries.get_mut(key) {
                me.state = FleetReport::Holds;
            }
            return Slot::Granted;
        }
        let limit = self
            .limits
            .max_concurrent
            .map_or("unlimited".to_owned(), |l| l.to_string());
        Slot::Wait(format!(
            "{holding} of {limit} upgrade slots in use, {rank} instance(s) ahead in the queue"
        ))
    }

    /// Records where `key`'s upgrade stands after a reconcile.
    pub fn report(&self, key: &Key, report: FleetReport, priority: i32) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        match report {
            FleetReport::Idle => {
                inner.entries.remove(key);
            }
            FleetReport::Wants => {
                // Queued by `request` (its place is kept); a reserved slot goes back to the queue.
                let since = inner.arrivals;
                let e = inner.entries.entry(key.clone()).or_insert(Entry {
                    state: FleetReport::Wants,
                    priority,
                    since,
                });
                if e.state != FleetReport::Wants {
                    e.state = FleetReport::Wants;
                    e.since = since;
                }
                inner.arrivals += 1;
            }
            FleetReport::Holds | FleetReport::Failed => {
                let since = inner.arrivals;
                let e = inner.entries.entry(key.clone()).or_insert(Entry {
                    state: report,
                    priority,
                    since,
                });
                e.state = report;
                e.priority = priority;
            }
        }
    }

    /// Instances holding a slot now (for metrics and tests).
    pub fn holding(&self) -> usize {
        self.inner
            .lock()
            .map(|i| {
                i.entries
                    .values()
                    .filter(|e| e.state == FleetReport::Holds)
                    .count()
            })
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: &str) -> Key {
        ("t".to_owned(), n.to_owned())
    }

    fn fleet(limit: u32, on_failure: FailurePolicy) -> Fleet {
        Fleet::new(Limits {
            max_concurrent: Some(limit),
            on_failure,
        })
    }

    #[test]
    fn at_most_the_limit_upgrade_at_once_and_freed_slots_are_reused() {
        let f = fleet(2, FailurePolicy::Pause);
        assert_eq!(f.request(&key("a"), 100, &[]), Slot::Granted);
        assert_eq!(f.request(&key("b"), 100, &[]), Slot::Granted);
        assert!(matches!(f.request(&key("c"), 100, &[]), Slot::Wait(_)));
        // Asking again while holding keeps the slot.
        assert_eq!(f.request(&key("a"), 100, &[]), Slot::Granted);
        assert_eq!(f.holding(), 2);
        f.report(&key("a"), FleetReport::Idle, 100);
        assert_eq!(f.request(&key("c"), 100, &[]), Slot::Granted);
        assert!(matches!(f.request(&key("d"), 100, &[]), Slot::Wait(_)));
    }

    #[test]
    fn lower_priority_numbers_go_first_then_first_come() {
        let f = fleet(1, FailurePolicy::Pause);
        assert_eq!(f.request(&key("busy"), 100, &[]), Slot::Granted);
        for n in ["early", "late"] {
            assert!(matches!(f.request(&key(n), 100, &[]), Slot::Wait(_)));
        }
        assert!(matches!(f.request(&key("canary"), 0, &[]), Slot::Wait(_)));
        f.report(&key("busy"), FleetReport::Idle, 100);
        // The canary arrived last but has the lowest number.
        assert!(matches!(f.request(&key("early"), 100, &[]), Slot::Wait(_)));
        assert_eq!(f.request(&key("canary"), 0, &[]), Slot::Granted);
        f.report(&key("canary"), FleetReport::Idle, 0);
        // Then arrival order.
        assert!(matches!(f.request(&key("late"), 100, &[]), Slot::Wait(_)));
        assert_eq!(f.request(&key("early"), 100, &[]), Slot::Granted);
    }

    #[test]
    fn a_later_wave_waits_until_the_earlier_one_is_done_even_with_free_slots() {
        let f = fleet(5, FailurePolicy::Continue);
        assert_eq!(f.request(&key("canary"), 0, &[]), Slot::Granted);
        match f.request(&key("tenant"), 100, &[]) {
            Slot::Wait(why) => assert!(why.contains("priority 0") && why.contains("t/canary"), "{why}"),
            Slot::Granted => panic!("the canary wave is not done"),
        }
        f.report(&key("canary"), FleetReport::Idle, 0);
        assert_eq!(f.request(&key("tenant"), 100, &[]), Slot::Granted);
        // A canary the operator has not reconciled yet, whose spec changed, counts too.
        let f = fleet(5, FailurePolicy::Continue);
        let peers = [
            Peer {
                key: key("canary"),
                phase: None,
                priority: 0,
                pending: true,
            },
            Peer {
                key: key("tenant"),
                phase: None,
                priority: 100,
                pending: true,
            },
        ];
        assert!(matches!(f.request(&key("tenant"), 100, &peers), Slot::Wait(_)));
    }

    #[test]
    fn a_failure_pauses_new_upgrades_until_it_recovers() {
        let f = fleet(3, FailurePolicy::Pause);
        assert_eq!(f.request(&key("canary"), 0, &[]), Slot::Granted);
        assert_eq!(f.request(&key("b"), 0, &[]), Slot::Granted);
        f.report(&key("canary"), FleetReport::Failed, 0);
        match f.request(&key("c"), 100, &[]) {
            Slot::Wait(why) => assert!(why.contains("t/canary failed"), "{why}"),
            Slot::Granted => panic!("the wave must stop"),
        }
        // Those under way keep their slot.
        assert_eq!(f.request(&key("b"), 0, &[]), Slot::Granted);
        f.report(&key("canary"), FleetReport::Idle, 0);
        f.report(&key("b"), FleetReport::Idle, 0);
        assert_eq!(f.request(&key("c"), 100, &[]), Slot::Granted);

        let f = fleet(3, FailurePolicy::Continue);
        f.report(&key("canary"), FleetReport::Failed, 0);
        assert_eq!(f.request(&key("c"), 100, &[]), Slot::Granted);
    }

    #[test]
    fn after_a_restart_statuses_count_and_deleted_instances_are_forgotten() {
        let f = fleet(2, FailurePolicy::Pause);
        let peer = |n: &str, phase| Peer {
            key: key(n),
            phase: Some(phase),
            priority: 100,
            pending: true,
        };
        let peers = [
            peer("x", UpgradePhase::Migrating),
            peer("y", UpgradePhase::RollingOut),
            peer("me", UpgradePhase::Waiting),
        ];
        assert!(matches!(f.request(&key("me"), 100, &peers), Slot::Wait(_)));
        let peers = [peer("x", UpgradePhase::Failed), peer("me", UpgradePhase::Waiting)];
        assert!(matches!(f.request(&key("me"), 100, &peers), Slot::Wait(w) if w.contains("t/x failed")));
        let peers = [peer("me", UpgradePhase::Waiting)];
        assert_eq!(f.request(&key("me"), 100, &peers), Slot::Granted);

        // An instance deleted while waiting does not block those behind it.
        let f = fleet(1, FailurePolicy::Pause);
        assert_eq!(f.request(&key("a"), 100, &[]), Slot::Granted);
        assert!(matches!(f.request(&key("gone"), 0, &[]), Slot::Wait(_)));
        assert!(matches!(f.request(&key("b"), 100, &[]), Slot::Wait(_)));
        f.report(&key("a"), FleetReport::Idle, 100);
        let peers = [Peer {
            key: key("b"),
            phase: Some(UpgradePhase::Waiting),
            priority: 100,
            pending: true,
        }];
        assert_eq!(f.request(&key("b"), 100, &peers), Slot::Granted);
    }
}
