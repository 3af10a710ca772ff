//! Teams and projects (`/teams…`, `/projects…`): CRUD and JSON Patch with optimistic locking,
//! membership, relationships and their cycles, how projects tie teams and threat models together
//! (a team with projects, a project a threat model names, cannot be deleted), notes with their
//! sharable rule, and metadata with its bulk forms. Every response is validated against the
//! contract by the harness.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Backend, Session, TestApp};

async fn user_id(app: &TestApp, hint: &str) -> String {
    app.state
        .store
        .find_user("tmi", hint)
        .await
        .unwrap()
        .unwrap()
        .internal_uuid
        .to_string()
}

async fn team(app: &TestApp, s: &Session, body: Value) -> Value {
    app.post("/teams", Some(&s.access), body)
        .await
        .expect(201)
        .clone()
}

fn ids(list: &Value, key: &str) -> Vec<String> {
    list[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn team_lifecycle(b: Backend) {
    let app = TestApp::spawn(b).await;
    let alice = app.login("alice").await;
    let bob = app.login("bob").await;
    let carol = app.login("carol").await;
    let (alice_id, bob_id) = (user_id(&app, "alice").await, user_id(&app, "bob").await);

    let t = team(
        &app,
        &alice,
        json!({"name": "Platform <b>Engineering</b>", "description": "Core", "email_address": "pe@example.com",
               "members": [{"user_id": bob_id}], "responsible_parties": [{"user_id": alice_id, "role": "security_specialist"}]}),
    )
    .await;
    assert_eq!(t["name"], "Platform Engineering", "markup is stripped");
    assert_eq!(t["status"], "active");
    assert_eq!(t["version"], 1);
    assert_eq!(t["created_by"]["provider_id"], "alice");
    let members = t["members"].as_array().unwrap();
    assert_eq!(members.len(), 2);
    assert_eq!(members[0]["user_id"], alice_id.as_str());
    assert_eq!(members[0]["role"], "engineering_lead", "the creator leads");
    assert_eq!(members[1]["role"], "engineer");
    assert_eq!(members[1]["user"]["provider_id"], "bob");
    assert_eq!(t["responsible_parties"][0]["user"]["provider_id"], "alice");
    let path = format!("/teams/{}", t["id"].as_str().unwrap());

    // Members read it; others are refused; a missing team is 404; a malformed id 400.
    let got = app.get(&path, Some(&bob.access)).await;
    assert_eq!(got.expect(200)["id"], t["id"]);
    assert_eq!(got.header("etag").as_deref(), Some("\"1\""));
    app.get(&path, Some(&carol.access))
        .await
        .expect_error(403, "forbidden");
    app.get(&format!("/teams/{}", Uuid::new_v4()), Some(&alice.access))
        .await
        .expect_error(404, "not_found");
    app.get("/teams/nope", Some(&alice.access)).await.expect(400);
    app.get(&path, None).await.expect_error(401, "unauthorized");

    // Lists: members only, with counts and filters.
    let other = team(&app, &carol, json!({"name": "Carol's", "status": "forming"})).await;
    let mine = app.get("/teams", Some(&alice.access)).await;
    assert_eq!(ids(mine.expect(200), "teams"), vec![t["id"].as_str().unwrap()]);
    assert_eq!(mine.body["teams"][0]["member_count"], 2);
    assert_eq!(mine.body["teams"][0]["project_count"], 0);
    assert_eq!(mine.body["total"], 1);
    let theirs = app.get("/teams?status=forming", Some(&carol.access)).await;
    assert_eq!(
        ids(theirs.expect(200), "teams"),
        vec![other["id"].as_str().unwrap()]
    );
    assert_eq!(
        app.get("/teams?name=PLATFORM", Some(&bob.access))
            .await
            .expect(200)["total"],
        1
    );
    assert_eq!(
        app.get(&format!("/teams?member_user_id={alice_id}"), Some(&bob.access))
            .await
            .expect(200)["total"],
        1
    );
    assert_eq!(
        app.get("/teams?name=zzz", Some(&bob.access)).await.expect(200)["total"],
        0
    );
    app.get("/teams?limit=0", Some(&bob.access)).await.expect(400);

    // Administrators see every team.
    let admin = app.login("dave").await;
    app.add_to_group("dave", tmi_server::store::groups::ADMINISTRATORS)
        .await;
    assert_eq!(
        app.get("/teams", Some(&admin.access)).await.expect(200)["total"],
        2
    );
    app.get(&path, Some(&admin.access)).await.expect(200);

    // PUT replaces, under If-Match.
    let put = json!({"name": "Platform", "members": [{"user_id": alice_id}, {"user_id": bob_id, "role": "product_manager"}]});
    app.send(
        reqwest::Method::PUT,
        &path,
        Some(&bob.access),
        Some(("application/json", put.to_string().into_bytes())),
        &[("If-Match", "\"7\"")],
    )
    .await
    .expect_error(409, "version_mismatch");
    let res = app
        .send(
            reqwest::Method::PUT,
            &path,
            Some(&bob.access),
            Some(("application/json", put.to_string().into_bytes())),
            &[("If-Match", "1")],
        )
        .await;
    let updated = res.expect(200).clone();
    assert_eq!(res.header("etag").as_deref(), Some("\"2\""));
    assert_eq!(updated["version"], 2);
    assert!(
        updated.get("description").is_none(),
        "PUT replaces the whole document"
    );
    assert_eq!(updated["members"][1]["role"], "product_manager");
    assert_eq!(updated["modified_by"]["provider_id"], "bob");
    assert!(updated["responsible_parties"].as_array().unwrap().is_empty());
    app.put(
        &path,
        Some(&bob.access),
        json!({"name": "X", "members": [{"user_id": Uuid::new_v4()}]}),
    )
    .await
    .expect_error(400, "invalid_input");
    app.put(&path, Some(&bob.access), json!({"description": "no name"}))
        .await
        .expect(400);
    app.put(&path, Some(&carol.access), json!({"name": "Mine now"}))
        .await
        .expect_error(403, "forbidden");

    // A PUT that leaves `members` out keeps them (upstream's own workflow test PUTs only name,
    // description and status).
    let kept = app
        .put(
            &path,
            Some(&bob.access),
            json!({"name": "Platform", "description": "Again", "status": "active"}),
        )
        .await;
    assert_eq!(kept.expect(200)["members"].as_array().unwrap().len(), 2);
    assert_eq!(kept.body["version"], 3);
    app.get(&path, Some(&bob.access)).await.expect(200);

    // JSON Patch on the writable fields.
    let patched = app
        .patch(
            &path,
            Some(&alice.access),
            json!([{"op": "replace", "path": "/description", "value": "Updated"},
                   {"op": "replace", "path": "/status", "value": "on_hold"}]),
        )
        .await;
    assert_eq!(patched.expect(200)["description"], "Updated");
    assert_eq!(patched.body["status"], "on_hold");
    assert_eq!(patched.body["version"], 4);
    app.patch(
        &path,
        Some(&alice.access),
        json!([{"op": "replace", "path": "/id", "value": Uuid::new_v4()}]),
    )
    .await
    .expect_error(400, "invalid_input");
    app.patch(
        &path,
        Some(&alice.access),
        json!([{"op": "replace", "path": "/status", "value": "bogus"}]),
    )
    .await
    .expect_error(400, "invalid_input");
    app.patch(
        &path,
        Some(&carol.access),
        json!([{"op": "replace", "path": "/name", "value": "x"}]),
    )
    .await
    .expect_error(403, "forbidden");

    // Deleting: the creator or an administrator.
    app.delete(&path, Some(&bob.access))
        .await
        .expect_error(403, "forbidden");
    app.delete(&path, Some(&alice.access)).await.expect(204);
    app.get(&path, Some(&alice.access))
        .await
        .expect_error(404, "not_found");
    app.delete(&path, Some(&alice.access))
        .await
        .expect_error(404, "not_found");
    let other_path = format!("/teams/{}", other["id"].as_str().unwrap());
    app.delete(&other_path, Some(&admin.access)).await.expect(204);
}

async fn projects_and_threat_models(b: Backend) {
    let app = TestApp::spawn(b).await;
    let alice = app.login("alice").await;
    let bob = app.login("bob").await;
    let t = team(&app, &alice, json!({"name": "Payments", "description": "Money"})).await;
    let team_id = t["id"].as_str().unwrap().to_owned();
    let team_path = format!("/teams/{team_id}");

    // Only members of the team may create a project in it.
    let body = json!({"name": "Gateway", "team_id": team_id, "status": "in_development"});
    app.post("/projects", Some(&bob.access), body.clone())
        .await
        .expect_error(403, "forbidden");
    app.post("/projects", Some(&alice.access), json!({"name": "No team"}))
        .await
        .expect(400);
    let p = app
        .post("/projects", Some(&alice.access), body)
        .await
        .expect(201)
        .clone();
    assert_eq!(p["team_id"], team_id.as_str());
    assert_eq!(
        p["team"],
        json!({"id": team_id, "name": "Payments", "description": "Money"})
    );
    assert_eq!(p["status"], "in_development");
    let project_id = p["id"].as_str().unwrap().to_owned();
    let project_path = format!("/projects/{project_id}");

    // Reading it takes membership of its team.
    app.get(&project_path, Some(&alice.access)).await.expect(200);
    app.get(&project_path, Some(&bob.access))
        .await
        .expect_error(403, "forbidden");
    let listed = app
        .get(&format!("/projects?team_id={team_id}"), Some(&alice.access))
        .await;
    assert_eq!(ids(listed.expect(200), "projects"), vec![project_id.as_str()]);
    assert_eq!(listed.body["projects"][0]["team_name"], "Payments");
    assert_eq!(
        app.get("/projects", Some(&bob.access)).await.expect(200)["total"],
        0
    );
    assert_eq!(
        app.get("/teams", Some(&alice.access)).await.expect(200)["teams"][0]["project_count"],
        1
    );

    // Moving the project to a team the caller does not belong to is refused.
    let bobs = team(&app, &bob, json!({"name": "Bob's"})).await;
    app.patch(
        &project_path,
        Some(&alice.access),
        json!([{"op": "replace", "path": "/team_id", "value": bobs["id"]}]),
    )
    .await
    .expect_error(403, "forbidden");

    // A team with projects stays.
    app.delete(&team_path, Some(&alice.access))
        .await
        .expect_error(409, "conflict");

    // A threat model belongs to the project through `project_id`; the project then stays.
    let tm = app
        .post(
            "/threat_models",
            Some(&alice.access),
            json!({"name": "Gateway TM"}),
        )
        .await
        .expect(201)
        .clone();
    let tm_path = format!("/threat_models/{}", tm["id"].as_str().unwrap());
    app.patch(
        &tm_path,
        Some(&alice.access),
        json!([{"op": "replace", "path": "/project_id", "value": Uuid::new_v4()}]),
    )
    .await
    .expect_error(400, "invalid_input");
    let linked = app
        .patch(
            &tm_path,
            Some(&alice.access),
            json!([{"op": "replace", "path": "/project_id", "value": project_id}]),
        )
        .await;
    assert_eq!(linked.expect(200)["project_id"], project_id.as_str());
    app.delete(&project_path, Some(&alice.access))
        .await
        .expect_error(409, "conflict");
    app.patch(
        &tm_path,
        Some(&alice.access),
        json!([{"op": "replace", "path": "/project_id", "value": null}]),
    )
    .await
    .expect(200);

    // Only the creator (or an administrator) deletes; then the team may go.
    app.delete(&project_path, Some(&bob.access))
        .await
        .expect_error(403, "forbidden");
    app.delete(&project_path, Some(&alice.access)).await.expect(204);
    app.get(&project_path, Some(&alice.access))
        .await
        .expect_error(404, "not_found");
    app.delete(&team_path, Some(&alice.access)).await.expect(204);
}

async fn relationships(b: Backend) {
    let app = TestApp::spawn(b).await;
    let alice = app.login("alice").await;
    let root = team(&app, &alice, json!({"name": "Root"})).await;
    let mid = team(
        &app,
        &alice,
        json!({"name": "Mid", "related_teams": [{"related_team_id": root["id"], "relationship": "parent"}]}),
    )
    .await;
    let leaf = team(
        &app,
        &alice,
        json!({"name": "Leaf", "related_teams": [{"related_team_id": mid["id"], "relationship": "parent"}]}),
    )
    .await;
    assert_eq!(leaf["related_teams"][0]["related_team_id"], mid["id"]);
    let root_path = format!("/teams/{}", root["id"].as_str().unwrap());

    // Root's parent may not be its own descendant; a team is not related to itself; the related
    // team must exist.
    let cycle = json!([{"op": "add", "path": "/related_teams", "value": [{"related_team_id": leaf["id"], "relationship": "parent"}]}]);
    app.patch(&root_path, Some(&alice.access), cycle)
        .await
        .expect_error(409, "conflict");
    let inverse = json!([{"op": "add", "path": "/related_teams", "value": [{"related_team_id": leaf["id"], "relationship": "child"}]}]);
    app.patch(&root_path, Some(&alice.access), inverse)
        .await
        .expect(200);
    let myself = json!([{"op": "add", "path": "/related_teams", "value": [{"related_team_id": root["id"], "relationship": "related"}]}]);
    app.patch(&root_path, Some(&alice.access), myself)
        .await
        .expect_error(400, "invalid_input");
    app.post(
        "/teams",
        Some(&alice.access),
        json!({"name": "X", "related_teams": [{"related_team_id": Uuid::new_v4(), "relationship": "related"}]}),
    )
    .await
    .expect_error(400, "invalid_input");

    // The relationship filter: direct either way, or the chain of parents.
    let listed = |q: String| {
        let app = &app;
        let token = alice.access.clone();
        async move {
            let mut got = ids(
                app.get(&format!("/teams?{q}"), Some(&token)).await.expect(200),
                "teams",
            );
            got.sort();
            got
        }
    };
    let sorted = |mut v: Vec<&Value>| {
        v.sort_by_key(|t| t["id"].as_str().unwrap().to_owned());
        v.iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        listed(format!("related_to={}", mid["id"].as_str().unwrap())).await,
        sorted(vec![&root, &leaf])
    );
    assert_eq!(
        listed(format!(
            "related_to={}&relationship=parent&transitive=true",
            leaf["id"].as_str().unwrap()
        ))
        .await,
        sorted(vec![&root, &mid])
    );
    assert_eq!(
        listed(format!(
            "related_to={}&relationship=parent",
            leaf["id"].as_str().unwrap()
        ))
        .await,
        sorted(vec![&mid])
    );
    app.get("/teams?relationship=cousin&related_to=x", Some(&alice.access))
        .await
        .expect(400);

    // Deleting a team drops the relationships other teams had to it.
    let gone = team(&app, &alice, json!({"name": "Gone"})).await;
    let stays = team(
        &app,
        &alice,
        json!({"name": "Stays", "related_teams": [{"related_team_id": gone["id"], "relationship": "dependency"}]}),
    )
    .await;
    let stays_path = format!("/teams/{}", stays["id"].as_str().unwrap());
    app.delete(
        &format!("/teams/{}", gone["id"].as_str().unwrap()),
        Some(&alice.access),
    )
    .await
    .expect(204);
    assert_eq!(
        app.get(&stays_path, Some(&alice.access)).await.expect(200)["related_teams"],
        json!([])
    );
    app.patch(
        &stays_path,
        Some(&alice.access),
        json!([{"op": "replace", "path": "/name", "value": "Still"}]),
    )
    .await
    .expect(200);
}

async fn notes(b: Backend) {
    let app = TestApp::spawn(b).await;
    let alice = app.login("alice").await;
    let bob = app.login("bob").await;
    app.login("rita").await;
    app.add_to_group("rita", tmi_server::store::groups::SECURITY_REVIEWERS)
        .await;
    let rita = app.login("rita").await;
    let rita_id = user_id(&app, "rita").await;
    let t = team(
        &app,
        &alice,
        json!({"name": "Notes", "members": [{"user_id": rita_id}]}),
    )
    .await;
    let p = app
        .post(
            "/projects",
            Some(&alice.access),
            json!({"name": "P", "team_id": t["id"]}),
        )
        .await
        .expect(201)
        .clone();

    for parent in [
        format!("/teams/{}", t["id"].as_str().unwrap()),
        format!("/projects/{}", p["id"].as_str().unwrap()),
    ] {
        let notes = format!("{parent}/notes");
        let n = app
            .post(
                &notes,
                Some(&alice.access),
                json!({"name": "Review", "content": "# Findings\n<script>alert(1)</script>ok", "description": "Q3"}),
            )
            .await
            .expect(201)
            .clone();
        assert_eq!(n["sharable"], true, "regular users' notes are shared");
        assert_eq!(n["timmy_enabled"], true);
        assert!(!n["content"].as_str().unwrap().contains("<script"), "{n}");
        let note = format!("{notes}/{}", n["id"].as_str().unwrap());

        // Only administrators and security reviewers set `sharable`; their notes are private by default.
        app.post(
            &notes,
            Some(&alice.access),
            json!({"name": "S", "content": "c", "sharable": true}),
        )
        .await
        .expect_error(403, "forbidden");
        let private = app
            .post(
                &notes,
                Some(&rita.access),
                json!({"name": "Private", "content": "c"}),
            )
            .await
            .expect(201)
            .clone();
        assert_eq!(private["sharable"], false);
        let private_path = format!("{notes}/{}", private["id"].as_str().unwrap());
        app.get(&private_path, Some(&alice.access))
            .await
            .expect_error(404, "not_found");
        app.get(&private_path, Some(&rita.access)).await.expect(200);
        assert_eq!(app.get(&notes, Some(&alice.access)).await.expect(200)["total"], 1);
        let all = app
            .get(&format!("{notes}?limit=1&offset=1"), Some(&rita.access))
            .await;
        assert_eq!(all.expect(200)["total"], 2);
        assert_eq!(all.body["notes"].as_array().unwrap().len(), 1);
        assert!(all.body["notes"][0].get("content").is_none());
        assert_eq!(
            app.get(&parent, Some(&alice.access)).await.expect(200)["notes"]
                .as_array()
                .unwrap()
                .len(),
            1,
            "the parent embeds the notes its reader may see"
        );

        // Members write; outsiders are refused.
        app.get(&note, Some(&bob.access))
            .await
            .expect_error(403, "forbidden");
        app.get(&notes, Some(&bob.access))
            .await
            .expect_error(403, "forbidden");
        let put = app
            .put(
                &note,
                Some(&alice.access),
                json!({"name": "Review 2", "content": "new"}),
            )
            .await;
        assert_eq!(put.expect(200)["name"], "Review 2");
        assert_eq!(put.body["sharable"], true, "kept");
        assert!(put.body.get("description").is_none());
        let patched = app
            .patch(
                &note,
                Some(&alice.access),
                json!([{"op": "replace", "path": "/content", "value": "patched"}]),
            )
            .await;
        assert_eq!(patched.expect(200)["content"], "patched");
        app.patch(
            &note,
            Some(&alice.access),
            json!([{"op": "replace", "path": "/sharable", "value": false}]),
        )
        .await
        .expect_error(403, "forbidden");
        app.patch(
            &note,
            Some(&rita.access),
            json!([{"op": "replace", "path": "/sharable", "value": false}]),
        )
        .await
        .expect(200);
        app.get(&note, Some(&alice.access))
            .await
            .expect_error(404, "not_found");
        app.put(&note, Some(&alice.access), json!({"name": "<b>", "content": "c"}))
            .await
            .expect(400);
        app.delete(&note, Some(&alice.access))
            .await
            .expect_error(404, "not_found");
        app.delete(&note, Some(&rita.access)).await.expect(204);
        app.get(&note, Some(&rita.access))
            .await
            .expect_error(404, "not_found");
        app.get(&format!("{notes}/{}", Uuid::new_v4()), Some(&alice.access))
            .await
            .expect_error(404, "not_found");
    }
}

async fn metadata(b: Backend) {
    let app = TestApp::spawn(b).await;
    let alice = app.login("alice").await;
    let t = team(&app, &alice, json!({"name": "Meta"})).await;
    let p = app
        .post(
            "/projects",
            Some(&alice.access),
            json!({"name": "P", "team_id": t["id"]}),
        )
        .await
        .expect(201)
        .clone();
    for (parent, id) in [
        (format!("/teams/{}", t["id"].as_str().unwrap()), t["id"].clone()),
        (
            format!("/projects/{}", p["id"].as_str().unwrap()),
            p["id"].clone(),
        ),
    ] {
        let meta = format!("{parent}/metadata");
        app.post(&meta, Some(&alice.access), json!({"key": "env", "value": "prod"}))
            .await
            .expect(201);
        app.post(&meta, Some(&alice.access), json!({"key": "env", "value": "dev"}))
            .await
            .expect_error(409, "conflict");
        app.put(
            &format!("{meta}/env"),
            Some(&alice.access),
            json!({"key": "env", "value": "stage"}),
        )
        .await
        .expect(200);
        app.put(
            &format!("{meta}/nope"),
            Some(&alice.access),
            json!({"key": "nope", "value": "x"}),
        )
        .await
        .expect_error(404, "not_found");
        assert_eq!(
            app.get(&meta, Some(&alice.access)).await.expect(200),
            &json!([{"key": "env", "value": "stage"}])
        );
        let bulk = format!("{meta}/bulk");
        app.post(
            &bulk,
            Some(&alice.access),
            json!([{"key": "a", "value": "1"}, {"key": "env", "value": "x"}]),
        )
        .await
        .expect_error(409, "conflict");
        let created = app
            .post(
                &bulk,
                Some(&alice.access),
                json!([{"key": "a", "value": "1"}, {"key": "b", "value": "2"}]),
            )
            .await;
        assert_eq!(created.expect(201).as_array().unwrap().len(), 3);
        let patched = app
            .send(
                reqwest::Method::PATCH,
                &bulk,
                Some(&alice.access),
                Some((
                    "application/json",
                    json!({"patches": [{"id": id, "operations": [
                        {"op": "replace", "path": "/a", "value": "10"},
                        {"op": "remove", "path": "/b"},
                        {"op": "add", "path": "/c", "value": "3"}]}]})
                    .to_string()
                    .into_bytes(),
                )),
                &[],
            )
            .await;
        assert_eq!(
            patched.expect(200),
            &json!([{"key": "env", "value": "stage"}, {"key": "a", "value": "10"}, {"key": "c", "value": "3"}])
        );
        let replaced = app
            .put(&bulk, Some(&alice.access), json!([{"key": "only", "value": "1"}]))
            .await;
        assert_eq!(replaced.expect(200), &json!([{"key": "only", "value": "1"}]));
        app.delete(&format!("{meta}/only"), Some(&alice.access))
            .await
            .expect(204);
        app.delete(&format!("{meta}/only"), Some(&alice.access))
            .await
            .expect_error(404, "not_found");
        assert_eq!(app.get(&meta, Some(&alice.access)).await.expect(200), &json!([]));
    }
    app.get(
        &format!("/teams/{}/metadata", Uuid::new_v4()),
        Some(&alice.access),
    )
    .await
    .expect_error(404, "not_found");
    app.get(&format!("/projects/{}/metadata", Uuid::new_v4()), None)
        .await
        .expect_error(401, "unauthorized");
}

both_backends!(
    team_lifecycle,
    projects_and_threat_models,
    relationships,
    notes,
    metadata
);
