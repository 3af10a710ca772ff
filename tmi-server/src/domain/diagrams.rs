//! Diagram rules (tmi-compat.md §1.5): cells normalized to nested geometry, `update_vector`
//! bumped when cells change, image `update_vector` defaulting to the diagram's, palette colours
//! lower-cased. Pure.

use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// Flat `x, y, width, height` on a node become `position {x, y}` and `size {width, height}`.
pub fn normalize_cell(cell: &mut Value) {
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

/// Applies the diagram rules to a new document, given the stored one.
pub fn finish(doc: &mut Map<String, Value>, previous: &Map<String, Value>) -> Result<(), ApiError> {
    let mut cells = doc.get("cells").cloned().unwrap_or_else(|| json!([]));
    if let Value::Array(items) = &mut cells {
        if items.len() > 10_000 {
            return Err(ApiError::invalid("A diagram holds at most 10000 cells"));
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
