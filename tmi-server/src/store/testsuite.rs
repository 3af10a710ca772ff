//! Conformance suite every `Store` implementation must pass. IO: drives the store under test;
//! `store::pgdb::TestDatabase` (tests/common/pgdb.rs) is the throw-away PostgreSQL database.

use chrono::{SubsecRound, Utc};
use serde_json::json;
use uuid::Uuid;

use super::*;

fn user(hint: &str) -> UserRecord {
    UserRecord {
        internal_uuid: Uuid::new_v4(),
        provider: "tmi".into(),
        provider_user_id: hint.into(),
        email: format!("{hint}@tmi.local"),
        name: hint.into(),
        email_verified: false,
    }
}

fn tm(owner: &str, name: &str, status: &str) -> ThreatModelRecord {
    let now = Utc::now().trunc_subsecs(6);
    ThreatModelRecord {
        id: Uuid::new_v4(),
        alias: 0,
        name: name.into(),
        owner_provider: "tmi".into(),
        owner_provider_id: owner.into(),
        owner_email: format!("{owner}@tmi.local"),
        reviewer_email: None,
        status: status.into(),
        version: 1,
        created_at: now,
        modified_at: now,
        deleted_at: None,
        doc: json!({"name": name}),
        access: vec![AccessRecord {
            principal_type: "user".into(),
            provider: "tmi".into(),
            provider_id: owner.into(),
            role: "owner".into(),
        }],
    }
}

fn entry(k: &str, v: &str) -> MetadataEntry {
    MetadataEntry {
        key: k.into(),
        value: v.into(),
    }
}

/// Runs every conformance check against `store`.
pub async fn run_all(store: &dyn Store) {
    users_and_groups(store).await;
    threat_models(store).await;
    children_and_metadata(store).await;
    bulk_child_writes(store).await;
    token_revocations(store).await;
    provider_groups(store).await;
    client_credentials(store).await;
    teams_and_projects(store).await;
}

async fn client_credentials(store: &dyn Store) {
    let owner = store.upsert_login_user(&user("cc-owner")).await.unwrap();
    let other = store.upsert_login_user(&user("cc-other")).await.unwrap();
    assert_eq!(
        store.get_user(owner.internal_uuid).await.unwrap(),
        Some(owner.clone())
    );
    assert_eq!(store.get_user(Uuid::new_v4()).await.unwrap(), None);
    let now = Utc::now().trunc_subsecs(6);
    let credential = |owner: Uuid, client_id: &str, at| ClientCredentialRecord {
        id: Uuid::new_v4(),
        owner_uuid: owner,
        client_id: client_id.into(),
        secret_sha256: "ab".repeat(32),
        name: "CI".into(),
        description: None,
        created_at: at,
        modified_at: at,
        expires_at: None,
        last_used_at: None,
    };
    let mut first = credential(owner.internal_uuid, "tmi_cc_first", now);
    first.description = Some("pipeline".into());
    first.expires_at = Some(now + chrono::Duration::days(30));
    let second = credential(
        owner.internal_uuid,
        "tmi_cc_second",
        now + chrono::Duration::seconds(1),
    );
    let others = credential(other.internal_uuid, "tmi_cc_others", now);
    for c in [&second, &first, &others] {
        store.insert_client_credential(c).await.unwrap();
    }
    // Client ids are unique.
    assert!(matches!(
        store
            .insert_client_credential(&credential(other.internal_uuid, "tmi_cc_first", now))
            .await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        store
            .client_credential_by_client_id("tmi_cc_first")
            .await
            .unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        store.client_credential_by_client_id("tmi_cc_none").await.unwrap(),
        None
    );
    // A user's own, oldest first.
    assert_eq!(
        store.client_credentials_of(owner.internal_uuid).await.unwrap(),
        vec![first.clone(), second.clone()]
    );
    let used = now + chrono::Duration::minutes(5);
    store.touch_client_credential(first.id, used).await.unwrap();
    let read = store
        .client_credential_by_client_id("tmi_cc_first")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.last_used_at, Some(used));
    assert_eq!(
        read.modified_at, first.modified_at,
        "a grant does not modify the credential"
    );
    // Someone else's credential is not found, and stays.
    assert!(matches!(
        store
            .delete_client_credential(others.id, owner.internal_uuid)
            .await,
        Err(StoreError::NotFound)
    ));
    store
        .delete_client_credential(first.id, owner.internal_uuid)
        .await
        .unwrap();
    assert!(matches!(
        store
            .delete_client_credential(first.id, owner.internal_uuid)
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store
            .client_credential_by_client_id("tmi_cc_first")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.client_credentials_of(owner.internal_uuid).await.unwrap(),
        vec![second]
    );
    assert_eq!(
        store.client_credentials_of(other.internal_uuid).await.unwrap(),
        vec![others]
    );
}

/// An identity provider's groups follow what it asserts at each sign-in; TMI's groups stay.
async fn provider_groups(store: &dyn Store) {
    let mut u = user("pg-user");
    u.provider = "kc".into();
    let u = store.upsert_login_user(&u).await.unwrap();
    store
        .add_group_member(groups::SECURITY_REVIEWERS, u.internal_uuid)
        .await
        .unwrap();
    let names = |gs: Vec<GroupRecord>| -> Vec<(String, String)> {
        gs.into_iter().map(|g| (g.provider, g.group_name)).collect()
    };
    store
        .set_provider_groups(u.internal_uuid, "kc", &["b".into(), "a".into()])
        .await
        .unwrap();
    assert_eq!(
        names(store.user_groups(u.internal_uuid).await.unwrap()),
        [
            ("kc".into(), "a".into()),
            ("kc".into(), "b".into()),
            ("tmi".into(), "security-reviewers".into())
        ]
    );
    store
        .set_provider_groups(u.internal_uuid, "kc", &["b".into(), "c".into()])
        .await
        .unwrap();
    assert_eq!(
        names(store.user_groups(u.internal_uuid).await.unwrap()),
        [
            ("kc".into(), "b".into()),
            ("kc".into(), "c".into()),
            ("tmi".into(), "security-reviewers".into())
        ]
    );
    // Another member of an existing group joins the same row.
    let mut v = user("pg-other");
    v.provider = "kc".into();
    let v = store.upsert_login_user(&v).await.unwrap();
    store
        .set_provider_groups(v.internal_uuid, "kc", &["b".into()])
        .await
        .unwrap();
    let gb = store.user_groups(v.internal_uuid).await.unwrap();
    assert_eq!(store.group_member_count(gb[0].internal_uuid).await.unwrap(), 2);
    store
        .set_provider_groups(u.internal_uuid, "kc", &[])
        .await
        .unwrap();
    assert_eq!(
        names(store.user_groups(u.internal_uuid).await.unwrap()),
        [("tmi".into(), "security-reviewers".into())]
    );
}

async fn token_revocations(store: &dyn Store) {
    use crate::store::RevocationRecord;
    let r = |key: &str, expires_at: i64, revoked_at: i64| RevocationRecord {
        key: key.into(),
        expires_at,
        revoked_at,
    };
    store.insert_revocation(&r("token:a", 1_000, 10)).await.unwrap();
    store.insert_revocation(&r("family:f", 5_000, 20)).await.unwrap();
    // Revoking again never shortens a revocation.
    store.insert_revocation(&r("family:f", 3_000, 30)).await.unwrap();
    assert!(store.is_revoked("token:a", 999).await.unwrap());
    assert!(!store.is_revoked("token:a", 1_000).await.unwrap(), "expired");
    assert!(store.is_revoked("family:f", 4_000).await.unwrap());
    assert!(!store.is_revoked("token:other", 0).await.unwrap());
    assert_eq!(
        store.revocations_since(0, 500).await.unwrap(),
        vec![r("token:a", 1_000, 10), r("family:f", 5_000, 30)]
    );
    assert_eq!(
        store.revocations_since(25, 500).await.unwrap(),
        vec![r("family:f", 5_000, 30)],
        "only what is new since a given time"
    );
    assert_eq!(store.purge_revocations(2_000).await.unwrap(), 1);
    assert_eq!(
        store.revocations_since(0, 0).await.unwrap(),
        vec![r("family:f", 5_000, 30)]
    );
}

async fn users_and_groups(store: &dyn Store) {
    store.ping().await.unwrap();
    let alice = store.upsert_login_user(&user("alice")).await.unwrap();
    let again = store.upsert_login_user(&user("alice")).await.unwrap();
    assert_eq!(
        alice.internal_uuid, again.internal_uuid,
        "login is idempotent per (provider, id)"
    );
    assert_eq!(
        store.find_user("tmi", "alice").await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        store.find_user_by_email("tmi", "ALICE@tmi.local").await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(store.group_member_count(groups::ADMINISTRATORS).await.unwrap(), 0);
    store
        .add_group_member(groups::ADMINISTRATORS, alice.internal_uuid)
        .await
        .unwrap();
    store
        .add_group_member(groups::ADMINISTRATORS, alice.internal_uuid)
        .await
        .unwrap();
    let gs = store.user_groups(alice.internal_uuid).await.unwrap();
    assert_eq!(gs.len(), 1);
    assert_eq!(gs[0].group_name, "administrators");
    assert_eq!(gs[0].internal_uuid, groups::ADMINISTRATORS);
    assert_eq!(
        store.get_group(groups::ADMINISTRATORS).await.unwrap(),
        Some(gs[0].clone())
    );
    assert_eq!(store.get_group(Uuid::new_v4()).await.unwrap(), None);

    // Members: ordered by name, paginated, with a stable membership id.
    let mut aaron = user("aaron");
    aaron.name = "Aaron".into();
    let aaron = store.upsert_login_user(&aaron).await.unwrap();
    store
        .add_group_member(groups::ADMINISTRATORS, aaron.internal_uuid)
        .await
        .unwrap();
    let (page, total) = store.group_members(groups::ADMINISTRATORS, 10, 0).await.unwrap();
    assert_eq!(total, 2);
    assert_eq!(
        page.iter()
            .map(|m| m.user.provider_user_id.as_str())
            .collect::<Vec<_>>(),
        ["aaron", "alice"]
    );
    assert!(page.iter().all(|m| m.group_uuid == groups::ADMINISTRATORS));
    assert!(page.iter().all(|m| (Utc::now() - m.added_at).num_minutes() < 5));
    let (second, total) = store.group_members(groups::ADMINISTRATORS, 1, 1).await.unwrap();
    assert_eq!((second.len(), total), (1, 2));
    assert_eq!(second[0], page[1], "same id and data on every call");
    assert_ne!(page[0].id, page[1].id);
    let (none, total) = store.group_members(groups::EVERYONE, 10, 0).await.unwrap();
    assert!(none.is_empty() && total == 0);
    assert_eq!(store.get_preferences(alice.internal_uuid).await.unwrap(), None);
    store
        .insert_preferences(alice.internal_uuid, &json!({"tmi-ux": {"a": 1}}))
        .await
        .unwrap();
    assert!(matches!(
        store
            .insert_preferences(alice.internal_uuid, &json!({"tmi-ux": {"a": 9}}))
            .await,
        Err(StoreError::Conflict)
    ));
    store
        .put_preferences(alice.internal_uuid, &json!({"tmi-ux": {"a": 2}}))
        .await
        .unwrap();
    assert_eq!(
        store.get_preferences(alice.internal_uuid).await.unwrap(),
        Some(json!({"tmi-ux": {"a": 2}}))
    );
}

async fn threat_models(store: &dyn Store) {
    let mut a = tm("bob", "Alpha", "not_started");
    let a_alias = store.insert_threat_model(&a, &[entry("k", "v")]).await.unwrap();
    a.alias = a_alias;
    let mut b = tm("carol", "Beta", "approved");
    b.reviewer_email = Some("rev@tmi.local".into());
    let b_status = Utc::now().trunc_subsecs(6) - chrono::Duration::days(1);
    b.doc = json!({"name": "Beta", "description": "Éclair at 100% speed", "issue_uri": "https://e.com/issues/7",
        "security_reviewer": {"principal_type": "user", "provider": "tmi", "provider_id": "rev",
            "email": "rev@tmi.local", "display_name": "Rita Österberg"},
        "status_updated": b_status.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)});
    b.access.push(AccessRecord {
        principal_type: "group".into(),
        provider: "tmi".into(),
        provider_id: "everyone".into(),
        role: "reader".into(),
    });
    let b_alias = store.insert_threat_model(&b, &[]).await.unwrap();
    assert!(b_alias > a_alias, "aliases increase");

    let got = store.get_threat_model(a.id).await.unwrap();
    assert_eq!(got, a);
    assert!(matches!(
        store.get_threat_model(Uuid::new_v4()).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.list_metadata(a.id).await.unwrap(), vec![entry("k", "v")]);

    // Visibility: bob sees his own and the everyone-readable one; dave only the latter.
    let bob = Viewer {
        provider: "tmi".into(),
        provider_id: "bob".into(),
        groups: vec![],
    };
    let dave = Viewer {
        provider: "tmi".into(),
        provider_id: "dave".into(),
        groups: vec![],
    };
    let all = ThreatModelFilter {
        limit: 20,
        ..Default::default()
    };
    let (list, total) = store.list_threat_models(Some(&bob), &all).await.unwrap();
    assert!(
        total >= 2 && list.iter().any(|s| s.record.id == a.id) && list.iter().any(|s| s.record.id == b.id)
    );
    let (list, _) = store.list_threat_models(Some(&dave), &all).await.unwrap();
    assert!(list.iter().all(|s| s.record.id != a.id) && list.iter().any(|s| s.record.id == b.id));
    let filtered = ThreatModelFilter {
        owner: Some("BOB@tmi".into()),
        statuses: vec!["not_started".into(), "active".into()],
        ..all.clone()
    };
    let (list, total) = store.list_threat_models(Some(&bob), &filtered).await.unwrap();
    assert_eq!((list.len(), total), (1, 1));
    assert_eq!(list[0].record.id, a.id);
    let reviewer = |r: ReviewerFilter| ThreatModelFilter {
        security_reviewer: Some(r),
        ..all.clone()
    };
    let ids = |list: Vec<ThreatModelSummary>| list.into_iter().map(|s| s.record.id).collect::<Vec<_>>();
    let (list, _) = store
        .list_threat_models(None, &reviewer(ReviewerFilter::Matching("REV@".into())))
        .await
        .unwrap();
    assert_eq!(ids(list), vec![b.id]);
    let (list, _) = store
        .list_threat_models(None, &reviewer(ReviewerFilter::Matching("Rita Ö".into())))
        .await
        .unwrap();
    assert_eq!(ids(list), vec![b.id], "display name, Unicode lower-casing");
    let (list, _) = store
        .list_threat_models(None, &reviewer(ReviewerFilter::Assigned))
        .await
        .unwrap();
    assert_eq!(ids(list), vec![b.id]);
    let (list, _) = store
        .list_threat_models(None, &reviewer(ReviewerFilter::Unassigned))
        .await
        .unwrap();
    assert!(list.iter().all(|s| s.record.id != b.id) && list.iter().any(|s| s.record.id == a.id));
    for (filter, want) in [
        (
            ThreatModelFilter {
                description_contains: Some("ÉCLAIR".into()),
                ..all.clone()
            },
            vec![b.id],
        ),
        (
            ThreatModelFilter {
                description_contains: Some("100%".into()),
                ..all.clone()
            },
            vec![b.id],
        ),
        (
            ThreatModelFilter {
                description_contains: Some("1_0".into()),
                ..all.clone()
            },
            vec![],
        ),
        (
            ThreatModelFilter {
                issue_uri_contains: Some("/ISSUES/7".into()),
                ..all.clone()
            },
            vec![b.id],
        ),
        (
            ThreatModelFilter {
                name_contains: Some("ALPH".into()),
                ..all.clone()
            },
            vec![a.id],
        ),
        (
            ThreatModelFilter {
                status_updated_after: Some(b_status - chrono::Duration::seconds(1)),
                ..all.clone()
            },
            vec![b.id],
        ),
        (
            ThreatModelFilter {
                status_updated_before: Some(b_status),
                ..all.clone()
            },
            vec![],
        ),
    ] {
        let (list, total) = store.list_threat_models(None, &filter).await.unwrap();
        assert_eq!(
            (ids(list), total),
            (want.clone(), want.len() as i64),
            "{filter:?}"
        );
    }

    // Optimistic locking and soft delete.
    let mut next = got.clone();
    next.version = 2;
    next.name = "Alpha 2".into();
    next.deleted_at = Some(Utc::now().trunc_subsecs(6));
    store.update_threat_model(&next, 1, Some(&[])).await.unwrap();
    assert!(matches!(
        store.update_threat_model(&next, 1, None).await,
        Err(StoreError::VersionMismatch)
    ));
    assert!(store.list_metadata(a.id).await.unwrap().is_empty());
    let (list, _) = store.list_threat_models(Some(&bob), &all).await.unwrap();
    assert!(
        list.iter().all(|s| s.record.id != a.id),
        "deleted models are hidden"
    );
    let with_deleted = ThreatModelFilter {
        include_deleted: true,
        ..all.clone()
    };
    let (list, _) = store.list_threat_models(Some(&bob), &with_deleted).await.unwrap();
    assert!(list.iter().any(|s| s.record.id == a.id));
    let mut ghost = next.clone();
    ghost.id = Uuid::new_v4();
    assert!(matches!(
        store.update_threat_model(&ghost, 2, None).await,
        Err(StoreError::NotFound)
    ));
}

async fn children_and_metadata(store: &dyn Store) {
    let parent = tm("erin", "Parent", "not_started");
    store.insert_threat_model(&parent, &[]).await.unwrap();
    let now = Utc::now().trunc_subsecs(6);
    let mut child = ChildRecord {
        id: Uuid::new_v4(),
        threat_model_id: parent.id,
        kind: "threat".into(),
        alias: 0,
        version: 1,
        created_at: now,
        modified_at: now,
        deleted_at: None,
        doc: json!({"name": "T1"}),
    };
    child.alias = store.insert_child(&child, &[entry("a", "1")]).await.unwrap();
    assert_eq!(child.alias, 1);
    let mut second = child.clone();
    second.id = Uuid::new_v4();
    assert_eq!(store.insert_child(&second, &[]).await.unwrap(), 2);
    assert_eq!(
        store.get_child(parent.id, "threat", child.id).await.unwrap(),
        child
    );
    assert!(matches!(
        store.get_child(parent.id, "note", child.id).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store
            .list_children(parent.id, Some("threat"), false)
            .await
            .unwrap()
            .len(),
        2
    );

    let (list, _) = store
        .list_threat_models(
            None,
            &ThreatModelFilter {
                name_contains: Some("parent".into()),
                limit: 5,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(list[0].counts.threats, 2);

    // Locked read-modify-write: concurrent writers queue, none is lost; `None` writes nothing.
    let bumps = (0..8).map(|_| async {
        store
            .update_child_locked(parent.id, "threat", child.id, &mut |mut next| {
                let n = next.doc.get("n").and_then(serde_json::Value::as_i64).unwrap_or(0);
                next.doc["n"] = serde_json::json!(n + 1);
                Some(next)
            })
            .await
            .unwrap()
    });
    futures::future::join_all(bumps).await;
    let unchanged = store
        .update_child_locked(parent.id, "threat", child.id, &mut |_| None)
        .await
        .unwrap();
    assert!(unchanged.is_none());
    assert_eq!(
        store.get_child(parent.id, "threat", child.id).await.unwrap().doc["n"],
        8
    );
    assert!(matches!(
        store
            .update_child_locked(parent.id, "threat", uuid::Uuid::new_v4(), &mut Some)
            .await,
        Err(StoreError::NotFound)
    ));

    let mut upd = store.get_child(parent.id, "threat", child.id).await.unwrap();
    upd.version = 2;
    upd.deleted_at = Some(now);
    store.update_child(&upd, 1, None).await.unwrap();
    assert!(matches!(
        store.update_child(&upd, 1, None).await,
        Err(StoreError::VersionMismatch)
    ));
    assert_eq!(
        store
            .list_children(parent.id, Some("threat"), false)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(store.list_children(parent.id, None, true).await.unwrap().len(), 2);

    // Metadata semantics.
    assert!(matches!(
        store
            .insert_metadata("threat", child.id, &[entry("b", "2"), entry("a", "x")])
            .await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        store.list_metadata(child.id).await.unwrap(),
        vec![entry("a", "1")],
        "nothing partially written"
    );
    store
        .upsert_metadata("threat", child.id, &[entry("a", "3"), entry("c", "4")])
        .await
        .unwrap();
    assert_eq!(
        store.list_metadata(child.id).await.unwrap(),
        vec![entry("a", "3"), entry("c", "4")]
    );
    store.update_metadata_value(child.id, "c", "5").await.unwrap();
    assert!(matches!(
        store.update_metadata_value(child.id, "zz", "5").await,
        Err(StoreError::NotFound)
    ));
    store.delete_metadata(child.id, "a").await.unwrap();
    assert!(matches!(
        store.delete_metadata(child.id, "a").await,
        Err(StoreError::NotFound)
    ));
    store
        .replace_metadata("threat", child.id, &[entry("x", "y")])
        .await
        .unwrap();
    let under = store.metadata_under(parent.id).await.unwrap();
    assert_eq!(under.get(&child.id), Some(&vec![entry("x", "y")]));
}

/// A threat-model row as written before the search columns existed (same SQL on both dialects).
pub const LEGACY_THREAT_MODEL: &str = "INSERT INTO threat_models (id, alias, name, owner_provider, \
    owner_provider_id, owner_email, reviewer_email, status, version, created_at, modified_at, deleted_at, doc) \
    VALUES ($1, 1, 'Legacy', 'tmi', 'lee', 'Lee@tmi.local', 'rita@tmi.local', 'in_progress', 1, $2, $2, NULL, $3)";

/// The document of `LEGACY_THREAT_MODEL`, with its `status_updated`.
pub fn legacy_doc() -> (serde_json::Value, chrono::DateTime<Utc>) {
    let at = Utc::now().trunc_subsecs(6) - chrono::Duration::hours(1);
    let doc = json!({"name": "Legacy", "description": "Old Data", "issue_uri": "https://e.com/issues/1",
        "owner": {"principal_type": "user", "provider": "tmi", "provider_id": "lee", "display_name": "Lee Li"},
        "security_reviewer": {"principal_type": "user", "provider": "tmi", "provider_id": "rita",
            "email": "rita@tmi.local", "display_name": "Rita R"},
        "status_updated": at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)});
    (doc, at)
}

/// After the search-column migration, the legacy row answers every list filter.
pub async fn legacy_row_is_searchable(store: &dyn Store, status_updated: chrono::DateTime<Utc>) {
    let all = ThreatModelFilter {
        limit: 20,
        ..Default::default()
    };
    for filter in [
        ThreatModelFilter {
            owner: Some("lee li".into()),
            ..all.clone()
        },
        ThreatModelFilter {
            owner: Some("LEE@".into()),
            ..all.clone()
        },
        ThreatModelFilter {
            name_contains: Some("legacy".into()),
            ..all.clone()
        },
        ThreatModelFilter {
            description_contains: Some("old data".into()),
            ..all.clone()
        },
        ThreatModelFilter {
            issue_uri_contains: Some("issues/1".into()),
            ..all.clone()
        },
        ThreatModelFilter {
            security_reviewer: Some(ReviewerFilter::Matching("rita r".into())),
            ..all.clone()
        },
        ThreatModelFilter {
            security_reviewer: Some(ReviewerFilter::Assigned),
            ..all.clone()
        },
        ThreatModelFilter {
            status_updated_after: Some(status_updated - chrono::Duration::seconds(1)),
            status_updated_before: Some(status_updated + chrono::Duration::seconds(1)),
            ..all.clone()
        },
    ] {
        let (_, total) = store.list_threat_models(None, &filter).await.unwrap();
        assert_eq!(total, 1, "{filter:?}");
    }
}

/// `write_children` writes every child or none.
async fn bulk_child_writes(store: &dyn Store) {
    let parent = tm("fay", "Bulk", "not_started");
    store.insert_threat_model(&parent, &[]).await.unwrap();
    let now = Utc::now().trunc_subsecs(6);
    let doc = |n: &str| ChildRecord {
        id: Uuid::new_v4(),
        threat_model_id: parent.id,
        kind: "asset".into(),
        alias: 0,
        version: 1,
        created_at: now,
        modified_at: now,
        deleted_at: None,
        doc: json!({"name": n}),
    };
    let (a, b) = (doc("a"), doc("b"));
    let aliases = store
        .write_children(&[
            ChildWrite::Insert {
                child: a.clone(),
                metadata: vec![entry("k", "1")],
            },
            ChildWrite::Insert {
                child: b.clone(),
                metadata: vec![],
            },
        ])
        .await
        .unwrap();
    assert_eq!(aliases, vec![1, 2]);
    assert_eq!(store.list_metadata(a.id).await.unwrap(), vec![entry("k", "1")]);

    let mut a2 = store.get_child(parent.id, "asset", a.id).await.unwrap();
    a2.version = 2;
    a2.doc = json!({"name": "a2"});
    let c = doc("c");
    let aliases = store
        .write_children(&[
            ChildWrite::Update {
                child: a2.clone(),
                expected_version: 1,
                metadata: Some(vec![]),
            },
            ChildWrite::Insert {
                child: c.clone(),
                metadata: vec![],
            },
        ])
        .await
        .unwrap();
    assert_eq!(aliases, vec![1, 3]);
    assert_eq!(
        store.get_child(parent.id, "asset", a.id).await.unwrap().doc["name"],
        "a2"
    );
    assert!(store.list_metadata(a.id).await.unwrap().is_empty());

    // A stale version, a duplicate id or a missing child anywhere in the batch: nothing is written.
    let d = doc("d");
    let mut b2 = store.get_child(parent.id, "asset", b.id).await.unwrap();
    b2.version = 2;
    b2.doc = json!({"name": "b2"});
    let mut ghost = doc("ghost");
    ghost.version = 2;
    for (bad, want) in [
        (
            ChildWrite::Update {
                child: a2.clone(),
                expected_version: 1,
                metadata: None,
            },
            "version",
        ),
        (
            ChildWrite::Insert {
                child: c.clone(),
                metadata: vec![],
            },
            "conflict",
        ),
        (
            ChildWrite::Update {
                child: ghost.clone(),
                expected_version: 1,
                metadata: None,
            },
            "missing",
        ),
    ] {
        let result = store
            .write_children(&[
                ChildWrite::Insert {
                    child: d.clone(),
                    metadata: vec![entry("x", "y")],
                },
                ChildWrite::Update {
                    child: b2.clone(),
                    expected_version: 1,
                    metadata: None,
                },
                bad,
            ])
            .await;
        match (want, result) {
            ("version", Err(StoreError::VersionMismatch))
            | ("conflict", Err(StoreError::Conflict))
            | ("missing", Err(StoreError::NotFound)) => {}
            (want, other) => panic!("{want}: {other:?}"),
        }
        assert!(matches!(
            store.get_child(parent.id, "asset", d.id).await,
            Err(StoreError::NotFound)
        ));
        assert!(store.list_metadata(d.id).await.unwrap().is_empty());
        assert_eq!(
            store.get_child(parent.id, "asset", b.id).await.unwrap().doc["name"],
            "b"
        );
    }
    // Aliases allocated by a rolled-back batch are not used up.
    assert_eq!(
        store
            .write_children(&[ChildWrite::Insert {
                child: d.clone(),
                metadata: vec![]
            }])
            .await
            .unwrap(),
        vec![4]
    );
    assert_eq!(
        store
            .list_children(parent.id, Some("asset"), false)
            .await
            .unwrap()
            .len(),
        4
    );
}

/// A user and a membership as written before memberships had an id (same SQL on both dialects).
pub const LEGACY_MEMBER: [&str; 2] = [
    "INSERT INTO users (internal_uuid, provider, provider_user_id, email, name, email_verified, created_at) \
     VALUES ($1, 'tmi', 'old-timer', 'old@tmi.local', 'Old Timer', FALSE, $2)",
    "INSERT INTO group_members (group_uuid, user_uuid) VALUES ($1, $2)",
];

/// After the membership migration, the legacy member is listed with an id.
pub async fn legacy_member_is_listed(store: &dyn Store) {
    let (members, total) = store
        .group_members(groups::SECURITY_REVIEWERS, 10, 0)
        .await
        .unwrap();
    assert_eq!(total, 1);
    assert_eq!(members[0].user.provider_user_id, "old-timer");
    assert!(!members[0].id.is_nil());
    let (again, _) = store
        .group_members(groups::SECURITY_REVIEWERS, 10, 0)
        .await
        .unwrap();
    assert_eq!(again, members);
}

fn unit(
    kind: &str,
    team: Option<Uuid>,
    name: &str,
    creator: Uuid,
    at: chrono::DateTime<Utc>,
) -> teams::OrgUnitRecord {
    teams::OrgUnitRecord {
        id: Uuid::new_v4(),
        kind: kind.into(),
        team_id: team,
        name: name.into(),
        status: "active".into(),
        created_by: creator,
        version: 1,
        created_at: at,
        modified_at: at,
        doc: json!({"name": name, "status": "active"}),
    }
}

/// Teams, projects, their members, relationships, metadata and notes (migration 0013).
async fn teams_and_projects(store: &dyn Store) {
    use teams::{OrgNoteRecord, OrgUnitFilter, PROJECT, RelationRecord, TEAM};
    let lead = store
        .upsert_login_user(&user("org-lead"))
        .await
        .unwrap()
        .internal_uuid;
    let dev = store
        .upsert_login_user(&user("org-dev"))
        .await
        .unwrap()
        .internal_uuid;
    let t0 = Utc::now().trunc_subsecs(6);
    let platform = unit(TEAM, None, "Platform Ünits", lead, t0);
    let infra = unit(TEAM, None, "Infra", dev, t0 + chrono::Duration::seconds(1));
    store.insert_org_unit(&infra, &[dev], &[], &[]).await.unwrap();
    let parent = RelationRecord {
        from_id: platform.id,
        to_id: infra.id,
        relationship: "parent".into(),
    };
    store
        .insert_org_unit(
            &platform,
            &[lead, dev],
            std::slice::from_ref(&parent),
            &[entry("tier", "1")],
        )
        .await
        .unwrap();
    assert!(matches!(
        store.insert_org_unit(&platform, &[], &[], &[]).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(store.get_org_unit(TEAM, platform.id).await.unwrap(), platform);
    assert!(matches!(
        store.get_org_unit(PROJECT, platform.id).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store.list_metadata(platform.id).await.unwrap(),
        vec![entry("tier", "1")]
    );
    assert!(store.is_team_member(platform.id, dev).await.unwrap());
    assert!(!store.is_team_member(infra.id, lead).await.unwrap());
    assert_eq!(store.relations_of(infra.id).await.unwrap(), vec![parent.clone()]);

    // Lists: what a member sees, newest first, with counts and filters.
    let filter = |visible_to: Option<Uuid>| OrgUnitFilter {
        kind: TEAM,
        visible_to,
        ids: Some(vec![platform.id, infra.id]),
        limit: 10,
        ..Default::default()
    };
    let (seen, total) = store.list_org_units(&filter(Some(dev))).await.unwrap();
    assert_eq!(total, 2);
    assert_eq!(
        seen.iter().map(|s| s.record.id).collect::<Vec<_>>(),
        vec![infra.id, platform.id]
    );
    assert_eq!(
        (seen[1].member_count, seen[1].project_count, seen[1].note_count),
        (2, 0, 0)
    );
    let (seen, total) = store.list_org_units(&filter(Some(lead))).await.unwrap();
    assert_eq!((total, seen[0].record.id), (1, platform.id));
    let by_name = OrgUnitFilter {
        name_contains: Some("ünits".into()),
        ..filter(None)
    };
    assert_eq!(
        store.list_org_units(&by_name).await.unwrap().1,
        1,
        "case-insensitive, Unicode"
    );
    let by_member = OrgUnitFilter {
        member: Some(lead),
        ..filter(None)
    };
    assert_eq!(store.list_org_units(&by_member).await.unwrap().1, 1);
    let by_status = OrgUnitFilter {
        statuses: vec!["archived".into()],
        ..filter(None)
    };
    assert_eq!(store.list_org_units(&by_status).await.unwrap().1, 0);
    let none = OrgUnitFilter {
        ids: Some(Vec::new()),
        ..filter(None)
    };
    assert_eq!(store.list_org_units(&none).await.unwrap().1, 0);

    // Optimistic locking; members, relationships and metadata replaced.
    let mut next = platform.clone();
    next.name = "Platform".into();
    next.version = 2;
    store
        .update_org_unit(&next, 1, &[lead], &[], Some(&[]))
        .await
        .unwrap();
    assert!(matches!(
        store.update_org_unit(&next, 1, &[lead], &[], None).await,
        Err(StoreError::VersionMismatch)
    ));
    let ghost = unit(TEAM, None, "Ghost", lead, t0);
    assert!(matches!(
        store.update_org_unit(&ghost, 1, &[], &[], None).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store.get_org_unit(TEAM, platform.id).await.unwrap().name,
        "Platform"
    );
    assert!(!store.is_team_member(platform.id, dev).await.unwrap());
    assert!(store.relations_of(infra.id).await.unwrap().is_empty());
    assert!(store.list_metadata(platform.id).await.unwrap().is_empty());

    // A project of the team: the team cannot go while it has one; a threat model naming the project
    // keeps the project.
    let gateway = unit(PROJECT, Some(platform.id), "Gateway", lead, t0);
    store
        .insert_org_unit(&gateway, &[], &[], &[entry("k", "v")])
        .await
        .unwrap();
    let projects = OrgUnitFilter {
        kind: PROJECT,
        visible_to: Some(lead),
        team_id: Some(platform.id),
        limit: 10,
        ..Default::default()
    };
    let (seen, total) = store.list_org_units(&projects).await.unwrap();
    assert_eq!((total, seen[0].team_name.as_deref()), (1, Some("Platform")));
    let outsider = OrgUnitFilter {
        visible_to: Some(dev),
        ..projects.clone()
    };
    assert_eq!(
        store.list_org_units(&outsider).await.unwrap().1,
        0,
        "through the team"
    );
    assert!(matches!(
        store.delete_org_unit(TEAM, platform.id).await,
        Err(StoreError::Conflict)
    ));
    let mut model = tm("org-lead", "Uses the gateway", "active");
    model.doc["project_id"] = json!(gateway.id.to_string());
    store.insert_threat_model(&model, &[]).await.unwrap();
    assert!(matches!(
        store.delete_org_unit(PROJECT, gateway.id).await,
        Err(StoreError::Conflict)
    ));
    let mut moved = model.clone();
    moved.doc["project_id"] = serde_json::Value::Null;
    moved.version = 2;
    store.update_threat_model(&moved, 1, None).await.unwrap();

    // Notes: private ones only when asked for; a note belongs to its parent.
    let note = |sharable: bool, name: &str, at| OrgNoteRecord {
        id: Uuid::new_v4(),
        parent_id: gateway.id,
        sharable,
        created_at: at,
        modified_at: at,
        doc: json!({"name": name, "content": "c"}),
    };
    let open = note(true, "open", t0);
    let private = note(false, "private", t0 + chrono::Duration::seconds(1));
    store.insert_org_note(&open).await.unwrap();
    store.insert_org_note(&private).await.unwrap();
    let (shown, total) = store.list_org_notes(gateway.id, false, 10, 0).await.unwrap();
    assert_eq!((total, shown), (1, vec![open.clone()]));
    let (shown, total) = store.list_org_notes(gateway.id, true, 1, 1).await.unwrap();
    assert_eq!((total, shown), (2, vec![private.clone()]));
    let mut edited = open.clone();
    edited.doc["name"] = json!("edited");
    edited.sharable = false;
    store.update_org_note(&edited).await.unwrap();
    assert_eq!(store.get_org_note(gateway.id, open.id).await.unwrap(), edited);
    assert!(matches!(
        store.get_org_note(platform.id, open.id).await,
        Err(StoreError::NotFound)
    ));
    let stray = OrgNoteRecord {
        parent_id: platform.id,
        ..edited.clone()
    };
    assert!(matches!(
        store.update_org_note(&stray).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete_org_note(platform.id, open.id).await,
        Err(StoreError::NotFound)
    ));
    store.delete_org_note(gateway.id, open.id).await.unwrap();
    assert_eq!(store.list_org_notes(gateway.id, true, 10, 0).await.unwrap().1, 1);

    // Deleting takes notes and metadata along; then the team may go.
    store.delete_org_unit(PROJECT, gateway.id).await.unwrap();
    assert!(matches!(
        store.get_org_note(gateway.id, private.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(store.list_metadata(gateway.id).await.unwrap().is_empty());
    assert!(matches!(
        store.delete_org_unit(PROJECT, gateway.id).await,
        Err(StoreError::NotFound)
    ));
    store.delete_org_unit(TEAM, platform.id).await.unwrap();
    assert!(!store.is_team_member(platform.id, lead).await.unwrap());
}
