//! `GET /me/groups` and `GET /me/groups/{group_id}/members`, as the web client's security-reviewer
//! picker uses them (tmi-compat.md Part B §2.6, §3.2).

use serde_json::json;
use tmi_server::store::groups;

use crate::helpers::{Backend, TestApp};

async fn my_groups_and_members(b: Backend) {
    let app = TestApp::spawn(b).await;
    let alice = app.login("alice").await;
    let rita = app.login("rita").await;
    let sam = app.login("sam").await;
    assert_eq!(
        app.get("/me/groups", Some(&alice.access)).await.expect(200),
        &json!({"groups": [], "total": 0})
    );
    app.get("/me/groups", None)
        .await
        .expect_error(401, "unauthorized");

    // Memberships are read from the database: no new token needed.
    app.add_to_group("rita", groups::SECURITY_REVIEWERS).await;
    app.add_to_group("sam", groups::SECURITY_REVIEWERS).await;
    app.add_to_group("sam", groups::ADMINISTRATORS).await;
    let mine = app.get("/me/groups", Some(&rita.access)).await;
    assert_eq!(
        mine.expect(200),
        &json!({"groups": [{"internal_uuid": groups::SECURITY_REVIEWERS, "group_name": "security-reviewers",
            "name": "Security Reviewers"}], "total": 1})
    );
    assert_eq!(
        app.get("/me/groups", Some(&sam.access)).await.expect(200)["total"],
        2
    );

    // The client takes the group's id from /me (after a new login) and lists its members.
    let rita = app.login("rita").await;
    let me = app.get("/me", Some(&rita.access)).await;
    let reviewers = me.expect(200)["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group_name"] == "security-reviewers")
        .map(|g| g["internal_uuid"].as_str().unwrap().to_owned())
        .expect("rita is a reviewer");
    let members_path = format!("/me/groups/{reviewers}/members");
    let list = app.get(&members_path, Some(&rita.access)).await;
    let list = list.expect(200);
    assert_eq!(
        (
            list["total"].clone(),
            list["limit"].clone(),
            list["offset"].clone()
        ),
        (json!(2), json!(50), json!(0))
    );
    let members = list["members"].as_array().unwrap();
    assert_eq!(
        members
            .iter()
            .map(|m| m["user_provider_user_id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["rita", "sam"],
        "ordered by name"
    );
    let m = &members[0];
    assert_eq!(m["group_internal_uuid"], reviewers);
    assert_eq!(m["user_email"], "rita@tmi.local");
    assert_eq!(m["user_provider"], "tmi");
    assert_eq!(m["subject_type"], "user");
    assert!(m["user_name"].as_str().unwrap().starts_with("Rita"));
    assert!(
        m.get("added_by_email").is_none() && m.get("notes").is_none(),
        "audit fields are redacted"
    );
    let again = app.get(&members_path, Some(&sam.access)).await;
    assert_eq!(
        again.expect(200)["members"][0]["id"],
        m["id"],
        "stable membership ids"
    );
    let page = app
        .get(&format!("{members_path}?limit=1&offset=1"), Some(&rita.access))
        .await;
    let page = page.expect(200);
    assert_eq!(page["members"].as_array().unwrap().len(), 1);
    assert_eq!(page["members"][0]["user_provider_user_id"], "sam");
    assert_eq!(page["total"], 2);

    // Only members may list a group; an unknown group is 404; ids are checked before auth.
    app.get(&members_path, Some(&alice.access))
        .await
        .expect_error(403, "forbidden");
    app.get(
        &format!("/me/groups/{}/members", groups::ADMINISTRATORS),
        Some(&rita.access),
    )
    .await
    .expect_error(403, "forbidden");
    app.get(
        &format!("/me/groups/{}/members", groups::EVERYONE),
        Some(&rita.access),
    )
    .await
    .expect_error(403, "forbidden");
    assert_eq!(
        app.get(
            &format!("/me/groups/{}/members", groups::ADMINISTRATORS),
            Some(&sam.access)
        )
        .await
        .expect(200)["total"],
        1
    );
    app.get(
        &format!("/me/groups/{}/members", uuid::Uuid::new_v4()),
        Some(&rita.access),
    )
    .await
    .expect_error(404, "not_found");
    app.get(&members_path, None)
        .await
        .expect_error(401, "unauthorized");
    app.get("/me/groups/not-a-uuid/members", None)
        .await
        .expect_error(400, "invalid_id");
    app.get(&format!("{members_path}?limit=1001"), Some(&rita.access))
        .await
        .expect_error(400, "invalid_input");
}

both_backends!(my_groups_and_members);
