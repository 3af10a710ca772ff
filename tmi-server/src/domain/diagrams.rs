//! Diagram rules (tmi-compat.md §1.5): the one check every cell passes however it arrives (REST
//! PUT and PATCH, WebSocket operations), `update_vector` bumped when cells change, image
//! `update_vector` defaulting to the diagram's, palette colours lower-cased. Pure.

use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::input;
use crate::openapi::Spec;

/// Fields whose string values are X6 enums, at any depth of a cell: upstream's enum normalizer
/// (tmi-compat.md §8) rewrites these with the rest of its list (`input::normalize_enums`), so
/// `"Middle"` becomes `middle` and a port group's `"Left"` becomes `left`. (`jump`, `textAnchor`
/// and `textVerticalAnchor` are on `input`'s list too; `shape` and `position` are normalized only
/// inside cells, where they are X6's.) Non-string values (`position {x, y}`, a label's numeric
/// `position`) are left alone.
const X6_ENUM_FIELDS: &[&str] = &["shape", "position", "textAnchor", "textVerticalAnchor", "jump"];

fn normalize_x6_enums(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if X6_ENUM_FIELDS.contains(&k.as_str())
                    && let Value::String(s) = child
                {
                    *s = input::normalize_enum(s);
                } else {
                    normalize_x6_enums(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize_x6_enums),
        _ => {}
    }
}

/// Normalizes a cell as upstream does before validating it: enum values (`input::normalize_enums`
/// and the X6 fields above) in snake_case, and a node's flat `x, y, width, height` as
/// `position {x, y}` and `size {width, height}`. Idempotent.
pub fn normalize_cell(cell: &mut Value) {
    input::normalize_enums(cell);
    normalize_x6_enums(cell);
    let Value::Object(m) = cell else { return };
    if m.get("shape").and_then(Value::as_str) == Some("flow") {
        return;
    }
    if let (Some(x), Some(y)) = (m.get("x").cloned(), m.get("y").cloned()) {
        m.remove("x");
        m.remove("y");
        m.entry("position").or_insert_with(|| json!({"x": x, "y": y}));
    }
    if let (Some(w), Some(h)) = (m.get("width").cloned(), m.get("height").cloned()) {
        m.remove("width");
        m.remove("height");
        m.entry("size")
            .or_insert_with(|| json!({"width": w, "height": h}));
    }
}

/// Most cells one diagram holds (`DfdDiagramInput.cells.maxItems`).
pub const MAX_CELLS: usize = 10_000;

/// The one validation and normalization of a diagram cell, for REST and WebSocket writes alike:
/// normalizes it (`normalize_cell`), then checks it against the contract's `Edge` (shape `flow`)
/// or `Node` schema, with the X6 attributes the server accepts beyond the contract
/// (`openapi::extend`). A cell that passes here is accepted by every later REST save. The error is
/// a readable message.
pub fn check_cell(spec: &Spec, cell: &mut Value) -> Result<(), String> {
    if !cell.is_object() {
        return Err("a cell must be an object".into());
    }
    normalize_cell(cell);
    if input::contains_nul(cell) {
        return Err("cell strings must not contain NUL characters".into());
    }
    let schema = match cell.get("shape").and_then(Value::as_str) {
        Some("flow") => "Edge",
        _ => "Node",
    };
    spec.validate_component(schema, cell).map_err(|errors| {
        let id = cell.get("id").and_then(Value::as_str).unwrap_or("?");
        format!("cell {id} is not a valid {schema}: {}", errors.join("; "))
    })
}

/// `check_cell` for every cell of a REST write, as a 400.
pub fn check_cells(spec: &Spec, cells: &mut [Value]) -> Result<(), ApiError> {
    if cells.len() > MAX_CELLS {
        return Err(ApiError::invalid(format!(
            "A diagram holds at most {MAX_CELLS} cells"
        )));
    }
    for c in cells.iter_mut() {
        check_cell(spec, c).map_err(ApiError::invalid)?;
    }
    Ok(())
}

/// Applies the diagram rules to a new document, given the stored one.
pub fn finish(doc: &mut Map<String, Value>, previous: &Map<String, Value>) -> Result<(), ApiError> {
    let mut cells = doc.get("cells").cloned().unwrap_or_else(|| json!([]));
    if let Value::Array(items) = &mut cells {
        if items.len() > MAX_CELLS {
            return Err(ApiError::invalid(format!(
                "A diagram holds at most {MAX_CELLS} cells"
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for c in items.iter_mut() {
            normalize_cell(c);
            if let Some(id) = c.get("id").and_then(Value::as_str)
                && !seen.insert(id.to_owned())
            {
                return Err(ApiError::invalid(format!("Duplicate cell id {id}")));
            }
        }
    } else {
        return Err(ApiError::invalid("cells must be an array"));
    }
    let old_vector = previous.get("update_vector").and_then(Value::as_i64).unwrap_or(0);
    let vector = if previous.get("cells") != Some(&cells) {
        old_vector + 1
    } else {
        old_vector
    };
    doc.insert("cells".into(), cells);
    doc.insert("update_vector".into(), json!(vector));
    if let Some(Value::Object(image)) = doc.get_mut("image") {
        if let Some(svg) = image.get("svg").and_then(Value::as_str)
            && svg.len() > 100 * 1024 * 4 / 3 + 4
        {
            return Err(ApiError::invalid("image.svg exceeds 100 KiB"));
        }
        if image.get("svg").is_some() && image.get("update_vector").is_none_or(Value::is_null) {
            image.insert("update_vector".into(), json!(vector));
        }
    }
    if let Some(Value::Array(palette)) = doc.get_mut("color_palette") {
        for entry in palette {
            if let Some(Value::String(c)) = entry.get_mut("color") {
                let lower = c.to_lowercase();
                *c = if lower.len() == 4 {
                    let b = lower.as_bytes();
                    format!("#{0}{0}{1}{1}{2}{2}", b[1] as char, b[2] as char, b[3] as char)
                } else {
                    lower
                };
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_geometry_is_nested() {
        let mut c = json!({"id": "a", "shape": "process", "x": 1, "y": 2, "width": 80, "height": 40});
        normalize_cell(&mut c);
        assert_eq!(
            c,
            json!({"id": "a", "shape": "process", "position": {"x": 1, "y": 2}, "size": {"width": 80, "height": 40}})
        );
    }

    #[test]
    fn cells_are_normalized_then_checked_against_the_contract() {
        let spec = Spec::embedded().unwrap();
        let node = "6f1c3a0e-0000-4000-8000-000000000001";
        let mut edge = json!({"id": "6f1c3a0e-0000-4000-8000-000000000002", "shape": "Flow",
            "source": {"cell": node}, "target": {"cell": node},
            "connector": {"name": "jumpover", "args": {"jump": "Arc"}},
            "labels": [{"attrs": {"text": {"text": "x", "textAnchor": " Middle", "textVerticalAnchor": "Top"}},
                "position": 0.5}]});
        check_cell(&spec, &mut edge).unwrap();
        assert_eq!(edge["shape"], "flow");
        assert_eq!(edge["connector"]["args"]["jump"], "arc");
        assert_eq!(
            edge["labels"][0],
            json!({"attrs": {"text": {"text": "x", "textAnchor": "middle", "textVerticalAnchor": "top"}},
                "position": 0.5}),
            "a numeric position is left alone"
        );
        let mut actor = json!({"id": node, "shape": "Actor", "x": 1, "y": 2, "width": 40, "height": 30,
            "ports": {"groups": {"in": {"position": "Left"}}, "items": [{"id": "p", "group": "in"}]},
            "data": {"status": "In Review"}});
        check_cell(&spec, &mut actor).unwrap();
        assert_eq!(actor["shape"], "actor");
        assert_eq!(actor["position"], json!({"x": 1, "y": 2}));
        assert_eq!(actor["ports"]["groups"]["in"]["position"], "left");
        assert_eq!(
            actor["data"]["status"], "in_review",
            "upstream normalizes at any depth"
        );
        let again = actor.clone();
        check_cell(&spec, &mut actor).unwrap();
        assert_eq!(actor, again, "idempotent");

        for mut bad in [
            json!({"id": node, "shape": "cloud"}),
            json!({"id": "n1", "shape": "process"}),
            json!({"id": node, "shape": "process", "width": 10, "height": 10, "x": 0, "y": 0}),
            json!({"id": node, "shape": "flow", "source": {"cell": node}, "target": {"cell": node},
                "labels": [{"attrs": {"text": {"textAnchor": "left"}}}]}),
            json!({"id": node, "shape": "process", "data": {"note": "a\u{0}b"}}),
            json!([node]),
        ] {
            assert!(check_cell(&spec, &mut bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn update_vector_and_image() {
        let prev = json!({"cells": [], "update_vector": 0})
            .as_object()
            .cloned()
            .unwrap();
        let mut doc = json!({"cells": [{"id": "a", "shape": "actor"}], "image": {"svg": "PHN2Zz4="},
            "color_palette": [{"position": 1, "color": "#ABC"}]})
        .as_object()
        .cloned()
        .unwrap();
        finish(&mut doc, &prev).unwrap();
        assert_eq!(doc["update_vector"], 1);
        assert_eq!(doc["image"]["update_vector"], 1);
        assert_eq!(doc["color_palette"][0]["color"], "#aabbcc");
        let mut same = doc.clone();
        finish(&mut same, &doc).unwrap();
        assert_eq!(same["update_vector"], 1, "unchanged cells keep the vector");
    }
}
