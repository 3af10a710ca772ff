//! Revoked access tokens, token families (logout, `/oauth2/revoke`, refresh-token reuse) and client
//! credentials (every token a deleted credential granted). The database (`token_revocations`) is
//! the record, so neither a Redis restart nor a replica restart revives a revoked token; every
//! replica keeps the revocations in force in process memory, so the per-request check costs a hash
//! lookup and no IO. Replicas learn of each other's revocations through a pub/sub channel (Redis
//! across replicas, in-process otherwise) at once, and by reading what is new in the database every
//! `POLL` (and after a gap in the channel) in case a message was lost. IO: the store and the channel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use chrono::Utc;

use crate::collab::backend::{Backend, Signal};
use crate::store::{RevocationRecord, Store, StoreResult};

/// How often each replica reads new revocations from the database, besides the channel.
const POLL: Duration = Duration::from_secs(30);

/// How far back each poll looks beyond the previous one: revocations recorded by replicas whose
/// clocks are behind, or committed while the previous poll ran, are not missed.
const OVERLAP_MS: i64 = 60_000;

/// The revocation key of an access token (by its SHA-256, as upstream's `blacklist:token:`).
pub fn token_key(token_hash: &str) -> String {
    format!("token:{token_hash}")
}

/// The revocation key of a token family (every token of one login).
pub fn family_key(family: &str) -> String {
    format!("family:{family}")
}

/// The revocation key of a client credential (every token it granted).
pub fn credential_key(credential: &uuid::Uuid) -> String {
    format!("credential:{credential}")
}

/// The revocations in force, cached.
pub struct Revocations {
    store: Arc<dyn Store>,
    bus: Arc<dyn Backend>,
    /// Key → expiry (unix seconds).
    cache: RwLock<HashMap<String, i64>>,
    /// Start (unix milliseconds) of the last successful read from the database.
    synced_at: Mutex<i64>,
}

impl Revocations {
    /// Loads the revocations in force and follows new ones until the returned value is dropped.
    pub async fn start(store: Arc<dyn Store>, bus: Arc<dyn Backend>) -> StoreResult<Arc<Self>> {
        let me = Arc::new(Self {
            store,
            bus,
            cache: RwLock::default(),
            synced_at: Mutex::new(0),
        });
        me.sync().await?;
        let signals = me.bus.subscribe();
        tokio::spawn(follow(Arc::downgrade(&me), signals));
        Ok(me)
    }

    /// Whether `key` is revoked now. No IO.
    pub fn is_revoked(&self, key: &str) -> bool {
        let now = Utc::now().timestamp();
        self.cache
            .read()
            .map(|c| c.get(key).is_some_and(|exp| *exp > now))
            // A poisoned lock: fail closed.
            .unwrap_or(true)
    }

    /// Revokes `key` until `expires_at` (unix seconds): recorded in the database first (an error
    /// there fails the request), then cached here and announced to the other replicas.
    pub async fn revoke(&self, key: String, expires_at: i64) -> StoreResult<()> {
        let record = RevocationRecord {
            key,
            expires_at,
            revoked_at: Utc::now().timestamp_millis(),
        };
        self.store.insert_revocation(&record).await?;
        self.remember(&record.key, record.expires_at);
        if let Err(e) = self.bus.publish(&format!("{expires_at} {}", record.key)).await {
            // The other replicas read it from the database within `POLL`.
            tracing::warn!(error = %e, "announcing a revocation failed");
        }
        Ok(())
    }

    fn remember(&self, key: &str, expires_at: i64) {
        if let Ok(mut c) = self.cache.write() {
            let e = c.entry(key.to_owned()).or_insert(expires_at);
            *e = (*e).max(expires_at);
        }
    }

    /// A message from the channel: `<expires_at> <key>`.
    fn apply(&self, payload: &str) {
        if let Some((exp, key)) = payload.split_once(' ')
            && let Ok(exp) = exp.parse::<i64>()
        {
            self.remember(key, exp);
        }
    }

    /// Reads what is new in the database (everything, the first time) and forgets what expired.
    async fn sync(&self) -> StoreResult<()> {
        let started = Utc::now().timestamp_millis();
        let since = self
            .synced_at
            .lock()
            .map(|s| if *s == 0 { 0 } else { *s - OVERLAP_MS })
            .unwrap_or(0);
        let now = Utc::now().timestamp();
        let fresh = self.store.revocations_since(since, now).await?;
        if let Ok(mut c) = self.cache.write() {
            c.retain(|_, exp| *exp > now);
            for r in fresh {
                let e = c.entry(r.key).or_insert(r.expires_at);
                *e = (*e).max(r.expires_at);
            }
        }
        if let Ok(mut s) = self.synced_at.lock() {
            *s = started;
        }
        Ok(())
    }
}

/// Follows the channel and polls the database while the revocations are in use; now and then
/// deletes expired rows.
async fn follow(me: Weak<Revocations>, mut signals: tokio::sync::mpsc::Receiver<Signal>) {
    let mut poll = tokio::time::interval(POLL);
    poll.tick().await;
    let mut polls: u64 = 0;
    loop {
        let signal = tokio::select! {
            s = signals.recv() => match s {
                Some(s) => Some(s),
                None => return,
            },
            _ = poll.tick() => None,
        };
        let Some(me) = me.upgrade() else { return };
        match signal {
            Some(Signal::Message(payload)) => me.apply(&payload),
            Some(Signal::Gap) | None => {
                if let Err(e) = me.sync().await {
                    tracing::warn!(error = %e, "reading revocations failed; retrying");
                }
                polls += 1;
                // About hourly: the table only needs what can still be presented.
                if polls.is_multiple_of(120)
                    && let Err(e) = me.store.purge_revocations(Utc::now().timestamp()).await
                {
                    tracing::warn!(error = %e, "purging expired revocations failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collab::backend::MemoryBackend;
    use crate::store::Sqlite;

    async fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/tmi.db", dir.path().display());
        let s = Sqlite::connect(&url, 2).await.unwrap();
        s.migrate().await.unwrap();
        (dir, Arc::new(s))
    }

    #[tokio::test]
    async fn revocations_survive_a_restart_and_reach_other_replicas() {
        let (_dir, store) = store().await;
        let bus: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
        let a = Revocations::start(store.clone(), bus.clone()).await.unwrap();
        let b = Revocations::start(store.clone(), bus.clone()).await.unwrap();
        let later = Utc::now().timestamp() + 600;
        a.revoke(token_key("abc"), later).await.unwrap();
        a.revoke(family_key("f"), Utc::now().timestamp() - 1)
            .await
            .unwrap();
        assert!(a.is_revoked("token:abc"));
        assert!(!a.is_revoked("family:f"), "an expired revocation is over");
        assert!(!a.is_revoked("token:other"));
        // The other replica hears it on the channel.
        for _ in 0..200 {
            if b.is_revoked("token:abc") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(b.is_revoked("token:abc"));
        // A replica started later (empty cache, no channel history) reads it from the database.
        let c = Revocations::start(store, Arc::new(MemoryBackend::default()))
            .await
            .unwrap();
        assert!(c.is_revoked("token:abc"));
    }
}
