//! Persistence: the `Store` trait, its records and errors. Pure declarations; the IO lives in
//! `postgres.rs` and `sqlite.rs`, which share their SQL through the `sql_store!` macro in `sql.rs`
//! and must both pass `testsuite`.
//!
//! Threat models and their children are stored as JSON documents (`doc`) next to the columns that
//! filtering, optimistic locking and authorization need; handlers own the document shape.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

#[macro_use]
mod sql;
#[macro_use]
pub mod teams;
#[cfg(test)]
mod json_roundtrip;
#[cfg(test)]
#[path = "../../tests/common/pgdb.rs"]
pub(crate) mod pgdb;
pub mod postgres;
pub mod retry;
pub mod schema;
pub mod sqlite;
#[cfg(test)]
pub(crate) mod testsuite;

pub use postgres::Postgres;
pub use sqlite::Sqlite;

/// Result of every store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// What can go wrong in the storage layer, already classified for the HTTP layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflicts with an existing record")]
    Conflict,
    #[error("the record was modified concurrently")]
    VersionMismatch,
    #[error("database error")]
    Database(#[source] sqlx::Error),
    #[error("migration failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// The database was migrated by a newer release (see `schema`).
    #[error(transparent)]
    SchemaTooNew(#[from] schema::SchemaTooNew),
    /// `TMI_TEST_EXTRA_MIGRATION` holds an unknown value.
    #[error("{0}")]
    TestMigration(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => Self::NotFound,
            sqlx::Error::Database(ref db) if db.is_unique_violation() => Self::Conflict,
            e => Self::Database(e),
        }
    }
}

/// Fixed UUIDs of the built-in groups (upstream `api/auth_utils.go`).
pub mod groups {
    use uuid::Uuid;
    pub const EVERYONE: Uuid = Uuid::from_u128(0);
    pub const SECURITY_REVIEWERS: Uuid = Uuid::from_u128(1);
    pub const ADMINISTRATORS: Uuid = Uuid::from_u128(2);
    pub const CONFIDENTIAL_PROJECT_REVIEWERS: Uuid = Uuid::from_u128(3);
    pub const TMI_AUTOMATION: Uuid = Uuid::from_u128(4);
    pub const EMBEDDING_AUTOMATION: Uuid = Uuid::from_u128(5);
}

/// A group of an identity provider, as `GET /oauth2/providers/{idp}/groups` lists it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ProviderGroupRecord {
    pub group_name: String,
    pub name: String,
    pub used_in_authorizations: bool,
}

/// A user row.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct UserRecord {
    pub internal_uuid: Uuid,
    pub provider: String,
    pub provider_user_id: String,
    pub email: String,
    pub name: String,
    pub email_verified: bool,
}

/// A group row.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct GroupRecord {
    pub internal_uuid: Uuid,
    pub provider: String,
    pub group_name: String,
    pub name: String,
}

/// A user's membership of a group, as `GET /me/groups/{group_id}/members` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupMemberRecord {
    /// The membership's own id.
    pub id: Uuid,
    pub group_uuid: Uuid,
    pub user: UserRecord,
    pub added_at: DateTime<Utc>,
}

/// One ACL entry of a threat model, in its queryable form.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AccessRecord {
    pub principal_type: String,
    pub provider: String,
    pub provider_id: String,
    pub role: String,
}

/// A threat model: indexed columns plus the JSON document (without children and metadata).
#[derive(Debug, Clone, PartialEq)]
pub struct ThreatModelRecord {
    pub id: Uuid,
    pub alias: i64,
    pub name: String,
    pub owner_provider: String,
    pub owner_provider_id: String,
    pub owner_email: String,
    pub reviewer_email: Option<String>,
    pub status: String,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub modified_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub doc: Value,
    /// The ACL, replaced as a whole on every write.
    pub access: Vec<AccessRecord>,
}

/// A threat model in a list, with its child counts.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreatModelSummary {
    pub record: ThreatModelRecord,
    pub counts: ChildCounts,
}

/// Live (not deleted) children of a threat model, by kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChildCounts {
    pub diagrams: i64,
    pub threats: i64,
    pub documents: i64,
    pub repositories: i64,
    pub notes: i64,
    pub assets: i64,
}

/// Who is listing: their identity and the groups their token carries.
#[derive(Debug, Clone, Default)]
pub struct Viewer {
    pub provider: String,
    pub provider_id: String,
    pub groups: Vec<String>,
}

/// Filters of `GET /threat_models`. Text filters are case-insensitive substring matches on the
/// record's `SearchColumns`.
#[derive(Debug, Clone, Default)]
pub struct ThreatModelFilter {
    /// Owner email or display name.
    pub owner: Option<String>,
    pub security_reviewer: Option<ReviewerFilter>,
    /// Any of these statuses.
    pub statuses: Vec<String>,
    pub name_contains: Option<String>,
    pub description_contains: Option<String>,
    pub issue_uri_contains: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub modified_after: Option<DateTime<Utc>>,
    pub modified_before: Option<DateTime<Utc>>,
    pub status_updated_after: Option<DateTime<Utc>>,
    pub status_updated_before: Option<DateTime<Utc>>,
    pub include_deleted: bool,
    pub limit: i64,
    pub offset: i64,
}

/// The `security_reviewer` filter: `is:null`, `is:notnull` or a reviewer email or name.
#[derive(Debug, Clone, PartialEq)]
pub enum ReviewerFilter {
    Unassigned,
    Assigned,
    Matching(String),
}

/// The lower-cased text the list filters match, derived from a record on every write (Rust's
/// Unicode lower-casing, so both databases compare the same bytes; SQLite's `LOWER` folds ASCII
/// only). Multi-part columns join their parts with a newline, which filter values cannot contain
/// (the contract forbids control characters), so a match never spans two parts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SearchColumns {
    pub name: String,
    pub description: Option<String>,
    pub issue_uri: Option<String>,
    /// Owner email and display name.
    pub owner: String,
    /// Security reviewer email and display name; `None` when no reviewer is assigned.
    pub reviewer: Option<String>,
    /// When `status` last changed (the document's `status_updated`).
    pub status_updated: Option<DateTime<Utc>>,
}

impl ThreatModelRecord {
    /// The search columns of this record, read from its columns and its document's
    /// `description`, `issue_uri`, `owner`, `security_reviewer` and `status_updated`.
    pub fn search_columns(&self) -> SearchColumns {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_lowercase);
        let person = |v: &Value| {
            let part = |k: &str| {
                v.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_lowercase()
            };
            format!("{}\n{}", part("email"), part("display_name"))
        };
        let owner_name = self
            .doc
            .pointer("/owner/display_name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        SearchColumns {
            name: self.name.to_lowercase(),
            description: text(self.doc.get("description")),
            issue_uri: text(self.doc.get("issue_uri")),
            owner: format!(
                "{}\n{}",
                self.owner_email.to_lowercase(),
                owner_name.to_lowercase()
            ),
            reviewer: self
                .doc
                .get("security_reviewer")
                .filter(|r| r.is_object())
                .map(person),
            status_updated: self
                .doc
                .get("status_updated")
                .and_then(Value::as_str)
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|d| d.with_timezone(&Utc)),
        }
    }
}

/// `%`, `_` and `\` escaped for `LIKE … ESCAPE '\'`, lower-cased and wrapped in `%`.
pub fn contains_pattern(needle: &str) -> String {
    let mut out = String::with_capacity(needle.len() + 2);
    out.push('%');
    for c in needle.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// A child of a threat model (diagram, threat, note, document, asset, repository).
#[derive(Debug, Clone, PartialEq)]
pub struct ChildRecord {
    pub id: Uuid,
    pub threat_model_id: Uuid,
    pub kind: String,
    pub alias: i64,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub modified_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub doc: Value,
}

/// One write of a bulk request (`Store::write_children`).
#[derive(Debug, Clone, PartialEq)]
pub enum ChildWrite {
    /// Inserts a new child; its alias is allocated.
    Insert {
        child: ChildRecord,
        metadata: Vec<MetadataEntry>,
    },
    /// Writes a child if its stored version is still `expected_version`; replaces its metadata
    /// when given.
    Update {
        child: ChildRecord,
        expected_version: i64,
        metadata: Option<Vec<MetadataEntry>>,
    },
}

/// A revoked token or token family.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RevocationRecord {
    /// `token:<sha256 hex>`, `family:<id>` or `credential:<id>`.
    pub key: String,
    /// Unix seconds after which nothing the key names is valid anyway.
    pub expires_at: i64,
    /// Unix milliseconds of the revocation.
    pub revoked_at: i64,
}

/// An OAuth 2.0 client credential of a user (migration 0011).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ClientCredentialRecord {
    pub id: Uuid,
    /// The user whose permissions the credential's tokens carry.
    pub owner_uuid: Uuid,
    /// `tmi_cc_…`, unique.
    pub client_id: String,
    /// SHA-256 of the secret, lower-case hex; the secret itself is never stored.
    pub secret_sha256: String,
    pub name: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    pub modified_at: DateTime<Utc>,
    /// After this the credential no longer grants tokens (and none it granted outlives it).
    pub expires_at: Option<DateTime<Utc>>,
    /// The last successful `client_credentials` grant.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// One metadata entry.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct MetadataEntry {
    pub key: String,
    pub value: String,
}

/// Metadata entries of one entity, keyed by the entity id.
pub type MetadataMap = std::collections::HashMap<Uuid, Vec<MetadataEntry>>;

/// Everything the server persists.
#[async_trait]
pub trait Store: Send + Sync + teams::OrgStore {
    /// Checks the database answers.
    async fn ping(&self) -> StoreResult<()>;

    // Users and groups.
    /// Creates or refreshes the user row for a login; binds a sparse row created from an ACL email.
    async fn upsert_login_user(&self, user: &UserRecord) -> StoreResult<UserRecord>;
    async fn find_user(&self, provider: &str, provider_user_id: &str) -> StoreResult<Option<UserRecord>>;
    /// The user with this internal id.
    async fn get_user(&self, internal_uuid: Uuid) -> StoreResult<Option<UserRecord>>;
    /// Finds a user by provider and email (used to resolve sparse ACL entries).
    async fn find_user_by_email(&self, provider: &str, email: &str) -> StoreResult<Option<UserRecord>>;
    async fn user_groups(&self, user: Uuid) -> StoreResult<Vec<GroupRecord>>;
    /// Adds a member (nothing happens when it already is one).
    async fn add_group_member(&self, group: Uuid, user: Uuid) -> StoreResult<()>;
    /// Makes `user`'s memberships in `provider`'s groups exactly `names` (what the identity provider
    /// asserted at sign-in), creating the groups it names for the first time. TMI's own groups are
    /// left alone. One transaction.
    async fn set_provider_groups(&self, user: Uuid, provider: &str, names: &[String]) -> StoreResult<()>;
    /// The groups of `provider` TMI knows, by name (at most `limit`): the ones its users brought at
    /// sign-in and the ones threat-model authorizations name; with whether any authorization names it.
    async fn provider_group_list(&self, provider: &str, limit: i64) -> StoreResult<Vec<ProviderGroupRecord>>;
    async fn get_group(&self, group: Uuid) -> StoreResult<Option<GroupRecord>>;
    /// A page of a group's members ordered by name and email, and their total.
    async fn group_members(
        &self,
        group: Uuid,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<GroupMemberRecord>, i64)>;
    async fn group_member_count(&self, group: Uuid) -> StoreResult<i64>;
    async fn get_preferences(&self, user: Uuid) -> StoreResult<Option<Value>>;
    /// Stores a user's first preferences; `Conflict` (and nothing written) when they have some.
    async fn insert_preferences(&self, user: Uuid, doc: &Value) -> StoreResult<()>;
    async fn put_preferences(&self, user: Uuid, doc: &Value) -> StoreResult<()>;

    // Token revocations (migration 0010).
    /// Records a revocation; when `key` is already revoked the later expiry wins.
    async fn insert_revocation(&self, revocation: &RevocationRecord) -> StoreResult<()>;
    /// Revocations recorded at or after `since_ms` (unix milliseconds) that are still in force at
    /// `now` (unix seconds).
    async fn revocations_since(&self, since_ms: i64, now: i64) -> StoreResult<Vec<RevocationRecord>>;
    /// Whether `key` is revoked at `now` (unix seconds).
    async fn is_revoked(&self, key: &str, now: i64) -> StoreResult<bool>;
    /// Deletes revocations that expired before `now` (unix seconds); returns how many.
    async fn purge_revocations(&self, now: i64) -> StoreResult<u64>;

    // Client credentials (migration 0011).
    /// Stores a new credential; `Conflict` when its id or `client_id` exists.
    async fn insert_client_credential(&self, credential: &ClientCredentialRecord) -> StoreResult<()>;
    /// The credential with this `client_id`.
    async fn client_credential_by_client_id(
        &self,
        client_id: &str,
    ) -> StoreResult<Option<ClientCredentialRecord>>;
    /// A user's credentials, oldest first.
    async fn client_credentials_of(&self, owner: Uuid) -> StoreResult<Vec<ClientCredentialRecord>>;
    /// Deletes a credential of `owner`; `NotFound` when `owner` has none with this id.
    async fn delete_client_credential(&self, id: Uuid, owner: Uuid) -> StoreResult<()>;
    /// Records a successful grant.
    async fn touch_client_credential(&self, id: Uuid, used_at: DateTime<Utc>) -> StoreResult<()>;

    // Threat models.
    /// Inserts a threat model with its ACL and metadata; allocates and returns its alias.
    async fn insert_threat_model(
        &self,
        tm: &ThreatModelRecord,
        metadata: &[MetadataEntry],
    ) -> StoreResult<i64>;
    /// Writes a threat model if its stored version is still `expected_version`; replaces the ACL and,
    /// when given, the metadata.
    async fn update_threat_model(
        &self,
        tm: &ThreatModelRecord,
        expected_version: i64,
        metadata: Option<&[MetadataEntry]>,
    ) -> StoreResult<()>;
    /// A threat model, deleted or not.
    async fn get_threat_model(&self, id: Uuid) -> StoreResult<ThreatModelRecord>;
    /// The threat models `viewer` may read (every one when `viewer` is `None`), newest first.
    async fn list_threat_models(
        &self,
        viewer: Option<&Viewer>,
        filter: &ThreatModelFilter,
    ) -> StoreResult<(Vec<ThreatModelSummary>, i64)>;

    // Children.
    async fn insert_child(&self, child: &ChildRecord, metadata: &[MetadataEntry]) -> StoreResult<i64>;
    async fn update_child(
        &self,
        child: &ChildRecord,
        expected_version: i64,
        metadata: Option<&[MetadataEntry]>,
    ) -> StoreResult<()>;
    async fn get_child(&self, threat_model_id: Uuid, kind: &str, id: Uuid) -> StoreResult<ChildRecord>;
    /// Read-modify-write of one child under a lock (a row lock in PostgreSQL, the write lock in
    /// SQLite), so concurrent writers from any replica queue instead of retrying: `change` takes
    /// the stored row and returns the row to write, or `None` to write nothing. Returns what was
    /// written. The version check of `update_child` is not needed here.
    async fn update_child_locked(
        &self,
        threat_model_id: Uuid,
        kind: &str,
        id: Uuid,
        change: &mut (dyn FnMut(ChildRecord) -> Option<ChildRecord> + Send),
    ) -> StoreResult<Option<ChildRecord>>;
    /// Children of one kind (every kind when `kind` is `None`), oldest first.
    async fn list_children(
        &self,
        threat_model_id: Uuid,
        kind: Option<&str>,
        include_deleted: bool,
    ) -> StoreResult<Vec<ChildRecord>>;
    /// Applies every write in one transaction: all of them, or none when any fails (an insert
    /// whose id exists is `Conflict`, an update of a changed child `VersionMismatch`). Returns the
    /// alias of each written child, in order.
    async fn write_children(&self, writes: &[ChildWrite]) -> StoreResult<Vec<i64>>;

    // Metadata.
    async fn list_metadata(&self, entity_id: Uuid) -> StoreResult<Vec<MetadataEntry>>;
    /// Metadata of a threat model and all its children.
    async fn metadata_under(&self, threat_model_id: Uuid) -> StoreResult<MetadataMap>;
    /// Inserts entries; `Conflict` (and nothing written) when any key exists.
    async fn insert_metadata(
        &self,
        entity_type: &str,
        entity_id: Uuid,
        entries: &[MetadataEntry],
    ) -> StoreResult<()>;
    /// Inserts or updates entries.
    async fn upsert_metadata(
        &self,
        entity_type: &str,
        entity_id: Uuid,
        entries: &[MetadataEntry],
    ) -> StoreResult<()>;
    /// Replaces the whole set.
    async fn replace_metadata(
        &self,
        entity_type: &str,
        entity_id: Uuid,
        entries: &[MetadataEntry],
    ) -> StoreResult<()>;
    /// Updates one existing key; `NotFound` when missing.
    async fn update_metadata_value(&self, entity_id: Uuid, key: &str, value: &str) -> StoreResult<()>;
    async fn delete_metadata(&self, entity_id: Uuid, key: &str) -> StoreResult<()>;
}
