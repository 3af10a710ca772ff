//! The authorization matrix: owner, writer, reader, outsider and unauthenticated callers against
//! every operation on a threat model and its children (tmi-compat.md §3.2).

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Owner,
    Writer,
    Reader,
    Outsider,
    Anonymous,
}

/// Expected status for a caller given the operation's minimum role.
fn expected(who: Who, min: &str, ok: u16) -> u16 {
    match (who, min) {
        (Who::Anonymous, _) => 401,
        (Who::Outsider, _) => 403,
        (Who::Reader, "reader") => ok,
        (Who::Reader, _) => 403,
        (Who::Writer, "owner") => 403,
        (Who::Writer, _) => ok,
        (Who::Owner, _) => ok,
    }
}

async fn matrix(b: Backend) {
    let app = TestApp::spawn(b).await;
    let owner = app.login("olivia").await;
    let writer = app.login("walter").await;
    let reader = app.login("rachel").await;
    let outsider = app.login("oscar").await;
    let tm = app
        .post(
            "/threat_models",
            Some(&owner.access),
            json!({"name": "Matrix", "authorization": [
                {"principal_type": "user", "provider": "tmi", "provider_id": "walter", "role": "writer"},
                {"principal_type": "user", "provider": "tmi", "provider_id": "rachel", "role": "reader"}
            ]}),
        )
        .await
        .expect(201)
        .clone();
    let base = format!("/threat_models/{}", tm["id"].as_str().unwrap());
    let kinds: Vec<(&str, Value, &str)> = vec![
        ("threats", json!({"name": "T", "threat_type": []}), "writer"),
        (
            "documents",
            json!({"name": "D", "uri": "https://e.com/d"}),
            "writer",
        ),
        ("notes", json!({"name": "N", "content": "c"}), "writer"),
        ("assets", json!({"name": "A", "type": "data"}), "writer"),
        ("repositories", json!({"uri": "https://e.com/r"}), "writer"),
        ("diagrams", json!({"name": "G", "type": "DFD-1.0.0"}), "owner"),
    ];
    for who in [
        Who::Owner,
        Who::Writer,
        Who::Reader,
        Who::Outsider,
        Who::Anonymous,
    ] {
        let token = match who {
            Who::Owner => Some(owner.access.as_str()),
            Who::Writer => Some(writer.access.as_str()),
            Who::Reader => Some(reader.access.as_str()),
            Who::Outsider => Some(outsider.access.as_str()),
            Who::Anonymous => None,
        };
        let check = |label: String, got: u16, want: u16| assert_eq!(got, want, "{who:?} {label}");
        check(
            "GET tm".into(),
            app.get(&base, token).await.status.as_u16(),
            expected(who, "reader", 200),
        );
        check(
            "GET tm metadata".into(),
            app.get(&format!("{base}/metadata"), token).await.status.as_u16(),
            expected(who, "reader", 200),
        );
        let put = app
            .put(&base, token, json!({"name": "Matrix", "description": "d"}))
            .await;
        check("PUT tm".into(), put.status.as_u16(), expected(who, "writer", 200));
        let patch = app
            .patch(
                &base,
                token,
                json!([{"op": "replace", "path": "/description", "value": "x"}]),
            )
            .await;
        check(
            "PATCH tm".into(),
            patch.status.as_u16(),
            expected(who, "writer", 200),
        );
        let acl = app.patch(&base, token, json!([{"op": "add", "path": "/authorization/-", "value": {"principal_type": "user", "provider": "tmi", "provider_id": "someone-else", "role": "reader"}}])).await;
        check(
            "PATCH tm authorization".into(),
            acl.status.as_u16(),
            expected(who, "owner", 200),
        );
        let meta = app
            .post(
                &format!("{base}/metadata"),
                token,
                json!({"key": format!("k-{who:?}"), "value": "v"}),
            )
            .await;
        check(
            "POST tm metadata".into(),
            meta.status.as_u16(),
            expected(who, "writer", 201),
        );
        for (plural, body, delete_role) in &kinds {
            // Each caller works on a child the owner created, so reads and writes are independent.
            let child = app
                .post(&format!("{base}/{plural}"), Some(&owner.access), body.clone())
                .await
                .expect(201)
                .clone();
            let item = format!("{base}/{plural}/{}", child["id"].as_str().unwrap());
            check(
                format!("GET {plural}"),
                app.get(&format!("{base}/{plural}"), token).await.status.as_u16(),
                expected(who, "reader", 200),
            );
            check(
                format!("GET {plural}/id"),
                app.get(&item, token).await.status.as_u16(),
                expected(who, "reader", 200),
            );
            check(
                format!("POST {plural}"),
                app.post(&format!("{base}/{plural}"), token, body.clone())
                    .await
                    .status
                    .as_u16(),
                expected(who, "writer", 201),
            );
            let replace = if *plural == "diagrams" {
                json!({"name": "G2", "type": "DFD-1.0.0", "cells": []})
            } else {
                body.clone()
            };
            check(
                format!("PUT {plural}/id"),
                app.put(&item, token, replace).await.status.as_u16(),
                expected(who, "writer", 200),
            );
            let p = app
                .patch(
                    &item,
                    token,
                    json!([{"op": "replace", "path": "/description", "value": "x"}]),
                )
                .await;
            check(
                format!("PATCH {plural}/id"),
                p.status.as_u16(),
                expected(who, "writer", 200),
            );
            check(
                format!("GET {plural}/id/metadata"),
                app.get(&format!("{item}/metadata"), token).await.status.as_u16(),
                expected(who, "reader", 200),
            );
            let m = app
                .post(
                    &format!("{item}/metadata"),
                    token,
                    json!({"key": "k", "value": "v"}),
                )
                .await;
            check(
                format!("POST {plural}/id/metadata"),
                m.status.as_u16(),
                expected(who, "writer", 201),
            );
            check(
                format!("DELETE {plural}/id"),
                app.delete(&item, token).await.status.as_u16(),
                expected(who, delete_role, 204),
            );
            let restore = app
                .send(Method::POST, &format!("{item}/restore"), token, None, &[])
                .await;
            // Restoring needs the owner role (the owner restores what it just deleted).
            check(
                format!("POST {plural}/id/restore"),
                restore.status.as_u16(),
                expected(who, "owner", 200),
            );
        }
    }
    // Only the owner may delete the threat model; everyone else is refused first.
    for (token, want) in [
        (None, 401),
        (Some(outsider.access.as_str()), 403),
        (Some(reader.access.as_str()), 403),
        (Some(writer.access.as_str()), 403),
    ] {
        assert_eq!(app.delete(&base, token).await.status.as_u16(), want);
    }
    app.delete(&base, Some(&owner.access)).await.expect(204);
}

async fn group_and_everyone_entries(b: Backend) {
    let app = TestApp::spawn(b).await;
    let owner = app.login("olivia").await;
    let other = app.login("zoe").await;
    let tm = app
        .post(
            "/threat_models",
            Some(&owner.access),
            json!({"name": "Open", "authorization": [
                {"principal_type": "group", "provider": "tmi", "provider_id": "everyone", "role": "reader"}
            ]}),
        )
        .await
        .expect(201)
        .clone();
    let base = format!("/threat_models/{}", tm["id"].as_str().unwrap());
    app.get(&base, Some(&other.access)).await.expect(200);
    assert_eq!(
        app.get("/threat_models", Some(&other.access)).await.expect(200)["total"],
        1
    );
    app.put(&base, Some(&other.access), json!({"name": "x"}))
        .await
        .expect_error(403, "forbidden");
    // Security reviewers own every new model through the default group entry.
    let rev = app.login("rita").await;
    app.add_to_group("rita", tmi_server::store::groups::SECURITY_REVIEWERS)
        .await;
    let stale = app.get(&base, Some(&rev.access)).await;
    assert_eq!(stale.status.as_u16(), 200, "everyone can read");
    let rev = app.login("rita").await;
    app.patch(
        &base,
        Some(&rev.access),
        json!([{"op": "replace", "path": "/description", "value": "reviewed"}]),
    )
    .await
    .expect(200);
}

both_backends!(matrix, group_and_everyone_entries);
