//! The TMI OpenAPI contract as data: the operation table (content types, request schemas, path
//! parameters, `x-tmi-authz`) and JSON-Schema validators for its component schemas. Pure (the
//! document is embedded); validators are compiled lazily and cached.
//!
//! OpenAPI 3.0 schemas are JSON Schema draft 4 plus `nullable`; `convert` rewrites `nullable` into
//! draft-4 `type` arrays so a stock validator can check them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};

/// The served copy of the contract.
pub const DOCUMENT: &str = include_str!("../api/tmi-openapi.json");

/// Minimum role an operation requires on the parent threat model (`x-tmi-authz.ownership`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ownership {
    None,
    Reader,
    Writer,
    Owner,
}

/// One query or path parameter.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub location: String,
    pub schema: Value,
}

/// What the gate needs to know about one operation.
#[derive(Debug, Clone)]
pub struct Operation {
    pub id: String,
    /// Request content types (without parameters), empty when the operation takes no body.
    pub content_types: Vec<String>,
    pub body_required: bool,
    /// Request schema per content type.
    pub request_schemas: HashMap<String, Value>,
    pub params: Vec<Param>,
    pub ownership: Ownership,
    pub public: bool,
    pub admin_only: bool,
    /// `x-tmi-authz.subject_authority: invoker`: service-account tokens are refused (403).
    pub invoker_only: bool,
    /// Response schema per status code (for `application/json`).
    pub response_schemas: HashMap<String, Value>,
}

/// A validation failure, as a readable message.
pub type SchemaErrors = Vec<String>;

/// The parsed contract.
pub struct Spec {
    components: Value,
    operations: HashMap<(String, String), Arc<Operation>>,
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
    /// `property_names` of each component asked for (walking `allOf`/`$ref` on every request showed
    /// in the API benchmark's profile).
    property_names: Mutex<HashMap<String, Arc<Vec<String>>>>,
    /// The validator of each (component, property) `validate_properties` met; `None` when the
    /// component does not name the property.
    property_validators: Mutex<PropertyValidators>,
    pub version: String,
}

type PropertyValidators = HashMap<(String, String), Option<Arc<jsonschema::Validator>>>;

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spec")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Rewrites OpenAPI 3.0 `nullable` into JSON Schema draft 4.
pub fn convert(v: &mut Value) {
    match v {
        Value::Array(items) => items.iter_mut().for_each(convert),
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                // `example`s are data, not schemas.
                if k != "example" && k != "examples" {
                    convert(child);
                }
            }
            if map.remove("nullable") == Some(Value::Bool(true)) {
                if let Some(enum_values) = map.get_mut("enum").and_then(Value::as_array_mut) {
                    enum_values.push(Value::Null);
                }
                match map.get("type").cloned() {
                    Some(Value::String(t)) => {
                        map.insert("type".into(), json!([t, "null"]));
                    }
                    _ => {
                        let inner = Value::Object(std::mem::take(map));
                        map.insert("anyOf".into(), json!([{"type": "null"}, inner]));
                    }
                }
            }
        }
        _ => {}
    }
}

/// What the server accepts beyond the letter of the contract, because the real web client sends
/// it (docs/server.md, "Differences from the contract"): tmi-ux 1.13 gives every new edge label
/// `attrs.text.textAnchor` and `textVerticalAnchor`, which `EdgeLabel` (with
/// `additionalProperties: false`) does not list although `NodeAttrs.text` does and upstream's enum
/// normalizer rewrites them (tmi-compat.md §8). Edge labels accept them with `NodeAttrs`'
/// definitions, so requests, stored cells and responses all validate.
fn extend(components: &mut Value) {
    let node_text = components
        .pointer("/schemas/NodeAttrs/properties/text/properties")
        .cloned()
        .unwrap_or(Value::Null);
    let Some(label_text) = components
        .pointer_mut("/schemas/EdgeLabel/properties/attrs/properties/text/properties")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for field in ["textAnchor", "textVerticalAnchor"] {
        if let Some(schema) = node_text.get(field) {
            label_text.entry(field).or_insert_with(|| schema.clone());
        }
    }
}

fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .strip_prefix('#')
            .and_then(|p| doc.pointer(p))
            .map(|t| resolve(doc, t))
            .unwrap_or(v),
        None => v,
    }
}

impl Spec {
    /// Parses an OpenAPI document.
    pub fn from_json(text: &str) -> anyhow::Result<Self> {
        let doc: Value = serde_json::from_str(text)?;
        let version = doc
            .pointer("/info/version")
            .and_then(Value::as_str)
            .unwrap_or("0.0.0")
            .to_owned();
        let mut operations = HashMap::new();
        let empty = Map::new();
        for (path, item) in doc.get("paths").and_then(Value::as_object).unwrap_or(&empty) {
            let shared_params: Vec<Value> = item
                .get("parameters")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for (method, op) in item.as_object().unwrap_or(&empty) {
                if method == "parameters" || !op.is_object() {
                    continue;
                }
                let mut params = Vec::new();
                let own = op
                    .get("parameters")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for p in shared_params.iter().chain(own.iter()) {
                    let p = resolve(&doc, p);
                    let (Some(name), Some(location)) = (
                        p.get("name").and_then(Value::as_str),
                        p.get("in").and_then(Value::as_str),
                    ) else {
                        continue;
                    };
                    let mut schema = p.get("schema").cloned().unwrap_or(Value::Null);
                    convert(&mut schema);
                    params.push(Param {
                        name: name.to_owned(),
                        location: location.to_owned(),
                        schema,
                    });
                }
                let body = op.get("requestBody").map(|b| resolve(&doc, b));
                let mut request_schemas = HashMap::new();
                if let Some(content) = body.and_then(|b| b.get("content")).and_then(Value::as_object) {
                    for (ct, media) in content {
                        let mut schema = media.get("schema").cloned().unwrap_or(Value::Null);
                        convert(&mut schema);
                        request_schemas.insert(ct.clone(), schema);
                    }
                }
                let mut content_types: Vec<String> = request_schemas.keys().cloned().collect();
                content_types.sort();
                let mut response_schemas = HashMap::new();
                if let Some(responses) = op.get("responses").and_then(Value::as_object) {
                    for (code, r) in responses {
                        let r = resolve(&doc, r);
                        if let Some(s) = r.pointer("/content/application~1json/schema") {
                            let mut s = s.clone();
                            convert(&mut s);
                            response_schemas.insert(code.clone(), s);
                        }
                    }
                }
                let authz = op.get("x-tmi-authz");
                let ownership = match authz.and_then(|a| a.get("ownership")).and_then(Value::as_str) {
                    Some("reader") => Ownership::Reader,
                    Some("writer") => Ownership::Writer,
                    Some("owner") => Ownership::Owner,
                    _ => Ownership::None,
                };
                let public = authz
                    .and_then(|a| a.get("public"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
                    || op
                        .get("security")
                        .and_then(Value::as_array)
                        .is_some_and(|s| s.is_empty());
                let admin_only = authz
                    .and_then(|a| a.get("roles"))
                    .and_then(Value::as_array)
                    .is_some_and(|r| r.iter().any(|x| x == "admin"));
                let invoker_only = authz
                    .and_then(|a| a.get("subject_authority"))
                    .and_then(Value::as_str)
                    == Some("invoker");
                operations.insert(
                    (method.to_uppercase(), path.clone()),
                    Arc::new(Operation {
                        id: op
                            .get("operationId")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        content_types,
                        body_required: body
                            .and_then(|b| b.get("required"))
                            .and_then(Value::as_bool)
                            .unwrap_or(false),
                        request_schemas,
                        params,
                        ownership,
                        public,
                        admin_only,
                        invoker_only,
                        response_schemas,
                    }),
                );
            }
        }
        let mut components = doc.get("components").cloned().unwrap_or(Value::Null);
        convert(&mut components);
        extend(&mut components);
        Ok(Self {
            components,
            operations,
            validators: Mutex::new(HashMap::new()),
            property_names: Mutex::new(HashMap::new()),
            property_validators: Mutex::new(HashMap::new()),
            version,
        })
    }

    /// The embedded contract.
    pub fn embedded() -> anyhow::Result<Self> {
        Self::from_json(DOCUMENT)
    }

    /// The operation for a method and a path template (`/threat_models/{threat_model_id}`).
    pub fn operation(&self, method: &str, template: &str) -> Option<Arc<Operation>> {
        self.operations
            .get(&(method.to_uppercase(), template.to_owned()))
            .cloned()
    }

    /// Every path template of the contract.
    pub fn templates(&self) -> Vec<String> {
        let mut t: Vec<String> = self.operations.keys().map(|(_, p)| p.clone()).collect();
        t.sort();
        t.dedup();
        t
    }

    /// The template a concrete path matches, preferring literal segments over parameters.
    pub fn template_for(&self, path: &str) -> Option<String> {
        let segs: Vec<&str> = path.split('/').collect();
        self.templates()
            .into_iter()
            .filter_map(|t| {
                let ts: Vec<&str> = t.split('/').collect();
                if ts.len() != segs.len() {
                    return None;
                }
                let mut literal = 0;
                for (a, b) in ts.iter().zip(&segs) {
                    if a.starts_with('{') {
                        continue;
                    }
                    if a != b {
                        return None;
                    }
                    literal += 1;
                }
                Some((literal, t))
            })
            .max_by_key(|(l, _)| *l)
            .map(|(_, t)| t)
    }

    /// Validates `value` against a converted schema (inline or `$ref`), caching the validator.
    pub fn validate(&self, cache_key: &str, schema: &Value, value: &Value) -> Result<(), SchemaErrors> {
        let validator = self.validator(cache_key, schema).map_err(|e| vec![e])?;
        let errors: Vec<String> = validator
            .iter_errors(value)
            .take(5)
            .map(|e| error_text(&e))
            .collect();
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    /// Validates `value` against `#/components/schemas/<name>`.
    pub fn validate_component(&self, name: &str, value: &Value) -> Result<(), SchemaErrors> {
        let validator = self
            .validator_with(
                &format!("component:{name}"),
                || json!({"$ref": format!("#/components/schemas/{name}")}),
            )
            .map_err(|e| vec![e])?;
        let errors: Vec<String> = validator
            .iter_errors(value)
            .take(5)
            .map(|e| error_text(&e))
            .collect();
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    /// Property names of a component schema, following `allOf` and `$ref`; computed once per
    /// component.
    pub fn property_names(&self, name: &str) -> Arc<Vec<String>> {
        if let Ok(cache) = self.property_names.lock()
            && let Some(names) = cache.get(name)
        {
            return names.clone();
        }
        let names = Arc::new(self.collect_property_names(name));
        if let Ok(mut cache) = self.property_names.lock() {
            cache.insert(name.to_owned(), names.clone());
        }
        names
    }

    fn collect_property_names(&self, name: &str) -> Vec<String> {
        fn collect(components: &Value, schema: &Value, out: &mut Vec<String>) {
            if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
                if let Some(target) = r
                    .strip_prefix("#/components/")
                    .and_then(|p| components.pointer(&format!("/{p}")))
                {
                    collect(components, target, out);
                }
                return;
            }
            for key in ["allOf", "anyOf"] {
                if let Some(parts) = schema.get(key).and_then(Value::as_array) {
                    parts.iter().for_each(|p| collect(components, p, out));
                }
            }
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for k in props.keys() {
                    if !out.contains(k) {
                        out.push(k.clone());
                    }
                }
            }
        }
        let mut out = Vec::new();
        if let Some(schema) = self.components.pointer(&format!("/schemas/{name}")) {
            collect(&self.components, schema, &mut out);
        }
        out
    }

    /// The schema of property `prop` of a component schema, following `allOf`, `anyOf` and `$ref`.
    pub fn property_schema(&self, name: &str, prop: &str) -> Option<Value> {
        fn find(components: &Value, schema: &Value, prop: &str) -> Option<Value> {
            if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
                let target = r
                    .strip_prefix("#/components/")
                    .and_then(|p| components.pointer(&format!("/{p}")))?;
                return find(components, target, prop);
            }
            if let Some(s) = schema.pointer(&format!("/properties/{prop}")) {
                return Some(s.clone());
            }
            ["allOf", "anyOf"]
                .iter()
                .filter_map(|k| schema.get(*k).and_then(Value::as_array))
                .flatten()
                .find_map(|p| find(components, p, prop))
        }
        let schema = self.components.pointer(&format!("/schemas/{name}"))?;
        find(&self.components, schema, prop)
    }

    /// Validates each string member of `fields` that component `name` names against that property's schema
    /// (pattern, length): a text a write stores must satisfy the response schema it is read back through.
    pub fn validate_properties(&self, name: &str, fields: &Map<String, Value>) -> Result<(), SchemaErrors> {
        let mut errors = Vec::new();
        for (k, v) in fields.iter().filter(|(_, v)| v.is_string()) {
            let Some(validator) = self.property_validator(name, k).map_err(|e| vec![e])? else {
                continue;
            };
            errors.extend(
                validator
                    .iter_errors(v)
                    .take(5)
                    .map(|e| format!("{k}: {}", error_text(&e))),
            );
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    /// The cached validator of property `prop` of component `name` (`None`: no such property).
    fn property_validator(
        &self,
        name: &str,
        prop: &str,
    ) -> Result<Option<Arc<jsonschema::Validator>>, String> {
        let key = (name.to_owned(), prop.to_owned());
        if let Ok(cache) = self.property_validators.lock()
            && let Some(v) = cache.get(&key)
        {
            return Ok(v.clone());
        }
        let validator = match self.property_schema(name, prop) {
            Some(schema) => Some(self.validator(&format!("property:{name}:{prop}"), &schema)?),
            None => None,
        };
        if let Ok(mut cache) = self.property_validators.lock() {
            cache.insert(key, validator.clone());
        }
        Ok(validator)
    }

    fn validator(&self, key: &str, schema: &Value) -> Result<Arc<jsonschema::Validator>, String> {
        self.validator_with(key, || schema.clone())
    }

    /// The cached validator under `key`, compiled from `schema()` on first use.
    fn validator_with(
        &self,
        key: &str,
        schema: impl FnOnce() -> Value,
    ) -> Result<Arc<jsonschema::Validator>, String> {
        let mut cache = self
            .validators
            .lock()
            .map_err(|_| "validator cache poisoned".to_owned())?;
        if let Some(v) = cache.get(key) {
            return Ok(v.clone());
        }
        let mut root = match schema() {
            Value::Object(m) => m,
            other => {
                let mut m = Map::new();
                m.insert("allOf".into(), json!([other]));
                m
            }
        };
        root.insert("components".into(), self.components.clone());
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft4)
            .should_validate_formats(false)
            .build(&Value::Object(root))
            .map_err(|e| format!("schema {key} does not compile: {e}"))?;
        let validator = Arc::new(validator);
        cache.insert(key.to_owned(), validator.clone());
        Ok(validator)
    }
}

/// A validation error with the path of the offending value, when not the root.
fn error_text(e: &jsonschema::ValidationError<'_>) -> String {
    let at = e.instance_path().to_string();
    if at.is_empty() {
        e.to_string()
    } else {
        format!("{at}: {e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nullable_becomes_type_array() {
        let mut s = json!({"type": "string", "nullable": true, "enum": ["a"]});
        convert(&mut s);
        assert_eq!(s, json!({"type": ["string", "null"], "enum": ["a", null]}));
        let mut s = json!({"allOf": [{"$ref": "#/x"}], "nullable": true});
        convert(&mut s);
        assert_eq!(
            s,
            json!({"anyOf": [{"type": "null"}, {"allOf": [{"$ref": "#/x"}]}]})
        );
    }

    #[test]
    fn embedded_spec_has_operations_and_authz() {
        let spec = Spec::embedded().unwrap();
        let op = spec
            .operation("patch", "/threat_models/{threat_model_id}")
            .unwrap();
        assert_eq!(op.content_types, vec!["application/json-patch+json"]);
        assert_eq!(op.ownership, Ownership::Writer);
        assert!(spec.operation("GET", "/oauth2/providers").unwrap().public);
        assert!(!spec.operation("GET", "/me").unwrap().public);
    }

    #[test]
    fn validates_components() {
        let spec = Spec::embedded().unwrap();
        assert!(
            spec.validate_component("Metadata", &json!({"key": "a", "value": "b"}))
                .is_ok()
        );
        assert!(
            spec.validate_component("Metadata", &json!({"key": "a", "value": "b", "x": 1}))
                .is_err()
        );
        let input = json!({"name": "TM", "description": null, "issue_uri": ""});
        assert!(
            spec.property_names("Threat")
                .contains(&"threat_model_id".to_string())
        );
        assert!(
            spec.validate_component("ThreatModelInput", &input).is_ok(),
            "{:?}",
            spec.validate_component("ThreatModelInput", &input)
        );
    }

    #[test]
    fn edge_labels_take_the_text_anchors_the_web_client_sends() {
        let spec = Spec::embedded().unwrap();
        let label = |text: Value| json!({"attrs": {"text": text}, "position": 0.5});
        let ok = label(json!({"text": "flow", "textAnchor": "middle", "textVerticalAnchor": "middle"}));
        assert!(spec.validate_component("EdgeLabel", &ok).is_ok());
        for bad in [
            json!({"text": "flow", "textAnchor": "diagonal"}),
            json!({"text": "flow", "textVerticalAnchor": "Middle"}),
            json!({"text": "flow", "fontStyle": "italic"}),
        ] {
            assert!(
                spec.validate_component("EdgeLabel", &label(bad.clone())).is_err(),
                "{bad}"
            );
        }
    }
}
