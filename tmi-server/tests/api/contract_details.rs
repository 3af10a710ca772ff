//! Contract details found by schema fuzzing (issue 12, item 6): URI fields, response patterns held at
//! input, uniform optimistic locking (ETag on GET, If-Match on DELETE), racing deletes, and TMI's error
//! body on hyper's own 414 and 431.

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{Backend, TestApp};

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

pub async fn uri_fields_hold_to_format_uri(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.login("alice").await;
    let t = Some(s.access.as_str());
    // A cleared issue URI (the web client sends "") is no URI at all.
    let tm = app
        .post("/threat_models", t, json!({"name": "TM", "issue_uri": ""}))
        .await;
    let tm = tm.expect(201).clone();
    assert!(tm.get("issue_uri").is_none(), "{tm}");
    let base = format!("/threat_models/{}", id(&tm));
    let put = app
        .put(
            &base,
            t,
            json!({"name": "TM", "issue_uri": "  https://issues.example/1 "}),
        )
        .await;
    assert_eq!(put.expect(200)["issue_uri"], "https://issues.example/1");
    let patched = app
        .patch(
            &base,
            t,
            json!([{"op": "replace", "path": "/issue_uri", "value": ""}]),
        )
        .await;
    assert!(patched.expect(200).get("issue_uri").is_none());
    let threat = app
        .post(
            &format!("{base}/threats"),
            t,
            json!({"name": "T", "threat_type": [], "issue_uri": ""}),
        )
        .await;
    assert!(threat.expect(201).get("issue_uri").is_none());
    for bad in [
        "w://¡",
        "https://example.com/¡",
        "ftp://example.com/x",
        "https://exa mple.com",
    ] {
        app.post("/threat_models", t, json!({"name": "TM", "issue_uri": bad}))
            .await
            .expect_error(400, "invalid_input");
        app.post(
            &format!("{base}/threats"),
            t,
            json!({"name": "T", "threat_type": [], "issue_uri": bad}),
        )
        .await
        .expect_error(400, "invalid_input");
        app.post(&format!("{base}/documents"), t, json!({"name": "D", "uri": bad}))
            .await
            .expect_error(400, "invalid_input");
        app.post(&format!("{base}/repositories"), t, json!({"uri": bad}))
            .await
            .expect_error(400, "invalid_input");
    }
}

pub async fn names_are_held_to_the_response_pattern(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.login("alice").await;
    let t = Some(s.access.as_str());
    let tm = app
        .post("/threat_models", t, json!({"name": "TM"}))
        .await
        .expect(201)
        .clone();
    let base = format!("/threat_models/{}", id(&tm));
    for bad in ["O'Reilly", "a & b", "say \"hi\"", "x > y"] {
        app.post("/threat_models", t, json!({"name": bad}))
            .await
            .expect_error(400, "invalid_input");
        app.post(
            &format!("{base}/diagrams"),
            t,
            json!({"name": bad, "type": "DFD-1.0.0"}),
        )
        .await
        .expect_error(400, "invalid_input");
        app.post(
            &format!("{base}/threats"),
            t,
            json!({"name": bad, "threat_type": []}),
        )
        .await
        .expect_error(400, "invalid_input");
        app.patch(
            &base,
            t,
            json!([{"op": "replace", "path": "/name", "value": bad}]),
        )
        .await
        .expect_error(400, "invalid_input");
    }
    // Descriptions may hold quotes and ampersands (their pattern only forbids angle brackets).
    let ok = app
        .post(
            &format!("{base}/threats"),
            t,
            json!({"name": "T", "description": "Tom & Jerry's \"plan\"", "threat_type": []}),
        )
        .await;
    assert_eq!(ok.expect(201)["description"], "Tom & Jerry's \"plan\"");
    // Everything stored reads back within the contract (the harness validates each response).
    app.get(&base, t).await.expect(200);
}

pub async fn etags_and_if_match_are_uniform(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.login("alice").await;
    let t = Some(s.access.as_str());
    let tm = app
        .post("/threat_models", t, json!({"name": "TM"}))
        .await
        .expect(201)
        .clone();
    let base = format!("/threat_models/{}", id(&tm));
    let got = app.get(&base, t).await;
    assert_eq!(
        got.header("etag").as_deref(),
        Some("\"1\""),
        "GET sends the version"
    );
    let threat = app
        .post(
            &format!("{base}/threats"),
            t,
            json!({"name": "T", "threat_type": []}),
        )
        .await
        .expect(201)
        .clone();
    let threat_path = format!("{base}/threats/{}", id(&threat));
    app.put(&threat_path, t, json!({"name": "T2", "threat_type": []}))
        .await
        .expect(200);
    let got = app.get(&threat_path, t).await;
    assert_eq!(got.header("etag").as_deref(), Some("\"2\""));
    // A stale If-Match refuses the delete and leaves the resource in place; the current one deletes.
    for path in [&threat_path, &base] {
        let version = app.get(path, t).await.expect(200)["version"].as_i64().unwrap();
        let stale = format!("\"{}\"", version - 1 + 100);
        let res = app
            .send(reqwest::Method::DELETE, path, t, None, &[("If-Match", &stale)])
            .await;
        res.expect_error(409, "version_mismatch");
        app.get(path, t).await.expect(200);
        let current = format!("\"{version}\"");
        let res = app
            .send(reqwest::Method::DELETE, path, t, None, &[("If-Match", &current)])
            .await;
        assert_eq!(res.status.as_u16(), 204, "{}", res.body);
    }
}

pub async fn racing_deletes_answer_204_once_and_404_after(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.login("alice").await;
    let t = Some(s.access.as_str());
    let tm = app
        .post("/threat_models", t, json!({"name": "TM"}))
        .await
        .expect(201)
        .clone();
    let base = format!("/threat_models/{}", id(&tm));
    for _ in 0..5 {
        let threat = app
            .post(
                &format!("{base}/threats"),
                t,
                json!({"name": "T", "threat_type": []}),
            )
            .await
            .expect(201)
            .clone();
        let path = format!("{base}/threats/{}", id(&threat));
        let deletes = (0..6).map(|_| app.delete(&path, t));
        let mut statuses: Vec<u16> = futures::future::join_all(deletes)
            .await
            .iter()
            .map(|r| r.status.as_u16())
            .collect();
        statuses.sort_unstable();
        assert_eq!(
            statuses,
            vec![204, 404, 404, 404, 404, 404],
            "only listed statuses"
        );
    }
}

/// Sends raw bytes and reads the whole answer (the server closes the connection after these errors).
async fn raw(app: &TestApp, request: Vec<u8>) -> (u16, Value) {
    let addr = app.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before it has read everything.
    let _ = stream.write_all(&request).await;
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

pub async fn oversized_requests_get_tmis_error_body(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let long_uri = format!(
        "GET /threat_models?name={} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(70_000)
    );
    let (status, body) = raw(&app, long_uri.into_bytes()).await;
    assert_eq!(status, 414);
    assert_eq!(body["error"], "uri_too_long", "{body}");
    assert!(body["error_description"].is_string());
    let mut many = String::from("GET /threat_models HTTP/1.1\r\nHost: x\r\n");
    for i in 0..150 {
        many.push_str(&format!("X-Header-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let (status, body) = raw(&app, many.into_bytes()).await;
    assert_eq!(status, 431);
    assert_eq!(body["error"], "request_header_fields_too_large", "{body}");
}

both_backends!(
    uri_fields_hold_to_format_uri,
    names_are_held_to_the_response_pattern,
    etags_and_if_match_are_uniform,
    racing_deletes_answer_204_once_and_404_after,
    oversized_requests_get_tmis_error_body,
);
