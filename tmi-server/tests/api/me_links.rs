//! `GET /me/content_tokens` and `GET /me/identities`: the web client's document dialog and
//! preferences page call them (tmi-compat.md Part B §3.2). Nothing can be linked yet, so both
//! lists are empty; the responses follow `ContentTokenList` and `MyIdentitiesResponse` (the
//! harness validates every body against the contract).

use serde_json::json;

use crate::helpers::{Backend, TestApp};

async fn content_tokens_and_identities(b: Backend) {
    let app = TestApp::spawn(b).await;
    let alice = app.login("alice").await;
    assert_eq!(
        app.get("/me/content_tokens", Some(&alice.access))
            .await
            .expect(200),
        &json!({"content_tokens": []})
    );
    let me = app.get("/me", Some(&alice.access)).await.expect(200).clone();
    assert_eq!(
        app.get("/me/identities", Some(&alice.access)).await.expect(200),
        &json!({
            "primary": {"provider": "tmi", "email": me["email"], "name": me["display_name"]},
            "linked": [],
        })
    );
    for path in ["/me/content_tokens", "/me/identities"] {
        app.get(path, None).await.expect_error(401, "unauthorized");
    }
}

both_backends!(content_tokens_and_identities);
