//! Property test of every JSON column (`threat_models.doc`, `children.doc`,
//! `user_preferences.doc`): arbitrary JSON documents are written through each `Store` call that
//! writes one and read back through each call that reads one, and must come back as the same text
//! serde_json wrote (so `1e16` stays a float, `-0.0` keeps its sign, `u64::MAX` stays an integer).
//! IO: drives the store under test; `sqlite.rs` and `postgres.rs` call `run`.

use std::future::Future;

use chrono::{SubsecRound, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use serde_json::{Map, Number, Value};
use uuid::Uuid;

use super::*;

/// Numbers at the edges of what doubles and 64-bit integers hold.
fn edge_numbers() -> Vec<Value> {
    let floats = [
        f64::MAX,
        f64::MIN,
        f64::MIN_POSITIVE,
        -f64::MIN_POSITIVE,
        5e-324,
        -5e-324,
        -0.0,
        0.0,
        1e16,
        -1e16,
        9_007_199_254_740_993.0,
        1e300,
        0.1,
        1.0 / 3.0,
    ];
    let mut out: Vec<Value> = floats
        .iter()
        .filter_map(|f| Number::from_f64(*f).map(Value::Number))
        .collect();
    out.extend([
        Value::from(i64::MIN),
        Value::from(i64::MAX),
        Value::from(u64::MAX),
        Value::from(0_u64),
        Value::from(-1_i64),
    ]);
    out
}

/// Any finite double: normal, subnormal, zero of either sign.
fn finite_f64() -> impl Strategy<Value = f64> {
    use proptest::num::f64::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO
}

/// Strings with escapes, control characters, non-BMP characters and the JSON-sensitive ones.
fn json_string() -> impl Strategy<Value = String> {
    let special = prop::sample::select(vec![
        "\"",
        "\\",
        "/",
        "\u{0}",
        "\u{1f}",
        "\n",
        "\t",
        "\u{7f}",
        "\u{2028}",
        "\u{2029}",
        "\u{feff}",
        "é",
        "日本",
        "😀",
        "\u{10ffff}",
        "</script>",
        "%",
        "'",
    ]);
    prop_oneof![
        any::<String>(),
        prop::collection::vec(special, 0..6).prop_map(|parts| parts.concat()),
    ]
}

/// Arbitrary JSON: nested objects and arrays of the leaves above.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        finite_f64().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(edge_numbers()),
        json_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(json_string(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// The text serde_json writes for a value: the strict notion of "the same JSON" (serde_json's
/// maps are sorted, so key order does not matter).
fn text(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn same(what: &str, read: &Value, written: &Value) -> Result<(), TestCaseError> {
    prop_assert_eq!(text(read), text(written), "{} read back differently", what);
    Ok(())
}

fn threat_model(doc: Value) -> ThreatModelRecord {
    let now = Utc::now().trunc_subsecs(6);
    ThreatModelRecord {
        id: Uuid::new_v4(),
        alias: 0,
        name: "json".into(),
        owner_provider: "tmi".into(),
        owner_provider_id: "prop".into(),
        owner_email: "prop@tmi.local".into(),
        reviewer_email: None,
        status: "not_started".into(),
        version: 1,
        created_at: now,
        modified_at: now,
        deleted_at: None,
        doc,
        access: Vec::new(),
    }
}

fn child(threat_model_id: Uuid, doc: Value) -> ChildRecord {
    let now = Utc::now().trunc_subsecs(6);
    ChildRecord {
        id: Uuid::new_v4(),
        threat_model_id,
        kind: "diagram".into(),
        alias: 0,
        version: 1,
        created_at: now,
        modified_at: now,
        deleted_at: None,
        doc,
    }
}

/// One case: `a` and `b` written and rewritten through every JSON-writing call.
async fn round_trip(store: &dyn Store, user: Uuid, a: Value, b: Value) -> Result<(), TestCaseError> {
    let err = |e: StoreError| TestCaseError::fail(format!("store error: {e:?}"));

    // threat_models.doc
    let mut tm = threat_model(a.clone());
    store.insert_threat_model(&tm, &[]).await.map_err(err)?;
    same(
        "inserted threat model",
        &store.get_threat_model(tm.id).await.map_err(err)?.doc,
        &a,
    )?;
    tm.doc = b.clone();
    tm.version = 2;
    store.update_threat_model(&tm, 1, None).await.map_err(err)?;
    same(
        "updated threat model",
        &store.get_threat_model(tm.id).await.map_err(err)?.doc,
        &b,
    )?;

    // children.doc, through every write path.
    let mut c = child(tm.id, a.clone());
    store.insert_child(&c, &[]).await.map_err(err)?;
    same(
        "inserted child",
        &store.get_child(tm.id, "diagram", c.id).await.map_err(err)?.doc,
        &a,
    )?;
    c.doc = b.clone();
    c.version = 2;
    store.update_child(&c, 1, None).await.map_err(err)?;
    let listed = store
        .list_children(tm.id, Some("diagram"), true)
        .await
        .map_err(err)?;
    prop_assert_eq!(listed.len(), 1);
    same("updated child (listed)", &listed[0].doc, &b)?;
    let a2 = a.clone();
    let written = store
        .update_child_locked(tm.id, "diagram", c.id, &mut |mut row| {
            row.doc = a2.clone();
            row.version += 1;
            Some(row)
        })
        .await
        .map_err(err)?;
    prop_assert!(written.is_some());
    same(
        "locked child update",
        &store.get_child(tm.id, "diagram", c.id).await.map_err(err)?.doc,
        &a,
    )?;
    let bulk = child(tm.id, b.clone());
    store
        .write_children(&[ChildWrite::Insert {
            child: bulk.clone(),
            metadata: Vec::new(),
        }])
        .await
        .map_err(err)?;
    same(
        "bulk-written child",
        &store.get_child(tm.id, "diagram", bulk.id).await.map_err(err)?.doc,
        &b,
    )?;

    // user_preferences.doc
    store.put_preferences(user, &a).await.map_err(err)?;
    same(
        "preferences",
        &store
            .get_preferences(user)
            .await
            .map_err(err)?
            .unwrap_or_default(),
        &a,
    )?;
    store.put_preferences(user, &b).await.map_err(err)?;
    same(
        "replaced preferences",
        &store
            .get_preferences(user)
            .await
            .map_err(err)?
            .unwrap_or_default(),
        &b,
    )?;
    Ok(())
}

/// Runs the property against a store built by `setup` on `rt`: a fixed seed (the same cases on
/// every run) and a bounded number of cases (`PROPTEST_CASES` overrides the 48).
pub fn run<S, F>(rt: &tokio::runtime::Runtime, setup: F)
where
    S: Store + 'static,
    F: Future<Output = S>,
{
    let store = rt.block_on(setup);
    let user = rt.block_on(async {
        let u = UserRecord {
            internal_uuid: Uuid::new_v4(),
            provider: "tmi".into(),
            provider_user_id: "prop".into(),
            email: "prop@tmi.local".into(),
            name: "prop".into(),
            email_verified: false,
        };
        store.upsert_login_user(&u).await.map(|u| u.internal_uuid)
    });
    let user = user.unwrap_or_else(|e| panic!("create the test user: {e:?}"));
    // A fresh user's first preferences go through `insert_preferences`.
    rt.block_on(store.insert_preferences(user, &serde_json::json!({"first": -0.0})))
        .unwrap_or_else(|e| panic!("insert preferences: {e:?}"));
    let first = rt.block_on(store.get_preferences(user)).ok().flatten();
    assert_eq!(first.map(|v| text(&v)), Some(r#"{"first":-0.0}"#.to_owned()));

    let config = Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(48),
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let result = runner.run(&(json_value(), json_value()), |(a, b)| {
        rt.block_on(round_trip(&store, user, a, b))
    });
    if let Err(e) = result {
        panic!("JSON documents do not round-trip: {e}");
    }
}
