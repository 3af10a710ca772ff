//! The authorization matrix, generated from the contract: every operation under `/threat_models`
//! that the server serves, called by the owner, a writer, a reader, an outsider (signed in, no
//! access) and an unauthenticated caller, must answer what the operation's `x-tmi-authz` minimum
//! role requires; plus TMI's 404-versus-403 rules (tmi-compat.md §3, §8): a missing or deleted
//! threat model is 404 for every signed-in caller, a missing child or metadata key is 404 only for
//! callers that hold the role (403 for the others), and a malformed id is 400 before
//! authentication. The owner's service account (a token of their client credential) is a caller
//! too: it holds the owner's role, but operations marked `subject_authority: invoker` (every write
//! of threat-model content) refuse it with 403 before looking at the threat model. The
//! `/me/client_credentials` operations have a matrix of their own.
//!
//! A served operation without a fixture here fails the test, so a new route cannot be forgotten.

use reqwest::Method;
use serde_json::{Value, json};
use tmi_server::openapi::Ownership;

use crate::helpers::{Backend, CONTRACT, Session, TestApp};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Owner,
    Writer,
    Reader,
    Outsider,
    Anonymous,
    /// A client-credentials token of the owner.
    ServiceAccount,
}

const CALLERS: [Who; 6] = [
    Who::Owner,
    Who::Writer,
    Who::Reader,
    Who::Outsider,
    Who::Anonymous,
    Who::ServiceAccount,
];

/// What a permitted caller gets.
#[derive(Clone, Copy, Debug)]
enum Expect {
    Status(u16),
    /// Any answer past authorization (the operation's own rules are tested elsewhere).
    Authorized,
}

/// One request, ready to send.
struct Prepared {
    path: String,
    body: Option<(&'static str, Vec<u8>)>,
    ok: Expect,
    /// The child id in `path`, for the missing-child variant.
    child: Option<String>,
    /// The metadata key in `path`, for the missing-key variant.
    key: Option<String>,
}

/// A child kind: path segment, create body, full-replacement body.
struct Kind {
    plural: &'static str,
    create: Value,
    replace: Value,
}

fn kinds() -> Vec<Kind> {
    vec![
        Kind {
            plural: "threats",
            create: json!({"name": "T", "threat_type": []}),
            replace: json!({"name": "T2", "threat_type": ["Spoofing"]}),
        },
        Kind {
            plural: "documents",
            create: json!({"name": "D", "uri": "https://e.com/d"}),
            replace: json!({"name": "D2", "uri": "https://e.com/d2"}),
        },
        Kind {
            plural: "notes",
            create: json!({"name": "N", "content": "c"}),
            replace: json!({"name": "N2", "content": "c2"}),
        },
        Kind {
            plural: "assets",
            create: json!({"name": "A", "type": "data"}),
            replace: json!({"name": "A2", "type": "software"}),
        },
        Kind {
            plural: "repositories",
            create: json!({"name": "R", "uri": "https://e.com/r"}),
            replace: json!({"name": "R2", "uri": "https://e.com/r2"}),
        },
        Kind {
            plural: "diagrams",
            create: json!({"name": "G", "type": "DFD-1.0.0"}),
            replace: json!({"name": "G2", "type": "DFD-1.0.0", "cells": []}),
        },
    ]
}

/// Operations owned by work happening elsewhere: when served, only their authorization is checked.
fn authorized_only(template: &str) -> bool {
    template.ends_with("/collaborate")
}

fn json_body(v: Value) -> Option<(&'static str, Vec<u8>)> {
    Some(("application/json", v.to_string().into_bytes()))
}

fn patch_body(v: Value) -> Option<(&'static str, Vec<u8>)> {
    Some(("application/json-patch+json", v.to_string().into_bytes()))
}

fn unique_key() -> String {
    format!("k{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// The signed-in callers and a threat model they share.
struct World {
    app: TestApp,
    owner: Session,
    writer: Session,
    reader: Session,
    outsider: Session,
    /// The owner's service-account token.
    service: String,
    kinds: Vec<Kind>,
}

impl World {
    async fn new(b: Backend) -> Self {
        let app = TestApp::spawn(b).await;
        let owner = app.login("olivia").await;
        let writer = app.login("walter").await;
        let reader = app.login("rachel").await;
        let outsider = app.login("oscar").await;
        // Administrators may create client credentials (and administration does not reach into
        // threat models, so the owner's role is unchanged).
        app.add_to_group("olivia", tmi_server::store::groups::ADMINISTRATORS)
            .await;
        let service = service_account(&app, &owner.access).await;
        World {
            app,
            owner,
            writer,
            reader,
            outsider,
            service,
            kinds: kinds(),
        }
    }

    fn token(&self, who: Who) -> Option<&str> {
        match who {
            Who::Owner => Some(&self.owner.access),
            Who::Writer => Some(&self.writer.access),
            Who::Reader => Some(&self.reader.access),
            Who::Outsider => Some(&self.outsider.access),
            Who::Anonymous => None,
            Who::ServiceAccount => Some(&self.service),
        }
    }

    /// A threat model owned by the owner, shared with the writer and the reader; its path.
    async fn new_tm(&self) -> String {
        let tm = self
            .app
            .post(
                "/threat_models",
                Some(&self.owner.access),
                json!({"name": "Matrix", "authorization": [
                    {"principal_type": "user", "provider": "tmi", "provider_id": "walter", "role": "writer"},
                    {"principal_type": "user", "provider": "tmi", "provider_id": "rachel", "role": "reader"}
                ]}),
            )
            .await;
        format!("/threat_models/{}", tm.expect(201)["id"].as_str().unwrap())
    }

    async fn new_child(&self, tm: &str, kind: &Kind) -> String {
        let c = self
            .app
            .post(
                &format!("{tm}/{}", kind.plural),
                Some(&self.owner.access),
                kind.create.clone(),
            )
            .await;
        c.expect(201)["id"].as_str().unwrap().to_owned()
    }

    async fn new_key(&self, parent: &str) -> String {
        let key = unique_key();
        self.app
            .post(
                &format!("{parent}/metadata"),
                Some(&self.owner.access),
                json!({"key": key, "value": "v"}),
            )
            .await
            .expect(201);
        key
    }

    fn kind(&self, plural: &str) -> Option<&Kind> {
        self.kinds.iter().find(|k| k.plural == plural)
    }

    /// Builds the request for one operation (creating what it needs as the owner), or `None` when
    /// this table has no fixture for it.
    async fn prepare(&self, method: &Method, template: &str, shared: &str) -> Option<Prepared> {
        if template == "/threat_models" {
            return match *method {
                Method::GET => Some(plain("/threat_models".into(), None, 200)),
                Method::POST => Some(plain(
                    "/threat_models".into(),
                    json_body(json!({"name": "Mine"})),
                    201,
                )),
                _ => None,
            };
        }
        let rest = template.strip_prefix("/threat_models/{threat_model_id}")?;
        let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        let m = method.clone();
        match segs.as_slice() {
            [] => match m {
                Method::GET => Some(plain(shared.into(), None, 200)),
                Method::PUT => Some(plain(
                    shared.into(),
                    json_body(json!({"name": "Matrix", "description": "d"})),
                    200,
                )),
                Method::PATCH => Some(plain(
                    shared.into(),
                    patch_body(json!([{"op": "replace", "path": "/description", "value": "x"}])),
                    200,
                )),
                Method::DELETE => Some(plain(self.new_tm().await, None, 204)),
                _ => None,
            },
            ["restore"] if m == Method::POST => {
                let tm = self.new_tm().await;
                self.app.delete(&tm, Some(&self.owner.access)).await.expect(204);
                Some(plain(format!("{tm}/restore"), None, 200))
            }
            ["metadata", tail @ ..] => self.metadata(&m, shared, tail, false).await,
            [plural] => {
                let kind = self.kind(plural)?;
                let path = format!("{shared}/{plural}");
                match m {
                    Method::GET => Some(plain(path, None, 200)),
                    Method::POST => Some(plain(path, json_body(kind.create.clone()), 201)),
                    _ => None,
                }
            }
            [plural, "bulk"] => self.bulk(&m, shared, plural).await,
            [plural, id, tail @ ..] if id.starts_with('{') => {
                let kind = self.kind(plural)?;
                let child = self.new_child(shared, kind).await;
                let item = format!("{shared}/{plural}/{child}");
                let mut p = match (tail, m.clone()) {
                    ([], Method::GET) => plain(item, None, 200),
                    ([], Method::PUT) => plain(item, json_body(kind.replace.clone()), 200),
                    ([], Method::PATCH) => plain(
                        item,
                        patch_body(json!([{"op": "replace", "path": "/description", "value": "x"}])),
                        200,
                    ),
                    ([], Method::DELETE) => plain(item, None, 204),
                    (["restore"], Method::POST) => {
                        self.app.delete(&item, Some(&self.owner.access)).await.expect(204);
                        plain(format!("{item}/restore"), None, 200)
                    }
                    (["metadata", t @ ..], _) => self.metadata(&m, &item, t, *plural == "assets").await?,
                    (["collaborate"], _) => Prepared {
                        path: format!("{item}/collaborate"),
                        body: None,
                        ok: Expect::Authorized,
                        child: None,
                        key: None,
                    },
                    _ => return None,
                };
                p.child = Some(child);
                Some(p)
            }
            _ => None,
        }
    }

    /// `…/metadata`, `…/metadata/bulk` and `…/metadata/{key}` of `parent`.
    async fn metadata(&self, m: &Method, parent: &str, tail: &[&str], key_in_put: bool) -> Option<Prepared> {
        let base = format!("{parent}/metadata");
        let entry = || json!({"key": unique_key(), "value": "v"});
        match (tail, m.clone()) {
            ([], Method::GET) => Some(plain(base, None, 200)),
            ([], Method::POST) => Some(plain(base, json_body(entry()), 201)),
            (["bulk"], Method::POST) => Some(plain(format!("{base}/bulk"), json_body(json!([entry()])), 201)),
            (["bulk"], Method::PUT | Method::PATCH) => {
                Some(plain(format!("{base}/bulk"), json_body(json!([entry()])), 200))
            }
            (["{key}"], _) => {
                let key = self.new_key(parent).await;
                let path = format!("{base}/{key}");
                let mut p = match m.clone() {
                    Method::GET => plain(path, None, 200),
                    Method::PUT => {
                        let body = if key_in_put {
                            json!({"key": key, "value": "v2"})
                        } else {
                            json!({"value": "v2"})
                        };
                        plain(path, json_body(body), 200)
                    }
                    Method::DELETE => plain(path, None, 204),
                    _ => return None,
                };
                p.key = Some(key);
                Some(p)
            }
            _ => None,
        }
    }

    /// `…/{kind}/bulk`.
    async fn bulk(&self, m: &Method, tm: &str, plural: &str) -> Option<Prepared> {
        let kind = self.kind(plural)?;
        let path = format!("{tm}/{plural}/bulk");
        let with_id = |id: &str| {
            let mut v = kind.replace.clone();
            v["id"] = json!(id);
            json!([v])
        };
        match (plural, m.clone()) {
            ("threats" | "documents" | "repositories" | "assets", Method::POST) => {
                Some(plain(path, json_body(json!([kind.create.clone()])), 201))
            }
            ("threats", Method::PUT) => {
                let id = self.new_child(tm, kind).await;
                Some(plain(path, json_body(with_id(&id)), 200))
            }
            ("threats", Method::PATCH) => {
                let id = self.new_child(tm, kind).await;
                let body = json!({"patches": [{"id": id, "operations": [
                    {"op": "replace", "path": "/description", "value": "x"}
                ]}]});
                Some(plain(path, json_body(body), 200))
            }
            ("threats", Method::DELETE) => {
                let id = self.new_child(tm, kind).await;
                Some(plain(format!("{path}?threat_ids={id}"), None, 200))
            }
            // The contract answers 201 for documents and 200 for repositories and assets.
            ("documents", Method::PUT) => {
                let id = self.new_child(tm, kind).await;
                Some(plain(path, json_body(with_id(&id)), 201))
            }
            ("repositories" | "assets", Method::PUT) => {
                let id = self.new_child(tm, kind).await;
                Some(plain(path, json_body(with_id(&id)), 200))
            }
            _ => None,
        }
    }
}

fn plain(path: String, body: Option<(&'static str, Vec<u8>)>, ok: u16) -> Prepared {
    Prepared {
        path,
        body,
        ok: Expect::Status(ok),
        child: None,
        key: None,
    }
}

/// Creates a client credential as `token`'s user and returns a token it grants.
async fn service_account(app: &TestApp, token: &str) -> String {
    let created = app
        .post("/me/client_credentials", Some(token), json!({"name": "Matrix"}))
        .await;
    let c = created.expect(201);
    let granted = app
        .post(
            "/oauth2/token",
            None,
            json!({"grant_type": "client_credentials", "client_id": c["client_id"], "client_secret": c["client_secret"]}),
        )
        .await;
    granted.expect(200)["access_token"].as_str().unwrap().to_owned()
}

/// Whether `who` holds `min` on the shared threat model.
fn permitted(who: Who, min: Ownership) -> bool {
    match who {
        Who::Owner | Who::ServiceAccount => true,
        Who::Writer => min != Ownership::Owner,
        Who::Reader => matches!(min, Ownership::None | Ownership::Reader),
        Who::Outsider | Who::Anonymous => false,
    }
}

/// Every (method, template) of the contract under `/threat_models`.
fn contract_operations() -> Vec<(Method, String)> {
    let mut out = Vec::new();
    for t in CONTRACT.templates() {
        if !t.starts_with("/threat_models") {
            continue;
        }
        for m in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ] {
            if CONTRACT.operation(m.as_str(), &t).is_some() {
                out.push((m, t.clone()));
            }
        }
    }
    out
}

/// Whether the server serves `method template` as that operation: probed with the owner's token on
/// a threat model that does not exist (so nothing is touched) and well-formed ids everywhere, an
/// unserved operation answers 405, the fallback's 404 or (when a literal segment such as `bulk`
/// lands on an `{id}` route) `invalid_id`.
async fn served(w: &World, method: &Method, template: &str) -> bool {
    let path = template
        .split('/')
        .map(|s| match s {
            "{key}" => "probe-key".to_owned(),
            s if s.starts_with('{') => uuid::Uuid::new_v4().to_string(),
            s => s.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/");
    let r = w
        .app
        .send(method.clone(), &path, Some(&w.owner.access), None, &[])
        .await;
    let description = r.body["error_description"].as_str().unwrap_or_default();
    !(r.status.as_u16() == 405
        || (r.status.as_u16() == 404 && description.contains("is not defined"))
        || r.body["error"] == "invalid_id")
}

async fn matrix(b: Backend) {
    let w = World::new(b).await;
    let shared = w.new_tm().await;
    let deleted = w.new_tm().await;
    w.app.delete(&deleted, Some(&w.owner.access)).await.expect(204);
    let shared_id = shared.trim_start_matches("/threat_models/").to_owned();
    let deleted_id = deleted.trim_start_matches("/threat_models/").to_owned();

    let mut failures: Vec<String> = Vec::new();
    let mut checked = 0;
    let mut unserved = Vec::new();
    for (method, template) in contract_operations() {
        let label = format!("{method} {template}");
        if !served(&w, &method, &template).await {
            if !authorized_only(&template) && w.prepare(&method, &template, &shared).await.is_some() {
                failures.push(format!(
                    "{label}: the matrix has a fixture, but the server does not serve it"
                ));
            }
            unserved.push(label);
            continue;
        }
        let op = CONTRACT.operation(method.as_str(), &template);
        let min = op.as_ref().map(|o| o.ownership).unwrap_or(Ownership::None);
        let invoker_only = op.as_ref().is_some_and(|o| o.invoker_only);
        let scoped = template != "/threat_models";
        for who in CALLERS {
            let Some(p) = w.prepare(&method, &template, &shared).await else {
                failures.push(format!("{label}: served, but the matrix has no fixture for it"));
                break;
            };
            let mut check = |variant: &str, got: &crate::helpers::Res, want: Expect| {
                checked += 1;
                let status = got.status.as_u16();
                let ok = match want {
                    Expect::Status(s) => status == s,
                    Expect::Authorized => !matches!(status, 401 | 403) && status < 500,
                };
                if !ok {
                    failures.push(format!(
                        "{label} [{variant}] as {who:?}: got {status}, want {want:?}; body {}",
                        got.body
                    ));
                }
            };
            let world = &w;
            let send = |path: String, body: Option<(&'static str, Vec<u8>)>| {
                let method = method.clone();
                async move { world.app.send(method, &path, world.token(who), body, &[]).await }
            };
            let denied = if who == Who::Anonymous { 401 } else { 403 };
            // A service account on an invoker-only operation: 403 whatever the threat model.
            let refused_sa = who == Who::ServiceAccount && invoker_only;
            let want = if refused_sa {
                Expect::Status(403)
            } else if !scoped {
                if who == Who::Anonymous {
                    Expect::Status(401)
                } else {
                    p.ok
                }
            } else if permitted(who, min) {
                p.ok
            } else {
                Expect::Status(denied)
            };
            check("allowed role", &send(p.path.clone(), p.body.clone()).await, want);
            if !scoped {
                continue;
            }
            // Only the shared model's id is replaced; per-case models (DELETE, restore) keep theirs.
            let tm_id = p
                .path
                .trim_start_matches("/threat_models/")
                .split(['/', '?'])
                .next()
                .unwrap_or_default()
                .to_owned();
            let anon_or = |s: u16| {
                Expect::Status(match who {
                    Who::Anonymous => 401,
                    _ if refused_sa => 403,
                    _ => s,
                })
            };
            let missing = p.path.replacen(&tm_id, &uuid::Uuid::new_v4().to_string(), 1);
            check(
                "missing threat model",
                &send(missing, p.body.clone()).await,
                anon_or(404),
            );
            // Restoring a deleted model is the one operation a deleted model answers.
            if template != "/threat_models/{threat_model_id}/restore" {
                let gone = p.path.replacen(&tm_id, &deleted_id, 1);
                check(
                    "deleted threat model",
                    &send(gone, p.body.clone()).await,
                    anon_or(404),
                );
            }
            let malformed = p.path.replacen(&tm_id, "not-a-uuid", 1);
            check(
                "malformed id",
                &send(malformed, p.body.clone()).await,
                Expect::Status(400),
            );
            let absent = |s: &str| p.path.replacen(s, &uuid::Uuid::new_v4().to_string(), 1);
            let gated = if refused_sa {
                Expect::Status(403)
            } else if permitted(who, min) {
                Expect::Status(404)
            } else {
                Expect::Status(denied)
            };
            if let Some(child) = &p.child
                && tm_id == shared_id
                && !authorized_only(&template)
            {
                check("missing child", &send(absent(child), p.body.clone()).await, gated);
            }
            if let Some(key) = &p.key {
                let path = p.path.replacen(&format!("/{key}"), "/no-such-key", 1);
                check("missing key", &send(path, p.body.clone()).await, gated);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} checks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked > 1000, "only {checked} checks ran");
    eprintln!(
        "authorization matrix: {checked} checks; not served: {}",
        unserved.join(", ")
    );
}

/// Owner-only fields inside writer operations (tmi-compat.md §3.2).
async fn owner_only_fields(b: Backend) {
    let w = World::new(b).await;
    let tm = w.new_tm().await;
    let share = json!([{"op": "add", "path": "/authorization/-", "value":
        {"principal_type": "user", "provider": "tmi", "provider_id": "someone-else", "role": "reader"}}]);
    let transfer = json!([{"op": "replace", "path": "/owner", "value":
        {"principal_type": "user", "provider": "tmi", "provider_id": "walter"}}]);
    for ops in [&share, &transfer] {
        w.app
            .patch(&tm, Some(&w.writer.access), ops.clone())
            .await
            .expect_error(403, "forbidden");
    }
    w.app
        .put(
            &tm,
            Some(&w.writer.access),
            json!({"name": "Matrix", "authorization": []}),
        )
        .await
        .expect_error(403, "forbidden");
    w.app.patch(&tm, Some(&w.owner.access), share).await.expect(200);
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

/// `/me/client_credentials`: creation needs the administrator or security-reviewer role and an
/// interactive user (403 otherwise), everyone signed in lists their own, someone else's credential
/// is 404, the unauthenticated get 401. Every operation the contract has under that path must have
/// rows here.
async fn client_credential_operations(b: Backend) {
    let app = TestApp::spawn(b).await;
    let holder = app.login("hana").await;
    let reviewer = app.login("remy").await;
    let plain = app.login("pat").await;
    app.add_to_group("hana", tmi_server::store::groups::ADMINISTRATORS)
        .await;
    app.add_to_group("remy", tmi_server::store::groups::SECURITY_REVIEWERS)
        .await;
    let sa = service_account(&app, &holder.access).await;
    let base = "/me/client_credentials";
    let item = "/me/client_credentials/{credential_id}";
    let covered = [(Method::POST, base), (Method::GET, base), (Method::DELETE, item)];
    for t in CONTRACT.templates() {
        if !t.starts_with(base) {
            continue;
        }
        for m in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ] {
            if CONTRACT.operation(m.as_str(), &t).is_some() {
                assert!(
                    covered.iter().any(|(cm, ct)| *cm == m && *ct == t),
                    "{m} {t} has no rows in this matrix"
                );
            }
        }
    }
    let callers: [(&str, Option<&str>); 5] = [
        ("holder", Some(&holder.access)),
        ("reviewer", Some(&reviewer.access)),
        ("plain user", Some(&plain.access)),
        ("service account", Some(&sa)),
        ("anonymous", None),
    ];

    // Create.
    let mut created = Vec::new();
    for ((who, token), want) in callers.iter().zip([201, 201, 403, 403, 401]) {
        let res = app.post(base, *token, json!({"name": "Row"})).await;
        assert_eq!(res.status.as_u16(), want, "POST as {who}: {}", res.body);
        if want == 201 {
            created.push(res.body["id"].as_str().unwrap().to_owned());
        }
    }
    let (holders, reviewers) = (&created[0], &created[1]);

    // List: one's own (a service account: its owner's).
    for ((who, token), want) in callers.iter().zip([Some(2), Some(1), Some(0), Some(2), None]) {
        let res = app.get(base, *token).await;
        match want {
            Some(n) => assert_eq!(res.expect(200)["total"], n, "GET as {who}"),
            None => res.expect_error(401, "unauthorized"),
        }
    }

    // Delete the holder's: 404 for other users, 401 unauthenticated; the holder's service account
    // acts as the holder.
    let path = format!("{base}/{holders}");
    for ((who, token), want) in callers.iter().zip([None, Some(404), Some(404), None, Some(401)]) {
        if let Some(want) = want {
            let res = app.delete(&path, *token).await;
            assert_eq!(res.status.as_u16(), want, "DELETE as {who}: {}", res.body);
        }
    }
    app.delete(&path, Some(&sa)).await.expect(204);
    app.delete(&format!("{base}/{reviewers}"), Some(&holder.access))
        .await
        .expect_error(404, "not_found");
    // The holder deletes the service account's own credential: its token stops working.
    let own = app.get(base, Some(&holder.access)).await.expect(200)["credentials"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.delete(&format!("{base}/{own}"), Some(&holder.access))
        .await
        .expect(204);
    app.get(base, Some(&sa)).await.expect_error(401, "unauthorized");
}

/// Who may call a team or project operation (`domain::teams`; `x-tmi-authz` is `ownership: none`
/// on all of them, so the handlers decide).
#[derive(Clone, Copy, Debug, PartialEq)]
enum OrgAccess {
    /// Any signed-in caller: the lists, creating a team, metadata.
    SignedIn,
    /// Members of the team (of a project: of its team) and administrators.
    Member,
    /// The creator and administrators.
    Creator,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum OrgWho {
    Creator,
    Member,
    Outsider,
    Admin,
    Anonymous,
}

/// One prepared team or project request.
struct OrgCase {
    path: String,
    body: Option<(&'static str, Vec<u8>)>,
    ok: u16,
    access: OrgAccess,
    /// The team or project id in `path`.
    unit: Option<String>,
    /// The note id in `path`.
    note: Option<String>,
    /// The metadata key in `path`.
    key: Option<String>,
}

struct OrgWorld {
    app: TestApp,
    creator: Session,
    member: Session,
    outsider: Session,
    admin: Session,
    member_id: String,
}

impl OrgWorld {
    fn token(&self, who: OrgWho) -> Option<&str> {
        match who {
            OrgWho::Creator => Some(&self.creator.access),
            OrgWho::Member => Some(&self.member.access),
            OrgWho::Outsider => Some(&self.outsider.access),
            OrgWho::Admin => Some(&self.admin.access),
            OrgWho::Anonymous => None,
        }
    }

    async fn create(&self, path: &str, body: Value) -> String {
        let r = self.app.post(path, Some(&self.creator.access), body).await;
        r.expect(201)["id"].as_str().unwrap().to_owned()
    }

    /// A fresh fixture for `method template` (so that destructive calls never share one).
    async fn prepare(&self, method: &Method, template: &str) -> Option<OrgCase> {
        let team = self
            .create(
                "/teams",
                json!({"name": "M", "members": [{"user_id": self.member_id}]}),
            )
            .await;
        let project_based = template.starts_with("/projects");
        let unit = if project_based && template != "/projects" {
            self.create("/projects", json!({"name": "P", "team_id": team}))
                .await
        } else {
            team.clone()
        };
        let parent = if project_based {
            format!("/projects/{unit}")
        } else {
            format!("/teams/{unit}")
        };
        let note = if template.contains("note_id}") {
            Some(
                self.create(&format!("{parent}/notes"), json!({"name": "N", "content": "c"}))
                    .await,
            )
        } else {
            None
        };
        let key = if template.ends_with("/{key}") {
            let k = unique_key();
            self.app
                .post(
                    &format!("{parent}/metadata"),
                    Some(&self.creator.access),
                    json!({"key": k, "value": "v"}),
                )
                .await
                .expect(201);
            Some(k)
        } else {
            None
        };
        let path = template
            .replace("{team_id}", &unit)
            .replace("{project_id}", &unit)
            .replace("{team_note_id}", note.as_deref().unwrap_or_default())
            .replace("{project_note_id}", note.as_deref().unwrap_or_default())
            .replace("{key}", key.as_deref().unwrap_or_default());
        let case = |body, ok, access| OrgCase {
            path: path.clone(),
            body,
            ok,
            access,
            unit: template.contains("_id}").then(|| unit.clone()),
            note: note.clone(),
            key: key.clone(),
        };
        let tail = template
            .trim_start_matches("/teams/{team_id}")
            .trim_start_matches("/projects/{project_id}");
        let replace = if project_based {
            json!({"name": "P2", "team_id": team})
        } else {
            json!({"name": "T2"})
        };
        let edit = json!([{"op": "replace", "path": "/description", "value": "d"}]);
        use OrgAccess::*;
        Some(match (method.as_str(), template, tail) {
            ("GET", "/teams" | "/projects", _) => case(None, 200, SignedIn),
            ("POST", "/teams", _) => case(json_body(json!({"name": "T"})), 201, SignedIn),
            ("POST", "/projects", _) => case(json_body(json!({"name": "P", "team_id": team})), 201, Member),
            ("GET", _, "") => case(None, 200, Member),
            ("PUT", _, "") => case(json_body(replace), 200, Member),
            ("PATCH", _, "") => case(patch_body(edit), 200, Member),
            ("DELETE", _, "") => case(None, 204, Creator),
            ("GET", _, "/metadata") => case(None, 200, SignedIn),
            ("POST", _, "/metadata") => case(
                json_body(json!({"key": unique_key(), "value": "v"})),
                201,
                SignedIn,
            ),
            ("PUT", _, "/metadata/{key}") => case(
                json_body(json!({"key": key.clone().unwrap_or_default(), "value": "w"})),
                200,
                SignedIn,
            ),
            ("DELETE", _, "/metadata/{key}") => case(None, 204, SignedIn),
            ("POST", _, "/metadata/bulk") => case(
                json_body(json!([{"key": unique_key(), "value": "v"}])),
                201,
                SignedIn,
            ),
            ("PUT", _, "/metadata/bulk") => {
                case(json_body(json!([{"key": "k", "value": "v"}])), 200, SignedIn)
            }
            ("PATCH", _, "/metadata/bulk") => case(
                json_body(
                    json!({"patches": [{"id": unit, "operations": [{"op": "add", "path": "/x", "value": "1"}]}]}),
                ),
                200,
                SignedIn,
            ),
            ("GET", _, "/notes") => case(None, 200, Member),
            ("POST", _, "/notes") => case(json_body(json!({"name": "N", "content": "c"})), 201, Member),
            ("GET", _, t) if t.starts_with("/notes/") => case(None, 200, Member),
            ("PUT", _, t) if t.starts_with("/notes/") => {
                case(json_body(json!({"name": "N2", "content": "c2"})), 200, Member)
            }
            ("PATCH", _, t) if t.starts_with("/notes/") => case(
                patch_body(json!([{"op": "replace", "path": "/name", "value": "N3"}])),
                200,
                Member,
            ),
            ("DELETE", _, t) if t.starts_with("/notes/") => case(None, 204, Member),
            _ => return None,
        })
    }
}

fn org_permitted(who: OrgWho, access: OrgAccess) -> bool {
    match who {
        OrgWho::Anonymous => false,
        OrgWho::Creator | OrgWho::Admin => true,
        OrgWho::Member => access != OrgAccess::Creator,
        OrgWho::Outsider => access == OrgAccess::SignedIn,
    }
}

/// The matrix of every team and project operation of the contract: each must be served and have a
/// fixture, and answer the team's creator, a member, an outsider, an administrator and an
/// unauthenticated caller as `domain::teams` rules; a missing team, project, note or metadata key
/// is 404 for callers who hold the access (a missing team or project: for every signed-in caller),
/// and a malformed id 400 before authentication.
async fn teams_and_projects_matrix(b: Backend) {
    let app = TestApp::spawn(b).await;
    let creator = app.login("olga").await;
    let member = app.login("mike").await;
    let outsider = app.login("otto").await;
    let admin = app.login("adam").await;
    app.add_to_group("adam", tmi_server::store::groups::ADMINISTRATORS)
        .await;
    let member_id = app
        .state
        .store
        .find_user("tmi", "mike")
        .await
        .unwrap()
        .unwrap()
        .internal_uuid
        .to_string();
    let w = OrgWorld {
        app,
        creator,
        member,
        outsider,
        admin,
        member_id,
    };
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut operations = 0;
    for t in CONTRACT.templates() {
        if !(t.starts_with("/teams") || t.starts_with("/projects")) {
            continue;
        }
        for method in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ] {
            if CONTRACT.operation(method.as_str(), &t).is_none() {
                continue;
            }
            operations += 1;
            let label = format!("{method} {t}");
            if w.prepare(&method, &t).await.is_none() {
                failures.push(format!("{label}: no fixture"));
                continue;
            }
            for who in [
                OrgWho::Creator,
                OrgWho::Member,
                OrgWho::Outsider,
                OrgWho::Admin,
                OrgWho::Anonymous,
            ] {
                let Some(c) = w.prepare(&method, &t).await else {
                    break;
                };
                let mut check = |variant: &str, got: &crate::helpers::Res, want: u16| {
                    checked += 1;
                    if got.status.as_u16() != want {
                        failures.push(format!(
                            "{label} [{variant}] as {who:?}: got {}, want {want}; body {}",
                            got.status, got.body
                        ));
                    }
                };
                let send = |path: String, body: Option<(&'static str, Vec<u8>)>| {
                    let method = method.clone();
                    let w = &w;
                    async move { w.app.send(method, &path, w.token(who), body, &[]).await }
                };
                let permitted = org_permitted(who, c.access);
                let denied = if who == OrgWho::Anonymous { 401 } else { 403 };
                let want = if permitted { c.ok } else { denied };
                check("allowed", &send(c.path.clone(), c.body.clone()).await, want);
                let signed_in = |s: u16| if who == OrgWho::Anonymous { 401 } else { s };
                if let Some(unit) = &c.unit {
                    let missing = c.path.replacen(unit, &uuid::Uuid::new_v4().to_string(), 1);
                    check(
                        "missing unit",
                        &send(missing, c.body.clone()).await,
                        signed_in(404),
                    );
                    let malformed = c.path.replacen(unit, "not-a-uuid", 1);
                    check("malformed id", &send(malformed, c.body.clone()).await, 400);
                }
                if let Some(note) = &c.note {
                    let missing = c.path.replacen(note, &uuid::Uuid::new_v4().to_string(), 1);
                    check(
                        "missing note",
                        &send(missing, c.body.clone()).await,
                        if permitted { 404 } else { denied },
                    );
                }
                if let Some(key) = &c.key {
                    let missing = c.path.replacen(&format!("/{key}"), "/no-such-key", 1);
                    let body = c.body.as_ref().map(|(ct, _)| {
                        (
                            *ct,
                            json!({"key": "no-such-key", "value": "w"})
                                .to_string()
                                .into_bytes(),
                        )
                    });
                    check("missing key", &send(missing, body).await, signed_in(404));
                }
            }
        }
    }
    assert_eq!(operations, 38, "the contract's team and project operations");
    assert!(
        failures.is_empty(),
        "{} of {checked} checks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("team and project matrix: {operations} operations, {checked} checks");

    // An administrator's service account acts as its user, never as an administrator: it sees only
    // the teams its user belongs to, and is refused the others.
    let sa = service_account(&w.app, &w.admin.access).await;
    let all = w.app.get("/teams?limit=1000", Some(&w.admin.access)).await;
    let all = all.expect(200)["total"].as_i64().unwrap();
    let admin_id = w
        .app
        .state
        .store
        .find_user("tmi", "adam")
        .await
        .unwrap()
        .unwrap()
        .internal_uuid;
    let own = w
        .app
        .get(
            &format!("/teams?member_user_id={admin_id}"),
            Some(&w.admin.access),
        )
        .await;
    let own = own.expect(200)["total"].as_i64().unwrap();
    assert!(own < all, "{own} of {all}");
    assert_eq!(
        w.app.get("/teams?limit=1000", Some(&sa)).await.expect(200)["total"],
        own
    );
    let olgas = w.app.get("/teams", Some(&w.creator.access)).await;
    let olgas_team = olgas.expect(200)["teams"][0]["id"].as_str().unwrap().to_owned();
    w.app
        .get(&format!("/teams/{olgas_team}"), Some(&sa))
        .await
        .expect_error(403, "forbidden");
}

both_backends!(
    matrix,
    owner_only_fields,
    group_and_everyone_entries,
    client_credential_operations,
    teams_and_projects_matrix
);
