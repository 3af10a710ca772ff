//! Stored XSS: every vector of `tests/fixtures/xss-vectors.txt` (OWASP filter-evasion cheat sheet, issue
//! 12's tag-splicing payloads, Markdown links) is sent through every path that writes text (create, PUT,
//! JSON Patch) into names, descriptions, mitigations and note content. Each answer is a 2xx or a 400, and
//! nothing executable is answered or stored: no active element, no `on…=` attribute, no `javascript:`,
//! `vbscript:` or `data:text/html` URL in a tag, no Markdown link or image with such a destination.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Value, json};

use crate::helpers::{Backend, Res, TestApp};

fn vectors() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/xss-vectors.txt");
    std::fs::read_to_string(path)
        .expect("read the XSS fixture")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("# "))
        .map(|l| l.replace("\\n", "\n"))
        .collect()
}

/// Elements that are active by themselves, whatever their attributes.
const ACTIVE: &[&str] = &[
    "script", "svg", "iframe", "object", "embed", "style", "link", "meta", "base", "form", "math", "frame",
    "frameset", "applet", "template", "body", "bgsound", "isindex", "video", "audio", "marquee", "button",
];

static TAG: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?s)<[A-Za-z/!?][^>]*>?").unwrap());
static HANDLER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r#"(?i)[\s/"'`]on[a-z]+\s*="#).unwrap());
static ENTITY: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)&#(x[0-9a-f]+|[0-9]+);?").unwrap());

/// `s` as a URL parser would read it: numeric and a few named entities decoded, lower-cased, without
/// whitespace and control characters.
fn normalized(s: &str) -> String {
    let decoded = ENTITY.replace_all(s, |c: &regex::Captures| {
        let n = &c[1];
        let code = match n.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16),
            None => n.parse::<u32>(),
        };
        code.ok()
            .and_then(char::from_u32)
            .map(String::from)
            .unwrap_or_default()
    });
    decoded
        .replace("&colon;", ":")
        .replace("&tab;", "")
        .replace("&newline;", "")
        .to_lowercase()
        .chars()
        .filter(|c| !c.is_whitespace() && !c.is_control())
        .collect()
}

fn dangerous_url(s: &str) -> bool {
    let n = normalized(s);
    ["javascript:", "vbscript:", "data:text/html", "expression("]
        .iter()
        .any(|p| n.contains(p))
}

/// What is executable in `s`, read both as HTML and as Markdown.
fn executable(s: &str) -> Vec<String> {
    let mut found = Vec::new();
    for tag in TAG.find_iter(s).map(|m| m.as_str()) {
        let name: String = tag
            .trim_start_matches(['<', '/'])
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_lowercase();
        if ACTIVE.contains(&name.as_str()) {
            found.push(format!("active element in {tag:?}"));
        }
        if HANDLER.is_match(tag) {
            found.push(format!("event handler in {tag:?}"));
        }
        if dangerous_url(tag) {
            found.push(format!("script URL in {tag:?}"));
        }
    }
    for event in pulldown_cmark::Parser::new_ext(s, pulldown_cmark::Options::all()) {
        if let pulldown_cmark::Event::Start(
            pulldown_cmark::Tag::Link { dest_url, .. } | pulldown_cmark::Tag::Image { dest_url, .. },
        ) = event
            && (dangerous_url(&dest_url) || normalized(&dest_url).starts_with("data:"))
        {
            found.push(format!("Markdown destination {dest_url:?}"));
        }
    }
    found
}

/// Every string in `v`, with its JSON path.
fn strings<'a>(v: &'a Value, path: String, out: &mut Vec<(String, &'a str)>) {
    match v {
        Value::String(s) => out.push((path, s)),
        Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                strings(x, format!("{path}/{i}"), out);
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                strings(x, format!("{path}/{k}"), out);
            }
        }
        _ => {}
    }
}

#[track_caller]
fn assert_safe(what: &str, vector: &str, res: &Res) {
    let status = res.status.as_u16();
    assert!(
        (200..300).contains(&status) || status == 400,
        "{what} with {vector:?}: {status} {}",
        res.body
    );
    if status == 400 {
        // Refused: nothing was stored (the error description may quote the input; it is JSON, not HTML).
        return;
    }
    let mut all = Vec::new();
    strings(&res.body, String::new(), &mut all);
    for (path, s) in all {
        let found = executable(s);
        assert!(
            found.is_empty(),
            "{what} with {vector:?} answered {path} = {s:?}: {found:?}"
        );
    }
}

pub async fn xss_vectors_never_store_executable_content(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.login("alice").await;
    let t = Some(s.access.as_str());
    let tm = app
        .post("/threat_models", t, json!({"name": "XSS"}))
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let base = format!("/threat_models/{tm}");
    let note = app
        .post(
            &format!("{base}/notes"),
            t,
            json!({"name": "n", "content": "safe"}),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let threat = app
        .post(
            &format!("{base}/threats"),
            t,
            json!({"name": "t", "threat_type": []}),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let vectors = vectors();
    assert!(vectors.len() > 90, "the fixture is read");
    let mut stored = 0;
    for v in &vectors {
        let text = json!({"name": v, "description": v});
        let r = app.post("/threat_models", t, text.clone()).await;
        assert_safe("POST /threat_models", v, &r);
        let r = app
            .post(&format!("{base}/notes"), t, json!({"name": "n", "content": v}))
            .await;
        stored += usize::from(r.status.is_success());
        assert_safe("POST notes", v, &r);
        let r = app
            .post(
                &format!("{base}/threats"),
                t,
                json!({"name": v, "description": v, "mitigation": v, "threat_type": []}),
            )
            .await;
        assert_safe("POST threats", v, &r);
        let r = app
            .put(
                &format!("{base}/notes/{note}"),
                t,
                json!({"name": "n", "content": v}),
            )
            .await;
        assert_safe("PUT note", v, &r);
        let replace = |path: &str| json!([{"op": "replace", "path": path, "value": v}]);
        let r = app
            .patch(&format!("{base}/notes/{note}"), t, replace("/content"))
            .await;
        assert_safe("PATCH note content", v, &r);
        let r = app.patch(&base, t, replace("/description")).await;
        assert_safe("PATCH threat model description", v, &r);
        let r = app.patch(&base, t, replace("/name")).await;
        assert_safe("PATCH threat model name", v, &r);
        let r = app
            .patch(&format!("{base}/threats/{threat}"), t, replace("/mitigation"))
            .await;
        assert_safe("PATCH threat mitigation", v, &r);
    }
    assert!(
        stored > vectors.len() / 2,
        "most vectors are stored as sanitized Markdown, not refused ({stored} stored)"
    );
    // What is stored, read back.
    let r = app.get(&base, t).await;
    assert_safe("GET threat model", "(stored)", &r);
    let r = app.get("/threat_models?limit=100", t).await;
    assert_safe("GET /threat_models", "(stored)", &r);
    let r = app.get(&format!("{base}/notes?limit=100"), t).await;
    assert_safe("GET notes", "(stored)", &r);
}

pub async fn markdown_and_plain_text_survive_sanitizing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.login("alice").await;
    let t = Some(s.access.as_str());
    let tm = app
        .post(
            "/threat_models",
            t,
            json!({"name": "<b>Payments</b> API", "description": "Tom & Jerry's \"plan\""}),
        )
        .await;
    let tm = tm.expect(201);
    assert_eq!(tm["name"], "Payments API", "tags go, their text stays");
    assert_eq!(
        tm["description"], "Tom & Jerry's \"plan\"",
        "text is not turned into entities"
    );
    let md = "# Notes\n\n> quoted a < b && c\n\n```rust\nlet v: Vec<String> = a.iter().collect();\nif a<b && c>d {}\n```\n\nSee <https://example.com/x> and `Option<u8>`, **bold** <em>em</em>.\n";
    let note = app
        .post(
            &format!("/threat_models/{}/notes", tm["id"].as_str().unwrap()),
            t,
            json!({"name": "n", "content": md}),
        )
        .await;
    assert_eq!(note.expect(201)["content"], md, "Markdown is kept byte for byte");
}

both_backends!(
    xss_vectors_never_store_executable_content,
    markdown_and_plain_text_survive_sanitizing
);
