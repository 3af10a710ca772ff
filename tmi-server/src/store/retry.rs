//! Retries of transactions PostgreSQL aborted for a serialization failure (40001) or a deadlock
//! (40P01): a `Store` that wraps another and runs each call again, a bounded number of times with
//! jittered exponential backoff. Every `Store` call is one transaction (or one statement), so running
//! it again is safe. Upstream TMI sets `default_transaction_isolation = 'serializable'` on its
//! database role, so a database upstream used aborts concurrent transactions this way. IO: through
//! the wrapped store, and sleeps between attempts.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use uuid::Uuid;

use chrono::{DateTime, Utc};

use super::{
    ChildRecord, ChildWrite, ClientCredentialRecord, GroupMemberRecord, GroupRecord, MetadataEntry,
    MetadataMap, ProviderGroupRecord, RevocationRecord, Store, StoreError, StoreResult, ThreatModelFilter,
    ThreatModelRecord, ThreatModelSummary, UserRecord, Viewer,
};

/// Attempts after the first one. Generous: 32 writers bumping one counter row lose to each other
/// often, and each lost round costs little (under 3.5 s in all at worst).
pub const MAX_RETRIES: u32 = 16;
/// The backoff before retry `n` is a uniformly random time up to `BASE << n`, capped at `CAP`.
const BASE: Duration = Duration::from_millis(4);
const CAP: Duration = Duration::from_millis(400);

static RETRIES: AtomicU64 = AtomicU64::new(0);

/// How many calls were run again since the process started (all stores).
pub fn retries() -> u64 {
    RETRIES.load(Ordering::Relaxed)
}

/// Whether the database aborted the transaction in a way that running it again can fix.
pub fn is_retryable(e: &StoreError) -> bool {
    match e {
        StoreError::Database(sqlx::Error::Database(db)) => {
            matches!(db.code().as_deref(), Some("40001" | "40P01"))
        }
        _ => false,
    }
}

/// The pause before retry `attempt` (1-based): full jitter over an exponential window.
fn backoff(attempt: u32) -> Duration {
    let window = BASE.saturating_mul(1 << attempt.min(16)).min(CAP);
    let random = (Uuid::new_v4().as_u128() % 1_000_000) as u32;
    window.mul_f64(f64::from(random) / 1_000_000.0)
}

/// Runs `op` until it succeeds, fails for another reason, or `MAX_RETRIES` retries are spent.
pub async fn run<T, F, Fut>(mut op: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = StoreResult<T>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Err(e) if attempt < MAX_RETRIES && is_retryable(&e) => {
                attempt += 1;
                RETRIES.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(attempt, error = %e, "retrying an aborted transaction");
                tokio::time::sleep(backoff(attempt)).await;
            }
            result => return result,
        }
    }
}

/// A store whose calls are retried on serialization failures and deadlocks.
pub struct Retrying<S> {
    pub(super) inner: S,
}

impl<S> Retrying<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

/// Implements every `Store` method of `Retrying` as a retried call of the inner store's.
macro_rules! retried {
    ($(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        #[async_trait]
        impl<S: Store> Store for Retrying<S> {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    run(move || self.inner.$name($($arg),*)).await
                }
            )*

            async fn update_child_locked(
                &self,
                threat_model_id: Uuid,
                kind: &str,
                id: Uuid,
                change: &mut (dyn FnMut(ChildRecord) -> Option<ChildRecord> + Send),
            ) -> StoreResult<Option<ChildRecord>> {
                // Written out: the closure is borrowed mutably by each attempt in turn.
                let mut attempt = 0;
                loop {
                    match self.inner.update_child_locked(threat_model_id, kind, id, &mut *change).await {
                        Err(e) if attempt < MAX_RETRIES && is_retryable(&e) => {
                            attempt += 1;
                            RETRIES.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(backoff(attempt)).await;
                        }
                        result => return result,
                    }
                }
            }
        }
    };
}

retried! {
    fn ping(&self) -> StoreResult<()>;
    fn upsert_login_user(&self, user: &UserRecord) -> StoreResult<UserRecord>;
    fn find_user(&self, provider: &str, provider_user_id: &str) -> StoreResult<Option<UserRecord>>;
    fn get_user(&self, internal_uuid: Uuid) -> StoreResult<Option<UserRecord>>;
    fn find_user_by_email(&self, provider: &str, email: &str) -> StoreResult<Option<UserRecord>>;
    fn user_groups(&self, user: Uuid) -> StoreResult<Vec<GroupRecord>>;
    fn add_group_member(&self, group: Uuid, user: Uuid) -> StoreResult<()>;
    fn set_provider_groups(&self, user: Uuid, provider: &str, names: &[String]) -> StoreResult<()>;
    fn provider_group_list(&self, provider: &str, limit: i64) -> StoreResult<Vec<ProviderGroupRecord>>;
    fn get_group(&self, group: Uuid) -> StoreResult<Option<GroupRecord>>;
    fn group_members(&self, group: Uuid, limit: i64, offset: i64) -> StoreResult<(Vec<GroupMemberRecord>, i64)>;
    fn group_member_count(&self, group: Uuid) -> StoreResult<i64>;
    fn get_preferences(&self, user: Uuid) -> StoreResult<Option<Value>>;
    fn insert_preferences(&self, user: Uuid, doc: &Value) -> StoreResult<()>;
    fn put_preferences(&self, user: Uuid, doc: &Value) -> StoreResult<()>;
    fn insert_revocation(&self, revocation: &RevocationRecord) -> StoreResult<()>;
    fn revocations_since(&self, since_ms: i64, now: i64) -> StoreResult<Vec<RevocationRecord>>;
    fn is_revoked(&self, key: &str, now: i64) -> StoreResult<bool>;
    fn purge_revocations(&self, now: i64) -> StoreResult<u64>;
    fn insert_client_credential(&self, credential: &ClientCredentialRecord) -> StoreResult<()>;
    fn client_credential_by_client_id(&self, client_id: &str) -> StoreResult<Option<ClientCredentialRecord>>;
    fn client_credentials_of(&self, owner: Uuid) -> StoreResult<Vec<ClientCredentialRecord>>;
    fn delete_client_credential(&self, id: Uuid, owner: Uuid) -> StoreResult<()>;
    fn touch_client_credential(&self, id: Uuid, used_at: DateTime<Utc>) -> StoreResult<()>;
    fn insert_threat_model(&self, tm: &ThreatModelRecord, metadata: &[MetadataEntry]) -> StoreResult<i64>;
    fn update_threat_model(
        &self,
        tm: &ThreatModelRecord,
        expected_version: i64,
        metadata: Option<&[MetadataEntry]>
    ) -> StoreResult<()>;
    fn get_threat_model(&self, id: Uuid) -> StoreResult<ThreatModelRecord>;
    fn list_threat_models(
        &self,
        viewer: Option<&Viewer>,
        filter: &ThreatModelFilter
    ) -> StoreResult<(Vec<ThreatModelSummary>, i64)>;
    fn insert_child(&self, child: &ChildRecord, metadata: &[MetadataEntry]) -> StoreResult<i64>;
    fn update_child(
        &self,
        child: &ChildRecord,
        expected_version: i64,
        metadata: Option<&[MetadataEntry]>
    ) -> StoreResult<()>;
    fn get_child(&self, threat_model_id: Uuid, kind: &str, id: Uuid) -> StoreResult<ChildRecord>;
    fn list_children(
        &self,
        threat_model_id: Uuid,
        kind: Option<&str>,
        include_deleted: bool
    ) -> StoreResult<Vec<ChildRecord>>;
    fn write_children(&self, writes: &[ChildWrite]) -> StoreResult<Vec<i64>>;
    fn list_metadata(&self, entity_id: Uuid) -> StoreResult<Vec<MetadataEntry>>;
    fn metadata_under(&self, threat_model_id: Uuid) -> StoreResult<MetadataMap>;
    fn insert_metadata(&self, entity_type: &str, entity_id: Uuid, entries: &[MetadataEntry]) -> StoreResult<()>;
    fn upsert_metadata(&self, entity_type: &str, entity_id: Uuid, entries: &[MetadataEntry]) -> StoreResult<()>;
    fn replace_metadata(&self, entity_type: &str, entity_id: Uuid, entries: &[MetadataEntry]) -> StoreResult<()>;
    fn update_metadata_value(&self, entity_id: Uuid, key: &str, value: &str) -> StoreResult<()>;
    fn delete_metadata(&self, entity_id: Uuid, key: &str) -> StoreResult<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_grows() {
        for attempt in 1..=MAX_RETRIES {
            assert!(backoff(attempt) <= CAP);
        }
        assert!(backoff(1) <= BASE * 2);
    }

    #[tokio::test]
    async fn other_errors_are_not_retried() {
        let mut calls = 0;
        let r: StoreResult<()> = run(|| {
            calls += 1;
            async { Err(StoreError::NotFound) }
        })
        .await;
        assert!(matches!(r, Err(StoreError::NotFound)));
        assert_eq!(calls, 1);
    }
}
