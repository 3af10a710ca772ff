//! Persistence of teams and projects (migration 0013): the `OrgStore` trait, its records, and the
//! `org_store!` macro that implements it for both databases with one SQL text. IO through the
//! store struct's `pool`; the rules (who may do what, validation, the wire shape) live in
//! `domain::teams`.
//!
//! Teams and projects are "organization units" in one table (`org_units`, `kind` tells them
//! apart): indexed columns plus the JSON document. A team's member ids and every unit's
//! relationships are mirrored into `team_members` and `org_relations` on each write, for the list
//! filters and the membership checks; notes of teams and projects live in `org_notes`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{MetadataEntry, StoreResult, retry};

/// `kind` of a team.
pub const TEAM: &str = "team";
/// `kind` of a project.
pub const PROJECT: &str = "project";

/// A team or a project.
#[derive(Debug, Clone, PartialEq)]
pub struct OrgUnitRecord {
    pub id: Uuid,
    /// [`TEAM`] or [`PROJECT`].
    pub kind: String,
    /// The team of a project; `None` for a team.
    pub team_id: Option<Uuid>,
    pub name: String,
    pub status: String,
    /// The creator's internal id: the "owner" who may delete it (besides administrators).
    pub created_by: Uuid,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub modified_at: DateTime<Utc>,
    /// The API document without server-resolved fields (users, metadata, notes).
    pub doc: Value,
}

/// A unit in a list, with what the list item shows beside it.
#[derive(Debug, Clone, PartialEq)]
pub struct OrgUnitSummary {
    pub record: OrgUnitRecord,
    /// Members of a team (0 for a project).
    pub member_count: i64,
    /// Projects of a team (0 for a project).
    pub project_count: i64,
    pub note_count: i64,
    /// The name of a project's team.
    pub team_name: Option<String>,
}

/// A directed relationship `from_id` → `to_id` (`parent`, `child`, `dependency`, …).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RelationRecord {
    pub from_id: Uuid,
    pub to_id: Uuid,
    pub relationship: String,
}

/// Filters of `GET /teams` and `GET /projects`.
#[derive(Debug, Clone, Default)]
pub struct OrgUnitFilter {
    /// [`TEAM`] or [`PROJECT`].
    pub kind: &'static str,
    /// Only units this user belongs to (a project: through its team); `None` for administrators.
    pub visible_to: Option<Uuid>,
    /// Case-insensitive substring of the name.
    pub name_contains: Option<String>,
    /// Any of these statuses.
    pub statuses: Vec<String>,
    /// Teams with this member.
    pub member: Option<Uuid>,
    /// Projects of this team.
    pub team_id: Option<Uuid>,
    /// Only these ids (the relationship filter, resolved by the caller).
    pub ids: Option<Vec<Uuid>>,
    pub limit: i64,
    pub offset: i64,
}

/// A note of a team or a project.
#[derive(Debug, Clone, PartialEq)]
pub struct OrgNoteRecord {
    pub id: Uuid,
    /// The team or project.
    pub parent_id: Uuid,
    /// Visible to every member when true; to administrators and security reviewers only otherwise.
    pub sharable: bool,
    pub created_at: DateTime<Utc>,
    pub modified_at: DateTime<Utc>,
    pub doc: Value,
}

/// Teams, projects and their notes.
#[async_trait]
pub trait OrgStore: Send + Sync {
    /// Inserts a unit with its team members (teams only), relationships and metadata, in one
    /// transaction. `Conflict` when the id exists.
    async fn insert_org_unit(
        &self,
        unit: &OrgUnitRecord,
        members: &[Uuid],
        relations: &[RelationRecord],
        metadata: &[MetadataEntry],
    ) -> StoreResult<()>;
    /// Writes a unit if its stored version is still `expected_version` (`VersionMismatch`
    /// otherwise, `NotFound` when missing); replaces its members and relationships, and its
    /// metadata when given.
    async fn update_org_unit(
        &self,
        unit: &OrgUnitRecord,
        expected_version: i64,
        members: &[Uuid],
        relations: &[RelationRecord],
        metadata: Option<&[MetadataEntry]>,
    ) -> StoreResult<()>;
    /// The unit of this kind and id.
    async fn get_org_unit(&self, kind: &str, id: Uuid) -> StoreResult<OrgUnitRecord>;
    /// Deletes a unit with its notes, relationships and metadata. `Conflict` (and nothing
    /// deleted) when a team still has projects or a threat model still names the project.
    async fn delete_org_unit(&self, kind: &str, id: Uuid) -> StoreResult<()>;
    /// A page of units, newest first, and the total matching the filter.
    async fn list_org_units(&self, filter: &OrgUnitFilter) -> StoreResult<(Vec<OrgUnitSummary>, i64)>;
    /// Whether `user` is a member of `team`.
    async fn is_team_member(&self, team: Uuid, user: Uuid) -> StoreResult<bool>;
    /// The relationships from or to `id`.
    async fn relations_of(&self, id: Uuid) -> StoreResult<Vec<RelationRecord>>;

    /// Inserts a note.
    async fn insert_org_note(&self, note: &OrgNoteRecord) -> StoreResult<()>;
    /// Writes a note of `note.parent_id`; `NotFound` when it has none with this id.
    async fn update_org_note(&self, note: &OrgNoteRecord) -> StoreResult<()>;
    async fn get_org_note(&self, parent_id: Uuid, id: Uuid) -> StoreResult<OrgNoteRecord>;
    /// `NotFound` when `parent_id` has no note with this id.
    async fn delete_org_note(&self, parent_id: Uuid, id: Uuid) -> StoreResult<()>;
    /// A page of a unit's notes, oldest first (the non-sharable ones only when `include_private`),
    /// and their total.
    async fn list_org_notes(
        &self,
        parent_id: Uuid,
        include_private: bool,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<OrgNoteRecord>, i64)>;
}

/// Every call retried on serialization failures and deadlocks, as `Retrying`'s `Store` calls are.
#[async_trait]
impl<S: OrgStore> OrgStore for super::retry::Retrying<S> {
    async fn insert_org_unit(
        &self,
        unit: &OrgUnitRecord,
        members: &[Uuid],
        relations: &[RelationRecord],
        metadata: &[MetadataEntry],
    ) -> StoreResult<()> {
        retry::run(|| self.inner.insert_org_unit(unit, members, relations, metadata)).await
    }
    async fn update_org_unit(
        &self,
        unit: &OrgUnitRecord,
        expected_version: i64,
        members: &[Uuid],
        relations: &[RelationRecord],
        metadata: Option<&[MetadataEntry]>,
    ) -> StoreResult<()> {
        retry::run(|| {
            self.inner
                .update_org_unit(unit, expected_version, members, relations, metadata)
        })
        .await
    }
    async fn get_org_unit(&self, kind: &str, id: Uuid) -> StoreResult<OrgUnitRecord> {
        retry::run(|| self.inner.get_org_unit(kind, id)).await
    }
    async fn delete_org_unit(&self, kind: &str, id: Uuid) -> StoreResult<()> {
        retry::run(|| self.inner.delete_org_unit(kind, id)).await
    }
    async fn list_org_units(&self, filter: &OrgUnitFilter) -> StoreResult<(Vec<OrgUnitSummary>, i64)> {
        retry::run(|| self.inner.list_org_units(filter)).await
    }
    async fn is_team_member(&self, team: Uuid, user: Uuid) -> StoreResult<bool> {
        retry::run(|| self.inner.is_team_member(team, user)).await
    }
    async fn relations_of(&self, id: Uuid) -> StoreResult<Vec<RelationRecord>> {
        retry::run(|| self.inner.relations_of(id)).await
    }
    async fn insert_org_note(&self, note: &OrgNoteRecord) -> StoreResult<()> {
        retry::run(|| self.inner.insert_org_note(note)).await
    }
    async fn update_org_note(&self, note: &OrgNoteRecord) -> StoreResult<()> {
        retry::run(|| self.inner.update_org_note(note)).await
    }
    async fn get_org_note(&self, parent_id: Uuid, id: Uuid) -> StoreResult<OrgNoteRecord> {
        retry::run(|| self.inner.get_org_note(parent_id, id)).await
    }
    async fn delete_org_note(&self, parent_id: Uuid, id: Uuid) -> StoreResult<()> {
        retry::run(|| self.inner.delete_org_note(parent_id, id)).await
    }
    async fn list_org_notes(
        &self,
        parent_id: Uuid,
        include_private: bool,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<OrgNoteRecord>, i64)> {
        retry::run(|| {
            self.inner
                .list_org_notes(parent_id, include_private, limit, offset)
        })
        .await
    }
}

/// A row of `org_units`.
#[derive(sqlx::FromRow)]
pub(super) struct OrgUnitRow {
    pub id: Uuid,
    pub kind: String,
    pub team_id: Option<Uuid>,
    pub name: String,
    pub status: String,
    pub created_by: Uuid,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub modified_at: DateTime<Utc>,
    pub doc: sqlx::types::Json<Value>,
}

impl From<OrgUnitRow> for OrgUnitRecord {
    fn from(r: OrgUnitRow) -> Self {
        OrgUnitRecord {
            id: r.id,
            kind: r.kind,
            team_id: r.team_id,
            name: r.name,
            status: r.status,
            created_by: r.created_by,
            version: r.version,
            created_at: r.created_at,
            modified_at: r.modified_at,
            doc: r.doc.0,
        }
    }
}

/// The extra columns of a list row.
#[derive(sqlx::FromRow)]
pub(super) struct OrgCountsRow {
    pub member_count: i64,
    pub project_count: i64,
    pub note_count: i64,
    pub team_name: Option<String>,
}

/// A row of `org_notes`.
#[derive(sqlx::FromRow)]
pub(super) struct OrgNoteRow {
    pub id: Uuid,
    pub parent_id: Uuid,
    pub sharable: bool,
    pub created_at: DateTime<Utc>,
    pub modified_at: DateTime<Utc>,
    pub doc: sqlx::types::Json<Value>,
}

impl From<OrgNoteRow> for OrgNoteRecord {
    fn from(r: OrgNoteRow) -> Self {
        OrgNoteRecord {
            id: r.id,
            parent_id: r.parent_id,
            sharable: r.sharable,
            created_at: r.created_at,
            modified_at: r.modified_at,
            doc: r.doc.0,
        }
    }
}

pub(super) const UNIT_COLUMNS: &str =
    "u.id, u.kind, u.team_id, u.name, u.status, u.created_by, u.version, u.created_at, u.modified_at, u.doc";

/// Member, project and note counts and the team's name, as extra columns of a list query.
pub(super) const UNIT_COUNT_COLUMNS: &str = "\
    (SELECT COUNT(*) FROM team_members m WHERE m.team_id = u.id) AS member_count, \
    (SELECT COUNT(*) FROM org_units p WHERE p.team_id = u.id) AS project_count, \
    (SELECT COUNT(*) FROM org_notes n WHERE n.parent_id = u.id) AS note_count, \
    (SELECT t.name FROM org_units t WHERE t.id = u.team_id) AS team_name";

pub(super) const NOTE_COLUMNS: &str = "id, parent_id, sharable, created_at, modified_at, doc";

/// Implements `OrgStore` for `$store` (the struct `sql_store!` implements `Store` for).
macro_rules! org_store {
    ($store:ty, $db:ty) => {
        const _: () = {
            use $crate::store::sql::JsonDoc;
            use $crate::store::teams::{
                NOTE_COLUMNS, OrgCountsRow, OrgNoteRecord, OrgNoteRow, OrgStore, OrgUnitFilter, OrgUnitRecord,
                OrgUnitRow, OrgUnitSummary, RelationRecord, UNIT_COLUMNS, UNIT_COUNT_COLUMNS,
            };
            use $crate::store::{MetadataEntry, StoreError, StoreResult};
            use ::sqlx::QueryBuilder;

            type OrgTx = ::sqlx::Transaction<'static, $db>;

            impl $store {
                /// Replaces a unit's mirrored members and relationships.
                async fn write_org_links(
                    tx: &mut OrgTx,
                    id: ::uuid::Uuid,
                    members: &[::uuid::Uuid],
                    relations: &[RelationRecord],
                ) -> StoreResult<()> {
                    ::sqlx::query("DELETE FROM team_members WHERE team_id = $1")
                        .bind(id)
                        .execute(&mut **tx)
                        .await?;
                    for m in members {
                        ::sqlx::query("INSERT INTO team_members (team_id, user_uuid) VALUES ($1, $2)")
                            .bind(id)
                            .bind(m)
                            .execute(&mut **tx)
                            .await?;
                    }
                    ::sqlx::query("DELETE FROM org_relations WHERE from_id = $1")
                        .bind(id)
                        .execute(&mut **tx)
                        .await?;
                    for r in relations {
                        ::sqlx::query("INSERT INTO org_relations (from_id, to_id, relationship) VALUES ($1, $2, $3)")
                            .bind(r.from_id)
                            .bind(r.to_id)
                            .bind(&r.relationship)
                            .execute(&mut **tx)
                            .await?;
                    }
                    Ok(())
                }

                async fn write_org_metadata(
                    tx: &mut OrgTx,
                    kind: &str,
                    id: ::uuid::Uuid,
                    entries: &[MetadataEntry],
                ) -> StoreResult<()> {
                    ::sqlx::query("DELETE FROM metadata WHERE entity_id = $1")
                        .bind(id)
                        .execute(&mut **tx)
                        .await?;
                    for (i, e) in entries.iter().enumerate() {
                        ::sqlx::query(
                            "INSERT INTO metadata (entity_type, entity_id, key, value, position) VALUES ($1, $2, $3, $4, $5)",
                        )
                        .bind(kind)
                        .bind(id)
                        .bind(&e.key)
                        .bind(&e.value)
                        .bind(i as i64 + 1)
                        .execute(&mut **tx)
                        .await?;
                    }
                    Ok(())
                }

                fn push_org_filter(qb: &mut QueryBuilder<$db>, f: &OrgUnitFilter) {
                    qb.push(" FROM org_units u WHERE u.kind = ").push_bind(f.kind);
                    if let Some(user) = f.visible_to {
                        let team = if f.kind == $crate::store::teams::TEAM { "u.id" } else { "u.team_id" };
                        qb.push(" AND EXISTS (SELECT 1 FROM team_members vm WHERE vm.team_id = ")
                            .push(team)
                            .push(" AND vm.user_uuid = ")
                            .push_bind(user)
                            .push(")");
                    }
                    if let Some(needle) = &f.name_contains {
                        qb.push(" AND u.name_lc LIKE ")
                            .push_bind($crate::store::contains_pattern(needle))
                            .push(" ESCAPE '\\'");
                    }
                    if !f.statuses.is_empty() {
                        qb.push(" AND u.status IN (");
                        let mut sep = qb.separated(", ");
                        for s in &f.statuses {
                            sep.push_bind(s.clone());
                        }
                        qb.push(")");
                    }
                    if let Some(member) = f.member {
                        qb.push(" AND EXISTS (SELECT 1 FROM team_members fm WHERE fm.team_id = u.id AND fm.user_uuid = ")
                            .push_bind(member)
                            .push(")");
                    }
                    if let Some(team) = f.team_id {
                        qb.push(" AND u.team_id = ").push_bind(team);
                    }
                    if let Some(ids) = &f.ids {
                        if ids.is_empty() {
                            qb.push(" AND 1 = 0");
                        } else {
                            qb.push(" AND u.id IN (");
                            let mut sep = qb.separated(", ");
                            for id in ids {
                                sep.push_bind(*id);
                            }
                            qb.push(")");
                        }
                    }
                }
            }

            #[::async_trait::async_trait]
            impl OrgStore for $store {
                #[::tracing::instrument(skip_all, fields(org.id = %unit.id, org.kind = %unit.kind))]
                async fn insert_org_unit(
                    &self,
                    unit: &OrgUnitRecord,
                    members: &[::uuid::Uuid],
                    relations: &[RelationRecord],
                    metadata: &[MetadataEntry],
                ) -> StoreResult<()> {
                    let mut tx = self.pool.begin_with(Self::BEGIN).await?;
                    ::sqlx::query(
                        "INSERT INTO org_units (id, kind, team_id, name, name_lc, status, created_by, version, \
                         created_at, modified_at, doc) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    )
                    .bind(unit.id)
                    .bind(&unit.kind)
                    .bind(unit.team_id)
                    .bind(&unit.name)
                    .bind(unit.name.to_lowercase())
                    .bind(&unit.status)
                    .bind(unit.created_by)
                    .bind(unit.version)
                    .bind(unit.created_at)
                    .bind(unit.modified_at)
                    .bind(JsonDoc(&unit.doc))
                    .execute(&mut *tx)
                    .await?;
                    Self::write_org_links(&mut tx, unit.id, members, relations).await?;
                    Self::write_org_metadata(&mut tx, &unit.kind, unit.id, metadata).await?;
                    tx.commit().await?;
                    Ok(())
                }

                #[::tracing::instrument(skip_all, fields(org.id = %unit.id, org.kind = %unit.kind))]
                async fn update_org_unit(
                    &self,
                    unit: &OrgUnitRecord,
                    expected_version: i64,
                    members: &[::uuid::Uuid],
                    relations: &[RelationRecord],
                    metadata: Option<&[MetadataEntry]>,
                ) -> StoreResult<()> {
                    let mut tx = self.pool.begin_with(Self::BEGIN).await?;
                    let done = ::sqlx::query(
                        "UPDATE org_units SET team_id = $1, name = $2, name_lc = $3, status = $4, version = $5, \
                         modified_at = $6, doc = $7 WHERE id = $8 AND kind = $9 AND version = $10",
                    )
                    .bind(unit.team_id)
                    .bind(&unit.name)
                    .bind(unit.name.to_lowercase())
                    .bind(&unit.status)
                    .bind(unit.version)
                    .bind(unit.modified_at)
                    .bind(JsonDoc(&unit.doc))
                    .bind(unit.id)
                    .bind(&unit.kind)
                    .bind(expected_version)
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() == 0 {
                        let exists: Option<(i64,)> =
                            ::sqlx::query_as("SELECT version FROM org_units WHERE id = $1 AND kind = $2")
                                .bind(unit.id)
                                .bind(&unit.kind)
                                .fetch_optional(&mut *tx)
                                .await?;
                        return Err(if exists.is_some() { StoreError::VersionMismatch } else { StoreError::NotFound });
                    }
                    Self::write_org_links(&mut tx, unit.id, members, relations).await?;
                    if let Some(m) = metadata {
                        Self::write_org_metadata(&mut tx, &unit.kind, unit.id, m).await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }

                async fn get_org_unit(&self, kind: &str, id: ::uuid::Uuid) -> StoreResult<OrgUnitRecord> {
                    let row: OrgUnitRow = ::sqlx::query_as(::sqlx::AssertSqlSafe(format!(
                        "SELECT {UNIT_COLUMNS} FROM org_units u WHERE u.id = $1 AND u.kind = $2"
                    )))
                    .bind(id)
                    .bind(kind)
                    .fetch_one(&self.pool)
                    .await?;
                    Ok(row.into())
                }

                #[::tracing::instrument(skip_all, fields(org.id = %id, org.kind = %kind))]
                async fn delete_org_unit(&self, kind: &str, id: ::uuid::Uuid) -> StoreResult<()> {
                    let mut tx = self.pool.begin_with(Self::BEGIN).await?;
                    let found: Option<(::uuid::Uuid,)> =
                        ::sqlx::query_as("SELECT id FROM org_units WHERE id = $1 AND kind = $2")
                            .bind(id)
                            .bind(kind)
                            .fetch_optional(&mut *tx)
                            .await?;
                    if found.is_none() {
                        return Err(StoreError::NotFound);
                    }
                    let (projects,): (i64,) = ::sqlx::query_as("SELECT COUNT(*) FROM org_units WHERE team_id = $1")
                        .bind(id)
                        .fetch_one(&mut *tx)
                        .await?;
                    // Threat models name their project in their document (`project_id`, a lower-case
                    // UUID string); tombstoned models count too, since they may be restored.
                    let (models,): (i64,) =
                        ::sqlx::query_as("SELECT COUNT(*) FROM threat_models WHERE doc->>'project_id' = $1")
                            .bind(id.to_string())
                            .fetch_one(&mut *tx)
                            .await?;
                    if projects > 0 || models > 0 {
                        return Err(StoreError::Conflict);
                    }
                    ::sqlx::query("DELETE FROM metadata WHERE entity_id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    ::sqlx::query("DELETE FROM org_units WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn list_org_units(&self, filter: &OrgUnitFilter) -> StoreResult<(Vec<OrgUnitSummary>, i64)> {
                    let mut count = QueryBuilder::<$db>::new("SELECT COUNT(*)");
                    Self::push_org_filter(&mut count, filter);
                    let (total,): (i64,) = count.build_query_as().fetch_one(&self.pool).await?;

                    let mut qb = QueryBuilder::<$db>::new(format!("SELECT {UNIT_COLUMNS}, {UNIT_COUNT_COLUMNS}"));
                    Self::push_org_filter(&mut qb, filter);
                    qb.push(" ORDER BY u.created_at DESC, u.id LIMIT ")
                        .push_bind(filter.limit)
                        .push(" OFFSET ")
                        .push_bind(filter.offset);
                    let rows = qb.build().fetch_all(&self.pool).await?;
                    let mut out = Vec::with_capacity(rows.len());
                    for row in rows {
                        let unit = <OrgUnitRow as ::sqlx::FromRow<_>>::from_row(&row)?;
                        let c = <OrgCountsRow as ::sqlx::FromRow<_>>::from_row(&row)?;
                        out.push(OrgUnitSummary {
                            record: unit.into(),
                            member_count: c.member_count,
                            project_count: c.project_count,
                            note_count: c.note_count,
                            team_name: c.team_name,
                        });
                    }
                    Ok((out, total))
                }

                async fn is_team_member(&self, team: ::uuid::Uuid, user: ::uuid::Uuid) -> StoreResult<bool> {
                    let (n,): (i64,) =
                        ::sqlx::query_as("SELECT COUNT(*) FROM team_members WHERE team_id = $1 AND user_uuid = $2")
                            .bind(team)
                            .bind(user)
                            .fetch_one(&self.pool)
                            .await?;
                    Ok(n > 0)
                }

                async fn relations_of(&self, id: ::uuid::Uuid) -> StoreResult<Vec<RelationRecord>> {
                    Ok(::sqlx::query_as(
                        "SELECT from_id, to_id, relationship FROM org_relations WHERE from_id = $1 OR to_id = $1 \
                         ORDER BY from_id, to_id, relationship",
                    )
                    .bind(id)
                    .fetch_all(&self.pool)
                    .await?)
                }

                async fn insert_org_note(&self, note: &OrgNoteRecord) -> StoreResult<()> {
                    ::sqlx::query(
                        "INSERT INTO org_notes (id, parent_id, sharable, created_at, modified_at, doc) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(note.id)
                    .bind(note.parent_id)
                    .bind(note.sharable)
                    .bind(note.created_at)
                    .bind(note.modified_at)
                    .bind(JsonDoc(&note.doc))
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                async fn update_org_note(&self, note: &OrgNoteRecord) -> StoreResult<()> {
                    let done = ::sqlx::query(
                        "UPDATE org_notes SET sharable = $1, modified_at = $2, doc = $3 WHERE id = $4 AND parent_id = $5",
                    )
                    .bind(note.sharable)
                    .bind(note.modified_at)
                    .bind(JsonDoc(&note.doc))
                    .bind(note.id)
                    .bind(note.parent_id)
                    .execute(&self.pool)
                    .await?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound);
                    }
                    Ok(())
                }

                async fn get_org_note(&self, parent_id: ::uuid::Uuid, id: ::uuid::Uuid) -> StoreResult<OrgNoteRecord> {
                    let row: OrgNoteRow = ::sqlx::query_as(::sqlx::AssertSqlSafe(format!(
                        "SELECT {NOTE_COLUMNS} FROM org_notes WHERE id = $1 AND parent_id = $2"
                    )))
                    .bind(id)
                    .bind(parent_id)
                    .fetch_one(&self.pool)
                    .await?;
                    Ok(row.into())
                }

                async fn delete_org_note(&self, parent_id: ::uuid::Uuid, id: ::uuid::Uuid) -> StoreResult<()> {
                    let done = ::sqlx::query("DELETE FROM org_notes WHERE id = $1 AND parent_id = $2")
                        .bind(id)
                        .bind(parent_id)
                        .execute(&self.pool)
                        .await?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound);
                    }
                    Ok(())
                }

                async fn list_org_notes(
                    &self,
                    parent_id: ::uuid::Uuid,
                    include_private: bool,
                    limit: i64,
                    offset: i64,
                ) -> StoreResult<(Vec<OrgNoteRecord>, i64)> {
                    let private = if include_private { "" } else { " AND sharable = TRUE" };
                    let (total,): (i64,) = ::sqlx::query_as(::sqlx::AssertSqlSafe(format!(
                        "SELECT COUNT(*) FROM org_notes WHERE parent_id = $1{private}"
                    )))
                    .bind(parent_id)
                    .fetch_one(&self.pool)
                    .await?;
                    let rows: Vec<OrgNoteRow> = ::sqlx::query_as(::sqlx::AssertSqlSafe(format!(
                        "SELECT {NOTE_COLUMNS} FROM org_notes WHERE parent_id = $1{private} \
                         ORDER BY created_at, id LIMIT $2 OFFSET $3"
                    )))
                    .bind(parent_id)
                    .bind(limit)
                    .bind(offset)
                    .fetch_all(&self.pool)
                    .await?;
                    Ok((rows.into_iter().map(Into::into).collect(), total))
                }
            }
        };
    };
}
