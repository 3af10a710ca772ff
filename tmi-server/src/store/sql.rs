//! The SQL shared by the PostgreSQL and SQLite stores, stamped out per driver by `sql_store!`.
//! IO: talks to the database through the `pool` field of the store struct.
//!
//! Both dialects accept `$n` placeholders, `ON CONFLICT … DO UPDATE` and `RETURNING`, so one text
//! serves both; the few dialect differences are the struct's `BEGIN` constant and the migrations.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo};
use sqlx::sqlite::{SqliteArgumentsBuffer, SqliteTypeInfo};
use sqlx::types::Json;
use sqlx::{Encode, Postgres, Sqlite, Type};
use uuid::Uuid;

use super::{AccessRecord, ChildRecord, GroupMemberRecord, ThreatModelRecord, UserRecord};

/// A JSON document bound as its serialized text: PostgreSQL `json` (migration 0005), SQLite
/// `TEXT`. Both keep the text as written, so every number reads back exactly as serde_json wrote
/// it. (sqlx's `Json` binds PostgreSQL `jsonb`, whose `numeric` turns `1e16` into an integer and
/// `-0.0` into `0.0` and renders `1.7976931348623157e308` as a 309-digit integer literal.)
pub(super) struct JsonDoc<'a>(pub &'a Value);

/// PostgreSQL's `json` type (a fixed OID, so no lookup by name).
const PG_JSON: Oid = Oid(114);

impl Type<Postgres> for JsonDoc<'_> {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(PG_JSON)
    }
}

impl Encode<'_, Postgres> for JsonDoc<'_> {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        // `json`'s binary form is its text.
        serde_json::to_writer(&mut **buf, self.0)?;
        Ok(IsNull::No)
    }
}

impl Type<Sqlite> for JsonDoc<'_> {
    fn type_info() -> SqliteTypeInfo {
        <str as Type<Sqlite>>::type_info()
    }
}

impl Encode<'_, Sqlite> for JsonDoc<'_> {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Sqlite>::encode(serde_json::to_string(self.0)?, buf)
    }
}

/// Columns of `threat_models`, in `ThreatModelRow` order.
pub(super) const TM_COLUMNS: &str = "t.id, t.alias, t.name, t.owner_provider, t.owner_provider_id, \
     t.owner_email, t.reviewer_email, t.status, t.version, t.created_at, t.modified_at, t.deleted_at, t.doc";

#[derive(sqlx::FromRow)]
pub(super) struct ThreatModelRow {
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
    pub doc: Json<Value>,
}

impl ThreatModelRow {
    pub(super) fn into_record(self, access: Vec<AccessRecord>) -> ThreatModelRecord {
        ThreatModelRecord {
            id: self.id,
            alias: self.alias,
            name: self.name,
            owner_provider: self.owner_provider,
            owner_provider_id: self.owner_provider_id,
            owner_email: self.owner_email,
            reviewer_email: self.reviewer_email,
            status: self.status,
            version: self.version,
            created_at: self.created_at,
            modified_at: self.modified_at,
            deleted_at: self.deleted_at,
            doc: self.doc.0,
            access,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct CountsRow {
    pub diagrams: i64,
    pub threats: i64,
    pub documents: i64,
    pub repositories: i64,
    pub notes: i64,
    pub assets: i64,
}

/// Child counts as extra columns of a threat-model list query.
pub(super) const COUNT_COLUMNS: &str = "\
    (SELECT COUNT(*) FROM children c WHERE c.threat_model_id = t.id AND c.kind = 'diagram' AND c.deleted_at IS NULL) AS diagrams, \
    (SELECT COUNT(*) FROM children c WHERE c.threat_model_id = t.id AND c.kind = 'threat' AND c.deleted_at IS NULL) AS threats, \
    (SELECT COUNT(*) FROM children c WHERE c.threat_model_id = t.id AND c.kind = 'document' AND c.deleted_at IS NULL) AS documents, \
    (SELECT COUNT(*) FROM children c WHERE c.threat_model_id = t.id AND c.kind = 'repository' AND c.deleted_at IS NULL) AS repositories, \
    (SELECT COUNT(*) FROM children c WHERE c.threat_model_id = t.id AND c.kind = 'note' AND c.deleted_at IS NULL) AS notes, \
    (SELECT COUNT(*) FROM children c WHERE c.threat_model_id = t.id AND c.kind = 'asset' AND c.deleted_at IS NULL) AS assets";

#[derive(sqlx::FromRow)]
pub(super) struct ChildRow {
    pub id: Uuid,
    pub threat_model_id: Uuid,
    pub kind: String,
    pub alias: i64,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub modified_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub doc: Json<Value>,
}

pub(super) const CHILD_COLUMNS: &str =
    "id, threat_model_id, kind, alias, version, created_at, modified_at, deleted_at, doc";

impl From<ChildRow> for ChildRecord {
    fn from(r: ChildRow) -> Self {
        ChildRecord {
            id: r.id,
            threat_model_id: r.threat_model_id,
            kind: r.kind,
            alias: r.alias,
            version: r.version,
            created_at: r.created_at,
            modified_at: r.modified_at,
            deleted_at: r.deleted_at,
            doc: r.doc.0,
        }
    }
}

/// A membership joined with its user. `id` and `added_at` are `NULL` only for rows written by an
/// older server after the migration that added them; such rows get stand-ins.
#[derive(sqlx::FromRow)]
pub(super) struct GroupMemberRow {
    pub membership_id: Option<Uuid>,
    pub added_at: Option<DateTime<Utc>>,
    pub internal_uuid: Uuid,
    pub provider: String,
    pub provider_user_id: String,
    pub email: String,
    pub name: String,
    pub email_verified: bool,
    pub created_at: DateTime<Utc>,
}

impl GroupMemberRow {
    pub(super) fn into_record(self, group: Uuid) -> GroupMemberRecord {
        GroupMemberRecord {
            // Stable for the pair, so the stand-in id does not change between calls.
            id: self.membership_id.unwrap_or_else(|| {
                Uuid::from_u128(group.as_u128() ^ self.internal_uuid.as_u128().rotate_left(64))
            }),
            group_uuid: group,
            added_at: self.added_at.unwrap_or(self.created_at),
            user: UserRecord {
                internal_uuid: self.internal_uuid,
                provider: self.provider,
                provider_user_id: self.provider_user_id,
                email: self.email,
                name: self.name,
                email_verified: self.email_verified,
            },
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct EntityMetadataRow {
    pub entity_id: Uuid,
    pub key: String,
    pub value: String,
}

/// Implements `Store` for `$store` (a struct with `pool: sqlx::Pool<$db>` and the `BEGIN` and
/// `TM_ALIAS` statements of its dialect).
macro_rules! sql_store {
    ($store:ty, $db:ty) => {
        use $crate::store::sql::{
            CHILD_COLUMNS, COUNT_COLUMNS, ChildRow, CountsRow, EntityMetadataRow, GroupMemberRow, JsonDoc,
            TM_COLUMNS, ThreatModelRow,
        };
        use $crate::store::{
            AccessRecord, ChildRecord, ChildWrite, GroupRecord, MetadataEntry, ProviderGroupRecord, MetadataMap, Store, StoreError, StoreResult,
            ReviewerFilter, ThreatModelFilter, ThreatModelRecord, ThreatModelSummary, UserRecord, Viewer,
        };
        use ::sqlx::types::Json;
        use ::sqlx::{AssertSqlSafe, QueryBuilder};

        type Tx = ::sqlx::Transaction<'static, $db>;

        impl $store {
            async fn next_alias(tx: &mut Tx, scope: &str) -> StoreResult<i64> {
                let (value,): (i64,) = ::sqlx::query_as(
                    "INSERT INTO alias_counters (scope, value) VALUES ($1, 1) \
                     ON CONFLICT (scope) DO UPDATE SET value = alias_counters.value + 1 RETURNING value",
                )
                .bind(scope)
                .fetch_one(&mut **tx)
                .await?;
                Ok(value)
            }

            async fn write_access(tx: &mut Tx, tm: &ThreatModelRecord) -> StoreResult<()> {
                ::sqlx::query("DELETE FROM tm_access WHERE threat_model_id = $1")
                    .bind(tm.id)
                    .execute(&mut **tx)
                    .await?;
                for a in &tm.access {
                    ::sqlx::query(
                        "INSERT INTO tm_access (threat_model_id, principal_type, provider, provider_id, role) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(tm.id)
                    .bind(&a.principal_type)
                    .bind(&a.provider)
                    .bind(&a.provider_id)
                    .bind(&a.role)
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(())
            }

            async fn write_metadata(
                tx: &mut Tx,
                entity_type: &str,
                entity_id: ::uuid::Uuid,
                entries: &[MetadataEntry],
                upsert: bool,
            ) -> StoreResult<()> {
                let sql = if upsert {
                    "INSERT INTO metadata (entity_type, entity_id, key, value, position) VALUES ($1, $2, $3, $4, \
                     (SELECT COALESCE(MAX(m.position), 0) + 1 FROM metadata m WHERE m.entity_id = $2)) \
                     ON CONFLICT (entity_id, key) DO UPDATE SET value = excluded.value"
                } else {
                    "INSERT INTO metadata (entity_type, entity_id, key, value, position) VALUES ($1, $2, $3, $4, \
                     (SELECT COALESCE(MAX(m.position), 0) + 1 FROM metadata m WHERE m.entity_id = $2))"
                };
                for e in entries {
                    ::sqlx::query(sql)
                        .bind(entity_type)
                        .bind(entity_id)
                        .bind(&e.key)
                        .bind(&e.value)
                        .execute(&mut **tx)
                        .await?;
                }
                Ok(())
            }

            async fn clear_metadata(tx: &mut Tx, entity_id: ::uuid::Uuid) -> StoreResult<()> {
                ::sqlx::query("DELETE FROM metadata WHERE entity_id = $1")
                    .bind(entity_id)
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            }

            /// Inserts a child and its metadata, allocating its alias.
            async fn insert_child_tx(tx: &mut Tx, child: &ChildRecord, metadata: &[MetadataEntry]) -> StoreResult<i64> {
                let alias = Self::next_alias(tx, &format!("{}:{}", child.threat_model_id, child.kind)).await?;
                ::sqlx::query(
                    "INSERT INTO children (id, threat_model_id, kind, alias, version, created_at, modified_at, \
                     deleted_at, doc) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(child.id)
                .bind(child.threat_model_id)
                .bind(&child.kind)
                .bind(alias)
                .bind(child.version)
                .bind(child.created_at)
                .bind(child.modified_at)
                .bind(child.deleted_at)
                .bind(JsonDoc(&child.doc))
                .execute(&mut **tx)
                .await?;
                Self::write_metadata(tx, &child.kind, child.id, metadata, false).await?;
                Ok(alias)
            }

            /// Writes a child if its stored version is still `expected_version`; replaces its
            /// metadata when given.
            async fn update_child_tx(
                tx: &mut Tx,
                child: &ChildRecord,
                expected_version: i64,
                metadata: Option<&[MetadataEntry]>,
            ) -> StoreResult<()> {
                let done = ::sqlx::query(
                    "UPDATE children SET version = $1, modified_at = $2, deleted_at = $3, doc = $4 \
                     WHERE id = $5 AND threat_model_id = $6 AND kind = $7 AND version = $8",
                )
                .bind(child.version)
                .bind(child.modified_at)
                .bind(child.deleted_at)
                .bind(JsonDoc(&child.doc))
                .bind(child.id)
                .bind(child.threat_model_id)
                .bind(&child.kind)
                .bind(expected_version)
                .execute(&mut **tx)
                .await?;
                if done.rows_affected() == 0 {
                    let exists: Option<(i64,)> = ::sqlx::query_as("SELECT version FROM children WHERE id = $1")
                        .bind(child.id)
                        .fetch_optional(&mut **tx)
                        .await?;
                    return Err(if exists.is_some() { StoreError::VersionMismatch } else { StoreError::NotFound });
                }
                if let Some(entries) = metadata {
                    Self::clear_metadata(tx, child.id).await?;
                    Self::write_metadata(tx, &child.kind, child.id, entries, false).await?;
                }
                Ok(())
            }

            fn push_tm_filter(qb: &mut QueryBuilder<$db>, viewer: Option<&Viewer>, f: &ThreatModelFilter) {
                qb.push(" FROM threat_models t WHERE 1 = 1");
                if !f.include_deleted {
                    qb.push(" AND t.deleted_at IS NULL");
                }
                if let Some(v) = viewer {
                    qb.push(" AND ((t.owner_provider = ")
                        .push_bind(v.provider.clone())
                        .push(" AND t.owner_provider_id = ")
                        .push_bind(v.provider_id.clone())
                        .push(") OR EXISTS (SELECT 1 FROM tm_access a WHERE a.threat_model_id = t.id AND (")
                        .push("(a.principal_type = 'user' AND a.provider = ")
                        .push_bind(v.provider.clone())
                        .push(" AND a.provider_id = ")
                        .push_bind(v.provider_id.clone())
                        .push(") OR (a.principal_type = 'group' AND a.provider_id = 'everyone')");
                    if !v.groups.is_empty() {
                        qb.push(" OR (a.principal_type = 'group' AND a.provider IN ('tmi', ")
                            .push_bind(v.provider.clone())
                            .push(") AND a.provider_id IN (");
                        let mut sep = qb.separated(", ");
                        for g in &v.groups {
                            sep.push_bind(g.clone());
                        }
                        qb.push("))");
                    }
                    qb.push(")))");
                }
                let contains = |qb: &mut QueryBuilder<$db>, column: &str, needle: &str| {
                    qb.push(format!(" AND {column} LIKE "))
                        .push_bind($crate::store::contains_pattern(needle))
                        .push(" ESCAPE '\\'");
                };
                if let Some(o) = &f.owner {
                    contains(qb, "t.search_owner", o);
                }
                match &f.security_reviewer {
                    None => {}
                    Some(ReviewerFilter::Unassigned) => {
                        qb.push(" AND t.search_reviewer IS NULL");
                    }
                    Some(ReviewerFilter::Assigned) => {
                        qb.push(" AND t.search_reviewer IS NOT NULL");
                    }
                    Some(ReviewerFilter::Matching(r)) => contains(qb, "t.search_reviewer", r),
                }
                for (column, needle) in [
                    ("t.search_name", &f.name_contains),
                    ("t.search_description", &f.description_contains),
                    ("t.search_issue_uri", &f.issue_uri_contains),
                ] {
                    if let Some(n) = needle {
                        contains(qb, column, n);
                    }
                }
                if !f.statuses.is_empty() {
                    qb.push(" AND t.status IN (");
                    let mut sep = qb.separated(", ");
                    for s in &f.statuses {
                        sep.push_bind(s.clone());
                    }
                    qb.push(")");
                }
                for (column, op, value) in [
                    ("t.created_at", ">", f.created_after),
                    ("t.created_at", "<", f.created_before),
                    ("t.modified_at", ">", f.modified_after),
                    ("t.modified_at", "<", f.modified_before),
                    ("t.status_updated", ">", f.status_updated_after),
                    ("t.status_updated", "<", f.status_updated_before),
                ] {
                    if let Some(v) = value {
                        qb.push(format!(" AND {column} {op} ")).push_bind(v);
                    }
                }
            }
        }

        #[::async_trait::async_trait]
        impl Store for $store {
            async fn ping(&self) -> StoreResult<()> {
                ::sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            #[::tracing::instrument(skip_all, fields(user.provider = %user.provider))]
            async fn upsert_login_user(&self, user: &UserRecord) -> StoreResult<UserRecord> {
                let mut tx = self.pool.begin_with(Self::BEGIN).await?;
                // Bind a sparse row created from an ACL entry by email (provider_user_id = email).
                ::sqlx::query(
                    "UPDATE users SET provider_user_id = $1 WHERE provider = $2 AND provider_user_id = $3 \
                     AND NOT EXISTS (SELECT 1 FROM users u WHERE u.provider = $2 AND u.provider_user_id = $1)",
                )
                .bind(&user.provider_user_id)
                .bind(&user.provider)
                .bind(&user.email)
                .execute(&mut *tx)
                .await?;
                let row: UserRecord = ::sqlx::query_as(
                    "INSERT INTO users (internal_uuid, provider, provider_user_id, email, name, email_verified, \
                     created_at, last_login) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
                     ON CONFLICT (provider, provider_user_id) DO UPDATE SET email = excluded.email, \
                     name = excluded.name, email_verified = excluded.email_verified, last_login = excluded.last_login \
                     RETURNING internal_uuid, provider, provider_user_id, email, name, email_verified",
                )
                .bind(user.internal_uuid)
                .bind(&user.provider)
                .bind(&user.provider_user_id)
                .bind(&user.email)
                .bind(&user.name)
                .bind(user.email_verified)
                .bind(::chrono::Utc::now())
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(row)
            }

            async fn find_user(&self, provider: &str, provider_user_id: &str) -> StoreResult<Option<UserRecord>> {
                Ok(::sqlx::query_as(
                    "SELECT internal_uuid, provider, provider_user_id, email, name, email_verified FROM users \
                     WHERE provider = $1 AND provider_user_id = $2",
                )
                .bind(provider)
                .bind(provider_user_id)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn get_user(&self, internal_uuid: ::uuid::Uuid) -> StoreResult<Option<UserRecord>> {
                Ok(::sqlx::query_as(
                    "SELECT internal_uuid, provider, provider_user_id, email, name, email_verified FROM users \
                     WHERE internal_uuid = $1",
                )
                .bind(internal_uuid)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn find_user_by_email(&self, provider: &str, email: &str) -> StoreResult<Option<UserRecord>> {
                Ok(::sqlx::query_as(
                    "SELECT internal_uuid, provider, provider_user_id, email, name, email_verified FROM users \
                     WHERE provider = $1 AND LOWER(email) = LOWER($2) ORDER BY created_at LIMIT 1",
                )
                .bind(provider)
                .bind(email)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn user_groups(&self, user: ::uuid::Uuid) -> StoreResult<Vec<GroupRecord>> {
                Ok(::sqlx::query_as(
                    "SELECT g.internal_uuid, g.provider, g.group_name, g.name FROM groups g \
                     JOIN group_members m ON m.group_uuid = g.internal_uuid WHERE m.user_uuid = $1 \
                     ORDER BY g.group_name",
                )
                .bind(user)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn add_group_member(&self, group: ::uuid::Uuid, user: ::uuid::Uuid) -> StoreResult<()> {
                ::sqlx::query(
                    "INSERT INTO group_members (group_uuid, user_uuid, id, added_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(group)
                .bind(user)
                .bind(::uuid::Uuid::new_v4())
                .bind(::chrono::Utc::now())
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn set_provider_groups(
                &self,
                user: ::uuid::Uuid,
                provider: &str,
                names: &[String],
            ) -> StoreResult<()> {
                let mut tx = self.pool.begin_with(Self::BEGIN).await?;
                let current: Vec<(::uuid::Uuid, String)> = ::sqlx::query_as(
                    "SELECT g.internal_uuid, g.group_name FROM groups g \
                     JOIN group_members m ON m.group_uuid = g.internal_uuid \
                     WHERE m.user_uuid = $1 AND g.provider = $2",
                )
                .bind(user)
                .bind(provider)
                .fetch_all(&mut *tx)
                .await?;
                for (group, name) in &current {
                    if !names.contains(name) {
                        ::sqlx::query("DELETE FROM group_members WHERE group_uuid = $1 AND user_uuid = $2")
                            .bind(group)
                            .bind(user)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                for name in names {
                    if current.iter().any(|(_, n)| n == name) {
                        continue;
                    }
                    let (group,): (::uuid::Uuid,) = ::sqlx::query_as(
                        "INSERT INTO groups (internal_uuid, provider, group_name, name) VALUES ($1, $2, $3, $3) \
                         ON CONFLICT (provider, group_name) DO UPDATE SET group_name = excluded.group_name \
                         RETURNING internal_uuid",
                    )
                    .bind(::uuid::Uuid::new_v4())
                    .bind(provider)
                    .bind(name)
                    .fetch_one(&mut *tx)
                    .await?;
                    ::sqlx::query(
                        "INSERT INTO group_members (group_uuid, user_uuid, id, added_at) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(group)
                    .bind(user)
                    .bind(::uuid::Uuid::new_v4())
                    .bind(::chrono::Utc::now())
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn provider_group_list(&self, provider: &str, limit: i64) -> StoreResult<Vec<ProviderGroupRecord>> {
                Ok(::sqlx::query_as(
                    "SELECT group_name, name, used_in_authorizations FROM ( \
                       SELECT g.group_name AS group_name, g.name AS name, \
                         EXISTS (SELECT 1 FROM tm_access a WHERE a.principal_type = 'group' \
                                 AND a.provider = g.provider AND a.provider_id = g.group_name) AS used_in_authorizations \
                       FROM groups g WHERE g.provider = $1 \
                       UNION \
                       SELECT DISTINCT a.provider_id, a.provider_id, TRUE FROM tm_access a \
                       WHERE a.principal_type = 'group' AND a.provider = $1 AND NOT EXISTS \
                         (SELECT 1 FROM groups g WHERE g.provider = $1 AND g.group_name = a.provider_id) \
                     ) known ORDER BY group_name LIMIT $2",
                )
                .bind(provider)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn get_group(&self, group: ::uuid::Uuid) -> StoreResult<Option<GroupRecord>> {
                Ok(::sqlx::query_as(
                    "SELECT internal_uuid, provider, group_name, name FROM groups WHERE internal_uuid = $1",
                )
                .bind(group)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn group_members(
                &self,
                group: ::uuid::Uuid,
                limit: i64,
                offset: i64,
            ) -> StoreResult<(Vec<$crate::store::GroupMemberRecord>, i64)> {
                let (total,): (i64,) = ::sqlx::query_as("SELECT COUNT(*) FROM group_members WHERE group_uuid = $1")
                    .bind(group)
                    .fetch_one(&self.pool)
                    .await?;
                let rows: Vec<GroupMemberRow> = ::sqlx::query_as(
                    "SELECT m.id AS membership_id, m.added_at, u.internal_uuid, u.provider, u.provider_user_id, \
                     u.email, u.name, u.email_verified, u.created_at FROM group_members m \
                     JOIN users u ON u.internal_uuid = m.user_uuid WHERE m.group_uuid = $1 \
                     ORDER BY u.name, u.email, u.internal_uuid LIMIT $2 OFFSET $3",
                )
                .bind(group)
                .bind(limit)
                .bind(offset)
                .fetch_all(&self.pool)
                .await?;
                Ok((rows.into_iter().map(|r| r.into_record(group)).collect(), total))
            }

            async fn group_member_count(&self, group: ::uuid::Uuid) -> StoreResult<i64> {
                let (n,): (i64,) = ::sqlx::query_as("SELECT COUNT(*) FROM group_members WHERE group_uuid = $1")
                    .bind(group)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(n)
            }

            async fn get_preferences(&self, user: ::uuid::Uuid) -> StoreResult<Option<::serde_json::Value>> {
                let row: Option<(Json<::serde_json::Value>,)> =
                    ::sqlx::query_as("SELECT doc FROM user_preferences WHERE user_uuid = $1")
                        .bind(user)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.map(|r| r.0.0))
            }

            async fn insert_preferences(&self, user: ::uuid::Uuid, doc: &::serde_json::Value) -> StoreResult<()> {
                ::sqlx::query("INSERT INTO user_preferences (user_uuid, doc) VALUES ($1, $2)")
                    .bind(user)
                    .bind(JsonDoc(doc))
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn put_preferences(&self, user: ::uuid::Uuid, doc: &::serde_json::Value) -> StoreResult<()> {
                ::sqlx::query(
                    "INSERT INTO user_preferences (user_uuid, doc) VALUES ($1, $2) \
                     ON CONFLICT (user_uuid) DO UPDATE SET doc = excluded.doc",
                )
                .bind(user)
                .bind(JsonDoc(doc))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn insert_revocation(&self, r: &$crate::store::RevocationRecord) -> StoreResult<()> {
                ::sqlx::query(
                    "INSERT INTO token_revocations (key, expires_at, revoked_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (key) DO UPDATE SET revoked_at = excluded.revoked_at, expires_at = \
                     CASE WHEN excluded.expires_at > token_revocations.expires_at \
                     THEN excluded.expires_at ELSE token_revocations.expires_at END",
                )
                .bind(&r.key)
                .bind(r.expires_at)
                .bind(r.revoked_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn revocations_since(
                &self,
                since_ms: i64,
                now: i64,
            ) -> StoreResult<Vec<$crate::store::RevocationRecord>> {
                Ok(::sqlx::query_as(
                    "SELECT key, expires_at, revoked_at FROM token_revocations \
                     WHERE revoked_at >= $1 AND expires_at > $2 ORDER BY revoked_at",
                )
                .bind(since_ms)
                .bind(now)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn is_revoked(&self, key: &str, now: i64) -> StoreResult<bool> {
                let row: Option<(i64,)> =
                    ::sqlx::query_as("SELECT expires_at FROM token_revocations WHERE key = $1 AND expires_at > $2")
                        .bind(key)
                        .bind(now)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.is_some())
            }

            async fn purge_revocations(&self, now: i64) -> StoreResult<u64> {
                let done = ::sqlx::query("DELETE FROM token_revocations WHERE expires_at <= $1")
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn insert_client_credential(
                &self,
                c: &$crate::store::ClientCredentialRecord,
            ) -> StoreResult<()> {
                ::sqlx::query(
                    "INSERT INTO client_credentials (id, owner_uuid, client_id, secret_sha256, name, description, \
                     created_at, modified_at, expires_at, last_used_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(c.id)
                .bind(c.owner_uuid)
                .bind(&c.client_id)
                .bind(&c.secret_sha256)
                .bind(&c.name)
                .bind(&c.description)
                .bind(c.created_at)
                .bind(c.modified_at)
                .bind(c.expires_at)
                .bind(c.last_used_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn client_credential_by_client_id(
                &self,
                client_id: &str,
            ) -> StoreResult<Option<$crate::store::ClientCredentialRecord>> {
                Ok(::sqlx::query_as(
                    "SELECT id, owner_uuid, client_id, secret_sha256, name, description, created_at, \
                     modified_at, expires_at, last_used_at FROM client_credentials WHERE client_id = $1",
                )
                .bind(client_id)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn client_credentials_of(
                &self,
                owner: ::uuid::Uuid,
            ) -> StoreResult<Vec<$crate::store::ClientCredentialRecord>> {
                Ok(::sqlx::query_as(
                    "SELECT id, owner_uuid, client_id, secret_sha256, name, description, created_at, \
                     modified_at, expires_at, last_used_at FROM client_credentials WHERE owner_uuid = $1 \
                     ORDER BY created_at, id",
                )
                .bind(owner)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn delete_client_credential(&self, id: ::uuid::Uuid, owner: ::uuid::Uuid) -> StoreResult<()> {
                let done = ::sqlx::query("DELETE FROM client_credentials WHERE id = $1 AND owner_uuid = $2")
                    .bind(id)
                    .bind(owner)
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }

            async fn touch_client_credential(
                &self,
                id: ::uuid::Uuid,
                used_at: ::chrono::DateTime<::chrono::Utc>,
            ) -> StoreResult<()> {
                ::sqlx::query("UPDATE client_credentials SET last_used_at = $1 WHERE id = $2")
                    .bind(used_at)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            #[::tracing::instrument(skip_all, fields(threat_model.id = %tm.id))]
            async fn insert_threat_model(
                &self,
                tm: &ThreatModelRecord,
                metadata: &[MetadataEntry],
            ) -> StoreResult<i64> {
                let mut tx = self.pool.begin_with(Self::BEGIN).await?;
                let (alias,): (i64,) = ::sqlx::query_as(Self::TM_ALIAS).fetch_one(&mut *tx).await?;
                let search = tm.search_columns();
                ::sqlx::query(
                    "INSERT INTO threat_models (id, alias, name, owner_provider, owner_provider_id, owner_email, \
                     reviewer_email, status, version, created_at, modified_at, deleted_at, doc, search_name, \
                     search_description, search_issue_uri, search_owner, search_reviewer, status_updated) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
                )
                .bind(tm.id)
                .bind(alias)
                .bind(&tm.name)
                .bind(&tm.owner_provider)
                .bind(&tm.owner_provider_id)
                .bind(&tm.owner_email)
                .bind(&tm.reviewer_email)
                .bind(&tm.status)
                .bind(tm.version)
                .bind(tm.created_at)
                .bind(tm.modified_at)
                .bind(tm.deleted_at)
                .bind(JsonDoc(&tm.doc))
                .bind(&search.name)
                .bind(&search.description)
                .bind(&search.issue_uri)
                .bind(&search.owner)
                .bind(&search.reviewer)
                .bind(search.status_updated)
                .execute(&mut *tx)
                .await?;
                Self::write_access(&mut tx, tm).await?;
                Self::write_metadata(&mut tx, "threat_model", tm.id, metadata, false).await?;
                tx.commit().await?;
                Ok(alias)
            }

            #[::tracing::instrument(skip_all, fields(threat_model.id = %tm.id))]
            async fn update_threat_model(
                &self,
                tm: &ThreatModelRecord,
                expected_version: i64,
                metadata: Option<&[MetadataEntry]>,
            ) -> StoreResult<()> {
                let search = tm.search_columns();
                let mut tx = self.pool.begin_with(Self::BEGIN).await?;
                let done = ::sqlx::query(
                    "UPDATE threat_models SET name = $1, owner_provider = $2, owner_provider_id = $3, \
                     owner_email = $4, reviewer_email = $5, status = $6, version = $7, modified_at = $8, \
                     deleted_at = $9, doc = $10, search_name = $13, search_description = $14, \
                     search_issue_uri = $15, search_owner = $16, search_reviewer = $17, status_updated = $18 \
                     WHERE id = $11 AND version = $12",
                )
                .bind(&tm.name)
                .bind(&tm.owner_provider)
                .bind(&tm.owner_provider_id)
                .bind(&tm.owner_email)
                .bind(&tm.reviewer_email)
                .bind(&tm.status)
                .bind(tm.version)
                .bind(tm.modified_at)
                .bind(tm.deleted_at)
                .bind(JsonDoc(&tm.doc))
                .bind(tm.id)
                .bind(expected_version)
                .bind(&search.name)
                .bind(&search.description)
                .bind(&search.issue_uri)
                .bind(&search.owner)
                .bind(&search.reviewer)
                .bind(search.status_updated)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    let exists: Option<(i64,)> = ::sqlx::query_as("SELECT version FROM threat_models WHERE id = $1")
                        .bind(tm.id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    return Err(if exists.is_some() { StoreError::VersionMismatch } else { StoreError::NotFound });
                }
                Self::write_access(&mut tx, tm).await?;
                if let Some(entries) = metadata {
                    Self::clear_metadata(&mut tx, tm.id).await?;
                    Self::write_metadata(&mut tx, "threat_model", tm.id, entries, false).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            #[::tracing::instrument(skip_all, fields(threat_model.id = %id))]
            async fn get_threat_model(&self, id: ::uuid::Uuid) -> StoreResult<ThreatModelRecord> {
                let row: ThreatModelRow =
                    ::sqlx::query_as(AssertSqlSafe(format!("SELECT {TM_COLUMNS} FROM threat_models t WHERE t.id = $1")))
                        .bind(id)
                        .fetch_one(&self.pool)
                        .await?;
                let access: Vec<AccessRecord> = ::sqlx::query_as(
                    "SELECT principal_type, provider, provider_id, role FROM tm_access WHERE threat_model_id = $1",
                )
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
                Ok(row.into_record(access))
            }

            #[::tracing::instrument(skip_all)]
            async fn list_threat_models(
                &self,
                viewer: Option<&Viewer>,
                filter: &ThreatModelFilter,
            ) -> StoreResult<(Vec<ThreatModelSummary>, i64)> {
                let mut count = QueryBuilder::<$db>::new("SELECT COUNT(*)");
                Self::push_tm_filter(&mut count, viewer, filter);
                let (total,): (i64,) = count.build_query_as().fetch_one(&self.pool).await?;

                let mut qb = QueryBuilder::<$db>::new(format!("SELECT {TM_COLUMNS}, {COUNT_COLUMNS}"));
                Self::push_tm_filter(&mut qb, viewer, filter);
                qb.push(" ORDER BY t.created_at DESC, t.id LIMIT ")
                    .push_bind(filter.limit)
                    .push(" OFFSET ")
                    .push_bind(filter.offset);
                let rows = qb.build().fetch_all(&self.pool).await?;
                let mut out = Vec::with_capacity(rows.len());
                for row in rows {
                    let tm = <ThreatModelRow as ::sqlx::FromRow<_>>::from_row(&row)?;
                    let c = <CountsRow as ::sqlx::FromRow<_>>::from_row(&row)?;
                    out.push(ThreatModelSummary {
                        record: tm.into_record(Vec::new()),
                        counts: $crate::store::ChildCounts {
                            diagrams: c.diagrams,
                            threats: c.threats,
                            documents: c.documents,
                            repositories: c.repositories,
                            notes: c.notes,
                            assets: c.assets,
                        },
                    });
                }
                Ok((out, total))
            }

            #[::tracing::instrument(skip_all, fields(child.id = %child.id, child.kind = %child.kind))]
            async fn insert_child(&self, child: &ChildRecord, metadata: &[MetadataEntry]) -> StoreResult<i64> {
                let mut tx = self.pool.begin_with(Self::BEGIN).await?;
                let alias = Self::insert_child_tx(&mut tx, child, metadata).await?;
                tx.commit().await?;
                Ok(alias)
            }

            #[::tracing::instrument(skip_all, fields(child.id = %child.id, child.kind = %child.kind))]
            async fn update_child(
                &self,
                child: &ChildRecord,
                expected_version: i64,
                metadata: Option<&[MetadataEntry]>,
            ) -> StoreResult<()> {
                let mut tx = self.pool.begin_with(Self::BEGIN).await?;
                Self::update_child_tx(&mut tx, child, expected_version, metadata).await?;
                tx.commit().await?;
                Ok(())
            }

            #[::tracing::instrument(skip_all, fields(writes = writes.len()))]
            async fn write_children(&self, writes: &[ChildWrite]) -> StoreResult<Vec<i64>> {
                // Dropping the transaction on an error rolls every earlier write back.
                let mut tx = self.pool.begin_with(Self::BEGIN).await?;
                let mut aliases = Vec::with_capacity(writes.len());
                for w in writes {
                    aliases.push(match w {
                        ChildWrite::Insert { child, metadata } => Self::insert_child_tx(&mut tx, child, metadata).await?,
                        ChildWrite::Update { child, expected_version, metadata } => {
                            Self::update_child_tx(&mut tx, child, *expected_version, metadata.as_deref()).await?;
                            child.alias
                        }
                    });
                }
                tx.commit().await?;
                Ok(aliases)
            }

            async fn get_child(
                &self,
                threat_model_id: ::uuid::Uuid,
                kind: &str,
                id: ::uuid::Uuid,
            ) -> StoreResult<ChildRecord> {
                let row: ChildRow = ::sqlx::query_as(AssertSqlSafe(format!(
                    "SELECT {CHILD_COLUMNS} FROM children WHERE id = $1 AND threat_model_id = $2 AND kind = $3"
                )))
                .bind(id)
                .bind(threat_model_id)
                .bind(kind)
                .fetch_one(&self.pool)
                .await?;
                Ok(row.into())
            }

            async fn update_child_locked(
                &self,
                threat_model_id: ::uuid::Uuid,
                kind: &str,
                id: ::uuid::Uuid,
                change: &mut (dyn FnMut(ChildRecord) -> Option<ChildRecord> + Send),
            ) -> StoreResult<Option<ChildRecord>> {
                let mut tx = self.pool.begin_with(Self::BEGIN).await?;
                let row: ChildRow = ::sqlx::query_as(AssertSqlSafe(format!(
                    "SELECT {CHILD_COLUMNS} FROM children WHERE id = $1 AND threat_model_id = $2 AND kind = $3 {}",
                    Self::FOR_UPDATE
                )))
                .bind(id)
                .bind(threat_model_id)
                .bind(kind)
                .fetch_one(&mut *tx)
                .await?;
                let current: ChildRecord = row.into();
                // The row is locked, so its version cannot have moved.
                let locked_version = current.version;
                let Some(next) = change(current) else {
                    tx.rollback().await?;
                    return Ok(None);
                };
                Self::update_child_tx(&mut tx, &next, locked_version, None).await?;
                tx.commit().await?;
                Ok(Some(next))
            }

            async fn list_children(
                &self,
                threat_model_id: ::uuid::Uuid,
                kind: Option<&str>,
                include_deleted: bool,
            ) -> StoreResult<Vec<ChildRecord>> {
                let mut qb = QueryBuilder::<$db>::new(format!(
                    "SELECT {CHILD_COLUMNS} FROM children WHERE threat_model_id = "
                ));
                qb.push_bind(threat_model_id);
                if let Some(k) = kind {
                    qb.push(" AND kind = ").push_bind(k.to_owned());
                }
                if !include_deleted {
                    qb.push(" AND deleted_at IS NULL");
                }
                qb.push(" ORDER BY created_at, alias");
                let rows: Vec<ChildRow> = qb.build_query_as().fetch_all(&self.pool).await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn list_metadata(&self, entity_id: ::uuid::Uuid) -> StoreResult<Vec<MetadataEntry>> {
                Ok(::sqlx::query_as("SELECT key, value FROM metadata WHERE entity_id = $1 ORDER BY position, key")
                    .bind(entity_id)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn metadata_under(&self, threat_model_id: ::uuid::Uuid) -> StoreResult<MetadataMap> {
                let rows: Vec<EntityMetadataRow> = ::sqlx::query_as(
                    "SELECT entity_id, key, value FROM metadata WHERE entity_id = $1 OR entity_id IN \
                     (SELECT id FROM children WHERE threat_model_id = $1) ORDER BY position, key",
                )
                .bind(threat_model_id)
                .fetch_all(&self.pool)
                .await?;
                let mut map = MetadataMap::new();
                for r in rows {
                    map.entry(r.entity_id).or_default().push(MetadataEntry { key: r.key, value: r.value });
                }
                Ok(map)
            }

            async fn insert_metadata(
                &self,
                entity_type: &str,
                entity_id: ::uuid::Uuid,
                entries: &[MetadataEntry],
            ) -> StoreResult<()> {
                let mut tx = self.pool.begin_with(Self::BEGIN).await?;
                Self::write_metadata(&mut tx, entity_type, entity_id, entries, false).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn upsert_metadata(
                &self,
                entity_type: &str,
                entity_id: ::uuid::Uuid,
                entries: &[MetadataEntry],
            ) -> StoreResult<()> {
                let mut tx = self.pool.begin_with(Self::BEGIN).await?;
                Self::write_metadata(&mut tx, entity_type, entity_id, entries, true).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn replace_metadata(
                &self,
                entity_type: &str,
                entity_id: ::uuid::Uuid,
                entries: &[MetadataEntry],
            ) -> StoreResult<()> {
                let mut tx = self.pool.begin_with(Self::BEGIN).await?;
                Self::clear_metadata(&mut tx, entity_id).await?;
                Self::write_metadata(&mut tx, entity_type, entity_id, entries, false).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn update_metadata_value(&self, entity_id: ::uuid::Uuid, key: &str, value: &str) -> StoreResult<()> {
                let done = ::sqlx::query("UPDATE metadata SET value = $1 WHERE entity_id = $2 AND key = $3")
                    .bind(value)
                    .bind(entity_id)
                    .bind(key)
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }

            async fn delete_metadata(&self, entity_id: ::uuid::Uuid, key: &str) -> StoreResult<()> {
                let done = ::sqlx::query("DELETE FROM metadata WHERE entity_id = $1 AND key = $2")
                    .bind(entity_id)
                    .bind(key)
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }
        }
    };
}
