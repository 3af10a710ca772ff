//! The hub's background tasks: the bus subscription (events to `bus::dispatch`, interruptions to
//! `bus::recover`), the replica heartbeat, and the janitor, which ends sessions nobody has been
//! connected to for the grace period, announces participant lists that lost a dead replica's
//! sockets, and checks each local session against the database. The tasks hold the hub weakly
//! and end when it is dropped. IO: the backend and the store.

use std::sync::Arc;

use chrono::Utc;

use super::Hub;
use super::local::LocalSession;
use super::messages::vector_of;
use crate::collab::backend::{Backend, Signal};
use crate::collab::registry::SessionRecord;

/// Starts the subscription and the heartbeat (with a janitor pass every other beat).
pub(super) fn spawn(hub: &Arc<Hub>, backend: &dyn Backend) {
    let mut signals = backend.subscribe();
    let weak = Arc::downgrade(hub);
    let mut alive = hub.alive.subscribe();
    tokio::spawn(async move {
        loop {
            let signal = tokio::select! {
                s = signals.recv() => s,
                // The hub was dropped: end the subscription too.
                _ = alive.changed() => None,
            };
            let Some(signal) = signal else { return };
            let Some(hub) = weak.upgrade() else { return };
            match signal {
                Signal::Message(payload) => hub.dispatch(&payload),
                Signal::Gap => hub.recover().await,
            }
        }
    });
    let weak = Arc::downgrade(hub);
    tokio::spawn(async move {
        let mut tick = 0u64;
        loop {
            let Some(hub) = weak.upgrade() else { return };
            let period = hub.settings.heartbeat;
            if let Err(e) = hub.registry.heartbeat(&hub.replica, period * 3).await {
                tracing::warn!(error = %e, "collaboration heartbeat failed");
            }
            if tick.is_multiple_of(2) {
                hub.janitor().await;
                hub.untrack_gone_sessions().await;
            }
            tick += 1;
            drop(hub);
            tokio::time::sleep(period).await;
        }
    });
}

impl Hub {
    /// Periodic upkeep: ends sessions nobody is connected to, drops dead replicas' participants,
    /// and checks each local session against the database (a lost event with no later one to
    /// reveal the gap).
    pub(super) async fn janitor(self: &Arc<Self>) {
        let sessions = match self.registry.all().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "collaboration janitor cannot list sessions");
                return;
            }
        };
        for record in sessions {
            self.tidy(&record).await;
        }
        let locals: Vec<Arc<LocalSession>> = self.locals().values().cloned().collect();
        for local in locals {
            self.check_against_database(&local).await;
        }
    }

    /// One session: announce a participant list that lost entries (a dead replica's sockets), and
    /// end the session once nobody has been connected for the grace period.
    async fn tidy(&self, record: &SessionRecord) {
        let sid = record.session_id;
        let before = self
            .registry
            .backend()
            .hgetall(&format!("participants:{sid}"))
            .await;
        let Ok(live) = self.registry.participants(sid).await else {
            return;
        };
        if before.as_ref().is_ok_and(|b| b.len() != live.len()) && !live.is_empty() {
            self.participants_changed(sid, None).await;
        }
        if !live.is_empty() {
            let _ = self.registry.clear_empty(sid).await;
            return;
        }
        let since = self
            .registry
            .empty_since(sid)
            .await
            .unwrap_or_else(|_| Utc::now())
            .max(record.created_at);
        let grace = chrono::Duration::from_std(self.settings.empty_session_grace)
            .unwrap_or_else(|_| chrono::Duration::seconds(30));
        if Utc::now() - since >= grace {
            tracing::info!(session = %sid, "ending a collaboration session nobody is connected to");
            let _ = self.end_session(record, "Session ended: no participants").await;
        }
    }

    /// Resyncs a local session that stayed behind the database across two checks.
    async fn check_against_database(self: &Arc<Self>, local: &Arc<LocalSession>) {
        let record = local.record();
        let Ok(diagram) = self.load_diagram(&record).await else {
            return;
        };
        let stale = local.dispatch().behind(vector_of(&diagram));
        if stale {
            tracing::info!(session = %record.session_id, "collaboration: behind the database; resyncing");
            self.resync(local).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collab::backend::RedisBackend;
    use crate::collab::hub::Settings;
    use crate::collab::hub::testing::Fixture;
    use crate::metrics::CollabMetrics;
    use std::time::Duration;
    use uuid::Uuid;

    async fn subscribers(conn: &mut redis::aio::MultiplexedConnection, channel: &str) -> i64 {
        let reply: (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(conn)
            .await
            .unwrap();
        reply.1
    }

    /// A hub that is dropped (tests, shutdown) leaves no subscriber connection behind.
    #[tokio::test]
    async fn dropping_the_hub_ends_its_redis_subscription() {
        let url = std::env::var("TMI_TEST_REDIS_URL")
            .expect("TMI_TEST_REDIS_URL is not set: run the tests with `make test`, which starts Redis");
        let prefix = format!("test:{}:", Uuid::new_v4().simple());
        let backend = Arc::new(RedisBackend::connect(&url, &prefix).await.unwrap());
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Sqlite::connect(&format!("sqlite://{}/t.db", dir.path().display()), 1)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let hub = Hub::start(
            backend,
            Arc::new(store),
            Arc::new(crate::openapi::Spec::embedded().unwrap()),
            Settings::default(),
            CollabMetrics::default(),
        );
        let mut conn = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let channel = format!("{prefix}collab:events");
        let mut n = 0;
        for _ in 0..100 {
            n = subscribers(&mut conn, &channel).await;
            if n == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(n, 1, "the hub subscribes");
        drop(hub);
        for _ in 0..100 {
            n = subscribers(&mut conn, &channel).await;
            if n == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(n, 0, "the subscription ended with the hub");
    }

    #[tokio::test]
    async fn the_janitor_ends_a_session_nobody_joined_after_the_grace_period() {
        let f = Fixture::with(Settings {
            empty_session_grace: Duration::from_millis(500),
            heartbeat: Duration::from_secs(3600),
            ..Settings::default()
        })
        .await;
        let sid = f.session.session_id;
        f.hub.janitor().await;
        assert!(
            f.hub.registry.by_id(sid).await.unwrap().is_some(),
            "within the grace period"
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
        f.hub.janitor().await;
        assert!(f.hub.registry.by_id(sid).await.unwrap().is_none(), "ended");
    }

    #[tokio::test]
    async fn the_janitor_keeps_a_session_with_a_participant() {
        let f = Fixture::with(Settings {
            empty_session_grace: Duration::from_millis(1),
            heartbeat: Duration::from_secs(3600),
            ..Settings::default()
        })
        .await;
        let _alice = f.join("alice").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        f.hub.janitor().await;
        assert!(
            f.hub
                .registry
                .by_id(f.session.session_id)
                .await
                .unwrap()
                .is_some()
        );
    }
}
