//! Session bookkeeping shared by every replica, written once over [`Backend`]: which diagram has
//! which session, its host and presenter, who is connected where, the deny list, the sequence
//! counter, undo/redo history and replica liveness. IO through the backend only.
//!
//! Key layout (relative to `<prefix>collab:`; see docs/architecture.md):
//! `session:<sid>` record · `diagram:<did>` → sid · `sessions` set · `participants:<sid>` hash
//! conn → participant · `user:<user>` hash conn → replica · `deny:<sid>` set · `seq:<sid>` counter ·
//! `undo:<sid>` / `redo:<sid>` capped lists · `replica:<rid>` heartbeat with a TTL ·
//! `empty:<sid>` when the janitor first saw the session without participants.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::backend::Backend;
use super::protocol::{CellPatchOperation, ParticipantPermissions, User};

/// Undo history per session (upstream keeps 100 entries).
pub const HISTORY_CAP: usize = 100;

/// A session as every replica sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub session_id: Uuid,
    pub threat_model_id: Uuid,
    pub diagram_id: Uuid,
    pub host: User,
    pub presenter: Option<User>,
    pub created_at: DateTime<Utc>,
}

/// One connected socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticipantRecord {
    pub conn_id: Uuid,
    pub user: User,
    pub permissions: ParticipantPermissions,
    pub replica: String,
    pub joined_at: DateTime<Utc>,
    pub last_activity: DateTime<Utc>,
}

/// One undoable step: what was applied and what reverts it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub forward: CellPatchOperation,
    pub inverse: CellPatchOperation,
}

/// The undo (or redo) list of a session.
fn history_key(sid: Uuid, redo: bool) -> String {
    format!("{}:{sid}", if redo { "redo" } else { "undo" })
}

/// The identity key of a user: provider and provider id.
pub fn user_key(u: &User) -> String {
    format!("{}:{}", u.provider, u.provider_id)
}

/// Session bookkeeping over a backend.
#[derive(Clone)]
pub struct Registry {
    backend: Arc<dyn Backend>,
}

fn json<T: Serialize>(v: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string(v)?)
}

impl Registry {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self { backend }
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The diagram's session, creating one hosted by `host` when there is none. `true` when created.
    pub async fn create_or_get(
        &self,
        threat_model_id: Uuid,
        diagram_id: Uuid,
        host: &User,
    ) -> anyhow::Result<(SessionRecord, bool)> {
        for _ in 0..3 {
            let record = SessionRecord {
                session_id: Uuid::new_v4(),
                threat_model_id,
                diagram_id,
                host: host.clone(),
                presenter: Some(host.clone()),
                created_at: Utc::now(),
            };
            // The record goes in first, so that whoever sees the diagram mapping finds it.
            self.put(&record).await?;
            let sid = record.session_id.to_string();
            if self
                .backend
                .set_nx(&format!("diagram:{diagram_id}"), &sid)
                .await?
            {
                self.backend.sadd("sessions", &sid).await?;
                return Ok((record, true));
            }
            self.backend.del(&[format!("session:{sid}")]).await?;
            if let Some(existing) = self.by_diagram(diagram_id).await? {
                return Ok((existing, false));
            }
            // A mapping without its record (a session ending concurrently): clear it and retry.
            self.backend.del(&[format!("diagram:{diagram_id}")]).await?;
        }
        anyhow::bail!("could not create a collaboration session")
    }

    /// Writes (or rewrites) a session record.
    pub async fn put(&self, record: &SessionRecord) -> anyhow::Result<()> {
        self.backend
            .set(&format!("session:{}", record.session_id), &json(record)?, None)
            .await
    }

    pub async fn by_id(&self, sid: Uuid) -> anyhow::Result<Option<SessionRecord>> {
        match self.backend.get(&format!("session:{sid}")).await? {
            Some(s) => Ok(serde_json::from_str(&s).ok()),
            None => Ok(None),
        }
    }

    pub async fn by_diagram(&self, diagram_id: Uuid) -> anyhow::Result<Option<SessionRecord>> {
        let Some(sid) = self.backend.get(&format!("diagram:{diagram_id}")).await? else {
            return Ok(None);
        };
        let Ok(sid) = Uuid::parse_str(&sid) else {
            return Ok(None);
        };
        Ok(self.by_id(sid).await?.filter(|s| s.diagram_id == diagram_id))
    }

    /// Every active session.
    pub async fn all(&self) -> anyhow::Result<Vec<SessionRecord>> {
        let mut out = Vec::new();
        for sid in self.backend.smembers("sessions").await? {
            let Ok(id) = Uuid::parse_str(&sid) else { continue };
            match self.by_id(id).await? {
                Some(s) => out.push(s),
                None => self.backend.srem("sessions", &sid).await?,
            }
        }
        out.sort_by_key(|s| s.created_at);
        Ok(out)
    }

    /// Removes every key of a session.
    pub async fn end(&self, record: &SessionRecord) -> anyhow::Result<()> {
        let sid = record.session_id;
        for (conn, p) in self.backend.hgetall(&format!("participants:{sid}")).await? {
            if let Ok(p) = serde_json::from_str::<ParticipantRecord>(&p) {
                self.backend
                    .hdel(&format!("user:{}", user_key(&p.user)), &conn)
                    .await?;
            }
        }
        // Only drop the diagram mapping if it still points at this session.
        if self
            .backend
            .get(&format!("diagram:{}", record.diagram_id))
            .await?
            == Some(sid.to_string())
        {
            self.backend
                .del(&[format!("diagram:{}", record.diagram_id)])
                .await?;
        }
        self.backend
            .del(&[
                format!("session:{sid}"),
                format!("participants:{sid}"),
                format!("deny:{sid}"),
                format!("seq:{sid}"),
                format!("undo:{sid}"),
                format!("redo:{sid}"),
                format!("empty:{sid}"),
            ])
            .await?;
        self.backend.srem("sessions", &sid.to_string()).await
    }

    pub async fn join(&self, sid: Uuid, p: &ParticipantRecord) -> anyhow::Result<()> {
        self.backend
            .hset(&format!("participants:{sid}"), &p.conn_id.to_string(), &json(p)?)
            .await?;
        self.backend
            .hset(
                &format!("user:{}", user_key(&p.user)),
                &p.conn_id.to_string(),
                &p.replica,
            )
            .await?;
        self.backend.del(&[format!("empty:{sid}")]).await
    }

    pub async fn leave(&self, sid: Uuid, conn_id: Uuid, user: &User) -> anyhow::Result<()> {
        self.backend
            .hdel(&format!("participants:{sid}"), &conn_id.to_string())
            .await?;
        self.backend
            .hdel(&format!("user:{}", user_key(user)), &conn_id.to_string())
            .await
    }

    /// Whether a replica's heartbeat is current.
    pub async fn replica_alive(&self, replica: &str) -> anyhow::Result<bool> {
        Ok(self.backend.get(&format!("replica:{replica}")).await?.is_some())
    }

    pub async fn heartbeat(&self, replica: &str, ttl: Duration) -> anyhow::Result<()> {
        self.backend
            .set(&format!("replica:{replica}"), "1", Some(ttl))
            .await
    }

    /// Connected participants in join order; entries of dead replicas are removed on the way.
    pub async fn participants(&self, sid: Uuid) -> anyhow::Result<Vec<ParticipantRecord>> {
        let mut alive: HashMap<String, bool> = HashMap::new();
        let mut out = Vec::new();
        for (conn, raw) in self.backend.hgetall(&format!("participants:{sid}")).await? {
            let Ok(p) = serde_json::from_str::<ParticipantRecord>(&raw) else {
                self.backend.hdel(&format!("participants:{sid}"), &conn).await?;
                continue;
            };
            let live = match alive.get(&p.replica) {
                Some(l) => *l,
                None => {
                    let l = self.replica_alive(&p.replica).await?;
                    alive.insert(p.replica.clone(), l);
                    l
                }
            };
            if live {
                out.push(p);
            } else {
                self.leave(sid, p.conn_id, &p.user).await?;
            }
        }
        out.sort_by_key(|p| (p.joined_at, p.conn_id));
        Ok(out)
    }

    /// Reserves one of the user's `cap` sockets for `conn_id` on `replica`, atomically (entries of
    /// dead replicas are dropped first): `false` when the user is at the cap. `join` later fills in
    /// the same entry; `leave` (or `release`) frees it.
    pub async fn reserve_connection(
        &self,
        user: &User,
        conn_id: Uuid,
        replica: &str,
        cap: usize,
    ) -> anyhow::Result<bool> {
        let key = format!("user:{}", user_key(user));
        for (conn, r) in self.backend.hgetall(&key).await? {
            if !self.replica_alive(&r).await? {
                self.backend.hdel(&key, &conn).await?;
            }
        }
        self.backend
            .hset_capped(&key, &conn_id.to_string(), replica, cap)
            .await
    }

    /// Frees a reservation that never became a connection.
    pub async fn release(&self, user: &User, conn_id: Uuid) -> anyhow::Result<()> {
        self.backend
            .hdel(&format!("user:{}", user_key(user)), &conn_id.to_string())
            .await
    }

    /// Open sockets of one user, over all sessions and live replicas.
    pub async fn user_connections(&self, user: &User) -> anyhow::Result<usize> {
        let mut n = 0;
        for (_, replica) in self.backend.hgetall(&format!("user:{}", user_key(user))).await? {
            if self.replica_alive(&replica).await? {
                n += 1;
            }
        }
        Ok(n)
    }

    pub async fn deny(&self, sid: Uuid, user: &User) -> anyhow::Result<()> {
        self.backend.sadd(&format!("deny:{sid}"), &user_key(user)).await
    }

    pub async fn is_denied(&self, sid: Uuid, user: &User) -> anyhow::Result<bool> {
        self.backend
            .sismember(&format!("deny:{sid}"), &user_key(user))
            .await
    }

    /// The next per-session sequence number (1, 2, ...), shared by every replica.
    pub async fn next_seq(&self, sid: Uuid) -> anyhow::Result<u64> {
        Ok(self.backend.incr(&format!("seq:{sid}")).await?.max(0) as u64)
    }

    /// Records an applied operation; a new operation clears the redo stack.
    pub async fn record(&self, sid: Uuid, entry: &HistoryEntry) -> anyhow::Result<()> {
        self.push_history(sid, false, entry).await?;
        self.backend.del(&[history_key(sid, true)]).await
    }

    pub async fn pop_history(&self, sid: Uuid, redo: bool) -> anyhow::Result<Option<HistoryEntry>> {
        Ok(self
            .backend
            .pop(&history_key(sid, redo))
            .await?
            .and_then(|s| serde_json::from_str(&s).ok()))
    }

    pub async fn push_history(&self, sid: Uuid, redo: bool, entry: &HistoryEntry) -> anyhow::Result<()> {
        self.backend
            .push_capped(&history_key(sid, redo), &json(entry)?, HISTORY_CAP)
            .await
    }

    /// Marks the session as seen empty (first time only) and returns since when it has been empty.
    pub async fn empty_since(&self, sid: Uuid) -> anyhow::Result<DateTime<Utc>> {
        let now = Utc::now();
        let key = format!("empty:{sid}");
        self.backend.set_nx(&key, &now.to_rfc3339()).await?;
        Ok(self
            .backend
            .get(&key)
            .await?
            .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
            .map_or(now, |d| d.with_timezone(&Utc)))
    }

    pub async fn clear_empty(&self, sid: Uuid) -> anyhow::Result<()> {
        self.backend.del(&[format!("empty:{sid}")]).await
    }

    /// Re-creates a session this replica serves after Redis lost its keys (a restart without
    /// persistence): the record, the diagram mapping, its local participants, and a sequence
    /// counter that does not go backwards. Idempotent when the keys survived.
    pub async fn restore(
        &self,
        record: &SessionRecord,
        local: &[ParticipantRecord],
        last_seq: u64,
    ) -> anyhow::Result<()> {
        let sid = record.session_id.to_string();
        if self.backend.get(&format!("session:{sid}")).await?.is_none() {
            self.put(record).await?;
        }
        self.backend
            .set_nx(&format!("diagram:{}", record.diagram_id), &sid)
            .await?;
        self.backend.sadd("sessions", &sid).await?;
        self.backend
            .set_nx(&format!("seq:{sid}"), &last_seq.to_string())
            .await?;
        for p in local {
            self.join(record.session_id, p).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collab::backend::MemoryBackend;
    use crate::collab::protocol::PrincipalType;

    fn user(id: &str) -> User {
        User {
            principal_type: PrincipalType::User,
            provider: "tmi".into(),
            provider_id: id.into(),
            email: format!("{id}@tmi.local"),
            display_name: id.into(),
        }
    }

    fn participant(u: &User, replica: &str) -> ParticipantRecord {
        ParticipantRecord {
            conn_id: Uuid::new_v4(),
            user: u.clone(),
            permissions: ParticipantPermissions::Writer,
            replica: replica.into(),
            joined_at: Utc::now(),
            last_activity: Utc::now(),
        }
    }

    #[tokio::test]
    async fn one_session_per_diagram_and_dead_replicas_drop_out() {
        let r = Registry::new(Arc::new(MemoryBackend::default()));
        let (tm, d) = (Uuid::new_v4(), Uuid::new_v4());
        let (a, created) = r.create_or_get(tm, d, &user("alice")).await.unwrap();
        assert!(created);
        let (b, created) = r.create_or_get(tm, d, &user("bob")).await.unwrap();
        assert!(!created, "a second POST joins the existing session");
        assert_eq!(a, b);
        assert_eq!(r.all().await.unwrap().len(), 1);

        r.heartbeat("r1", Duration::from_secs(60)).await.unwrap();
        let p1 = participant(&user("alice"), "r1");
        let p2 = participant(&user("bob"), "r2");
        r.join(a.session_id, &p1).await.unwrap();
        r.join(a.session_id, &p2).await.unwrap();
        let live = r.participants(a.session_id).await.unwrap();
        assert_eq!(live, vec![p1.clone()], "r2 has no heartbeat");
        assert_eq!(r.user_connections(&user("bob")).await.unwrap(), 0);
        assert_eq!(r.user_connections(&user("alice")).await.unwrap(), 1);

        assert_eq!(r.next_seq(a.session_id).await.unwrap(), 1);
        assert_eq!(r.next_seq(a.session_id).await.unwrap(), 2);
        r.end(&a).await.unwrap();
        assert!(r.by_diagram(d).await.unwrap().is_none());
        assert!(r.all().await.unwrap().is_empty());
        assert_eq!(r.user_connections(&user("alice")).await.unwrap(), 0);

        // After a Redis wipe, restore brings the session back without rewinding the sequence.
        r.restore(&a, &[p1], 41).await.unwrap();
        assert_eq!(r.by_diagram(d).await.unwrap(), Some(a.clone()));
        assert_eq!(r.next_seq(a.session_id).await.unwrap(), 42);
        assert_eq!(r.participants(a.session_id).await.unwrap().len(), 1);
    }
}
