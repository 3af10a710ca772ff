//! Ordered delivery: operation events reach this replica's sockets strictly in `update_vector`
//! order, whatever order the bus delivered them in. Early events are held; a gap that does not
//! fill within [`GAP_WAIT`] is closed by a resync from the database (`bus`); a socket that joins
//! gets its `diagram_state` first and then only newer events. Pure: operations on a session's
//! `Dispatch`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::local::{Dispatch, send};

/// How long an out-of-order event waits for the ones before it.
pub const GAP_WAIT: Duration = Duration::from_millis(300);

impl Dispatch {
    /// An operation event with `vector` arrived: deliver it and whatever it unblocks. `true` when
    /// a gap has just opened (the caller schedules a check after [`GAP_WAIT`]).
    pub(super) fn arrive(&mut self, vector: i64, exclude: Option<Uuid>, payload: Arc<str>) -> bool {
        self.held.insert(vector, (exclude, payload));
        self.drain();
        if self.held.is_empty() {
            self.gap_since = None;
            false
        } else if self.gap_since.is_none() {
            self.gap_since = Some(Instant::now());
            true
        } else {
            false
        }
    }

    /// Whether a gap has been open for at least [`GAP_WAIT`].
    pub(super) fn gap_overdue(&self) -> bool {
        self.gap_since.is_some_and(|t| t.elapsed() >= GAP_WAIT)
    }

    /// Delivers held events that continue the order.
    pub(super) fn drain(&mut self) {
        loop {
            if self.delivered == i64::MIN {
                return;
            }
            let Some((&v, _)) = self.held.first_key_value() else {
                return;
            };
            if v <= self.delivered {
                self.held.remove(&v);
                continue;
            }
            if v != self.delivered + 1 {
                return;
            }
            let Some((exclude, payload)) = self.held.remove(&v) else {
                return;
            };
            self.delivered = v;
            for (id, conn) in self.conns.iter_mut() {
                match conn.vector {
                    None => conn.pending.push((Some(v), exclude, payload.clone())),
                    Some(cv) if v > cv => {
                        conn.vector = Some(v);
                        if exclude != Some(*id) {
                            send(conn, payload.clone());
                        }
                    }
                    Some(_) => {}
                }
            }
        }
    }

    /// Sends one socket the diagram state at vector `v`, then whatever newer events were held for
    /// it. The first state loaded on this replica fixes where in-order delivery starts.
    pub(super) fn deliver_state(&mut self, conn_id: Uuid, v: i64, state: Arc<str>) {
        let first = self.delivered == i64::MIN;
        if first {
            self.delivered = v;
        }
        if let Some(conn) = self.conns.get_mut(&conn_id)
            && conn.vector.is_none_or(|cv| cv <= v)
        {
            send(conn, state);
            conn.vector = Some(v);
            for (ev, exclude, payload) in std::mem::take(&mut conn.pending) {
                match ev {
                    None => send(conn, payload),
                    Some(ev) if ev > v => {
                        conn.vector = Some(ev);
                        if exclude != Some(conn_id) {
                            send(conn, payload);
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        if first {
            self.drain();
            if self.held.is_empty() {
                self.gap_since = None;
            }
        }
    }

    /// Brings every socket behind the database's vector `v` up to it with `state`, drops held
    /// events up to `v` and delivers what follows. `true` when a gap remains (check again later).
    pub(super) fn catch_up(&mut self, v: i64, state: Arc<str>) -> bool {
        if v > self.delivered || self.delivered == i64::MIN {
            self.delivered = v;
        }
        let from = self.delivered.saturating_add(1);
        self.held = self.held.split_off(&from);
        for conn in self.conns.values_mut() {
            if conn.vector.is_some_and(|cv| cv < v) {
                send(conn, state.clone());
                conn.vector = Some(v);
            }
        }
        self.gap_since = None;
        self.suspect = None;
        self.drain();
        if self.held.is_empty() {
            false
        } else {
            self.gap_since = Some(Instant::now());
            true
        }
    }

    /// The anti-entropy check: the database is at `v`. `true` when this replica was already behind
    /// it at the previous check too (a lost last event that no later one reveals): resync.
    pub(super) fn behind(&mut self, v: i64) -> bool {
        if v > self.delivered {
            let seen_before = self.suspect.is_some_and(|s| s <= v);
            self.suspect = Some(v);
            seen_before
        } else {
            self.suspect = None;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collab::hub::local::Outbound;
    use crate::collab::hub::testing::{conn, user};
    use tokio::sync::mpsc;

    fn texts(rx: &mut mpsc::Receiver<Outbound>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(Outbound::Text(t)) = rx.try_recv() {
            out.push(t.to_string());
        }
        out
    }

    /// A session at vector 5 with one socket that has its state.
    fn session() -> (Dispatch, Uuid, mpsc::Receiver<Outbound>) {
        let mut d = Dispatch {
            delivered: 5,
            ..Dispatch::default()
        };
        let (mut c, rx, _control) = conn(user("alice"), 16);
        c.vector = Some(5);
        let id = Uuid::new_v4();
        d.conns.insert(id, c);
        (d, id, rx)
    }

    #[test]
    fn events_that_arrive_out_of_order_are_delivered_in_order() {
        let (mut d, _, mut rx) = session();
        assert!(d.arrive(7, None, Arc::from("e7")), "a gap opens");
        assert!(texts(&mut rx).is_empty(), "7 waits for 6");
        assert!(!d.arrive(6, None, Arc::from("e6")));
        assert_eq!(texts(&mut rx), ["e6", "e7"]);
        assert!(d.gap_since.is_none());
        // A duplicate or old event is dropped.
        d.arrive(6, None, Arc::from("again"));
        assert!(texts(&mut rx).is_empty());
    }

    #[test]
    fn the_originating_socket_does_not_get_its_own_event() {
        let (mut d, id, mut rx) = session();
        d.arrive(6, Some(id), Arc::from("mine"));
        assert!(texts(&mut rx).is_empty());
        assert_eq!(d.conns[&id].vector, Some(6), "but it has seen it");
    }

    #[test]
    fn a_joining_socket_gets_its_state_then_only_newer_events() {
        let (mut d, _, _rx) = session();
        let (c, mut rx, _control) = conn(user("bob"), 16);
        let bob = Uuid::new_v4();
        d.conns.insert(bob, c);
        // Events 6 and 7 arrive while bob's state (loaded at vector 6) is on its way.
        d.arrive(6, None, Arc::from("e6"));
        d.arrive(7, None, Arc::from("e7"));
        assert!(texts(&mut rx).is_empty(), "held for bob");
        d.deliver_state(bob, 6, Arc::from("state@6"));
        assert_eq!(texts(&mut rx), ["state@6", "e7"]);
    }

    #[test]
    fn a_resync_brings_sockets_up_to_the_database_and_closes_the_gap() {
        let (mut d, _, mut rx) = session();
        d.arrive(9, None, Arc::from("e9"));
        assert!(!d.catch_up(8, Arc::from("state@8")), "9 follows 8: no gap left");
        assert_eq!(texts(&mut rx), ["state@8", "e9"]);
        assert_eq!(d.delivered, 9);
    }

    #[test]
    fn the_anti_entropy_check_resyncs_only_when_behind_twice() {
        let (mut d, _, _rx) = session();
        assert!(!d.behind(6), "maybe the event is on its way");
        assert!(d.behind(6), "still behind at the next check");
        assert!(!d.behind(5));
    }
}
