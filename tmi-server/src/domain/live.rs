//! Live-record lookups: a threat model or child that is neither missing nor soft-deleted, and the
//! soft-deleted child a restore needs. Missing and deleted answer the same 404, so a deleted
//! record is indistinguishable from one that never existed. IO: reads through the `Store` trait.

use uuid::Uuid;

use super::kinds::{self, Kind};
use crate::error::ApiError;
use crate::store::{ChildRecord, Store, StoreError, ThreatModelRecord};

/// A live child of the threat model, else 404 naming the kind.
pub async fn child(store: &dyn Store, tm: Uuid, kind: &Kind, id: Uuid) -> Result<ChildRecord, ApiError> {
    match store.get_child(tm, kind.kind, id).await {
        Ok(c) if c.deleted_at.is_none() => Ok(c),
        Ok(_) | Err(StoreError::NotFound) => Err(ApiError::not_found(kind.label)),
        Err(e) => Err(e.into()),
    }
}

/// A live diagram of the threat model, else 404.
pub async fn diagram(store: &dyn Store, tm: Uuid, id: Uuid) -> Result<ChildRecord, ApiError> {
    child(store, tm, kinds::diagram(), id).await
}

/// A soft-deleted child of the threat model (what a restore brings back), else 404.
pub async fn deleted_child(
    store: &dyn Store,
    tm: Uuid,
    kind: &Kind,
    id: Uuid,
) -> Result<ChildRecord, ApiError> {
    match store.get_child(tm, kind.kind, id).await {
        Ok(c) if c.deleted_at.is_some() => Ok(c),
        Ok(_) | Err(StoreError::NotFound) => Err(ApiError::not_found(&format!("Deleted {}", kind.kind))),
        Err(e) => Err(e.into()),
    }
}

/// A threat model that is neither missing nor deleted; `None` otherwise.
pub async fn threat_model(store: &dyn Store, id: Uuid) -> Result<Option<ThreatModelRecord>, StoreError> {
    match store.get_threat_model(id).await {
        Ok(tm) if tm.deleted_at.is_none() => Ok(Some(tm)),
        Ok(_) | Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}
