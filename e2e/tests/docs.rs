//! `docs/reference.md`, the TmiInstance field reference, is generated from the CRD's schema (whose descriptions
//! are the doc comments on the Rust types). This test fails when the committed page is stale;
//! `TMI_UPDATE_DOCS=1 cargo test -p tmi-e2e --test docs` (or `make docs`) rewrites it.

#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

use std::fmt::Write as _;
use std::path::Path;

use kube::CustomResourceExt;
use serde_json::Value;
use tmi_operator::crd::TmiInstance;

fn type_of(schema: &Value) -> String {
    if schema.get("x-kubernetes-int-or-string").is_some() {
        return "int or string".into();
    }
    match schema["type"].as_str() {
        Some("array") => format!("[]{}", type_of(&schema["items"])),
        Some("object") if schema.get("additionalProperties").is_some() => {
            format!("map[string]{}", type_of(&schema["additionalProperties"]))
        }
        Some(t) => t.to_owned(),
        None => "object".into(),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// One table row per field, depth first, with the dotted path.
fn walk(path: &str, schema: &Value, required: &[&str], out: &mut String) {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, prop) in props {
        let p = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        let req = if required.contains(&name.as_str()) {
            "yes"
        } else {
            ""
        };
        let desc = one_line(prop["description"].as_str().unwrap_or_default());
        let mut extra = Vec::new();
        if let Some(e) = prop.get("enum").and_then(Value::as_array) {
            extra.push(format!(
                "One of: {}.",
                e.iter()
                    .map(|v| format!("`{}`", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        for rule in prop
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(m) = rule["message"].as_str() {
                extra.push(format!("Rule: {}.", one_line(m).trim_end_matches('.')));
            }
        }
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!(" {}", extra.join(" "))
        };
        writeln!(out, "| `{p}` | {} | {req} | {desc}{extra} |", type_of(prop)).unwrap();
        let inner = if prop["type"] == "array" {
            &prop["items"]
        } else {
            prop
        };
        let inner_required: Vec<&str> = inner["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let child = if prop["type"] == "array" {
            format!("{p}[]")
        } else {
            p
        };
        walk(&child, inner, &inner_required, out);
    }
}

fn render() -> String {
    let crd = serde_json::to_value(TmiInstance::crd()).unwrap();
    let version = &crd["spec"]["versions"][0];
    let schema = &version["schema"]["openAPIV3Schema"];
    let mut out = String::new();
    writeln!(out, "# TmiInstance reference\n").unwrap();
    writeln!(
        out,
        "<!-- Generated from the CRD by e2e/tests/docs.rs (`make docs`); do not edit by hand. -->\n\n\
         `{}/{}`, kind `TmiInstance`, namespaced, short name `tmi`. Every field below is optional unless marked \
         required; the CRD has no defaults in `spec` (no GitOps drift): the values the operator actually uses \
         are reported in `status.effective`. `kubectl explain tmi.spec --recursive` shows the same text.\n",
        crd["spec"]["group"].as_str().unwrap(),
        version["name"].as_str().unwrap()
    )
    .unwrap();
    let rules: Vec<String> = schema["properties"]["spec"]["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|rule| one_line(rule["message"].as_str().unwrap_or_default()))
        .collect();
    if !rules.is_empty() {
        writeln!(out, "Cross-field rules on `spec`, checked at admission:\n").unwrap();
        for rule in rules {
            writeln!(out, "- {rule}").unwrap();
        }
    }
    for section in ["spec", "status"] {
        writeln!(
            out,
            "\n## {section}\n\n| Field | Type | Required | Description |\n|---|---|---|---|"
        )
        .unwrap();
        let s = &schema["properties"][section];
        let required: Vec<&str> = s["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        walk(section, s, &required, &mut out);
    }
    out
}

#[test]
fn reference_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/reference.md");
    let want = render();
    if std::env::var_os("TMI_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &want).unwrap();
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(have == want, "docs/reference.md is stale; run `make docs`");
}
