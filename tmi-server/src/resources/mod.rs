//! The six children of a threat model (diagrams, threats, documents, notes, assets,
//! repositories): one table of kinds, the response shaping they share, and their routes.
//! Pure except the handlers in `handlers.rs`; diagram-specific rules live in `diagrams.rs`.

pub mod bulk;
pub mod diagrams;
pub mod handlers;
pub mod listing;

use axum::Router;
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use crate::openapi::Spec;
use crate::state::AppState;
use crate::store::{ChildRecord, MetadataEntry};
use crate::threat_models::model::rfc3339;

/// One kind of child resource.
#[derive(Debug)]
pub struct Kind {
    /// `entity_type` of metadata and the store's `kind`.
    pub kind: &'static str,
    /// Path segment and list key.
    pub plural: &'static str,
    pub id_param: &'static str,
    pub label: &'static str,
    pub create_schema: &'static str,
    pub update_schema: &'static str,
    pub response_schema: &'static str,
    pub list_item_schema: Option<&'static str>,
    /// Whether the API exposes `version` and takes `If-Match`.
    pub versioned: bool,
    /// Metadata bulk limit (`api/bulk_limits.go`).
    pub metadata_bulk_limit: usize,
    /// Items per `…/{kind}/bulk` request; `None` when the kind has no bulk endpoints.
    pub bulk_limit: Option<usize>,
}

pub const KINDS: &[Kind] = &[
    Kind {
        kind: "diagram",
        plural: "diagrams",
        id_param: "diagram_id",
        label: "Diagram",
        create_schema: "CreateDiagramRequest",
        update_schema: "DfdDiagramInput",
        response_schema: "DfdDiagram",
        list_item_schema: Some("DiagramListItem"),
        versioned: true,
        metadata_bulk_limit: 20,
        bulk_limit: None,
    },
    Kind {
        kind: "threat",
        plural: "threats",
        id_param: "threat_id",
        label: "Threat",
        create_schema: "ThreatInput",
        update_schema: "ThreatInput",
        response_schema: "Threat",
        list_item_schema: None,
        versioned: true,
        metadata_bulk_limit: 20,
        bulk_limit: Some(20),
    },
    Kind {
        kind: "document",
        plural: "documents",
        id_param: "document_id",
        label: "Document",
        create_schema: "DocumentInput",
        update_schema: "DocumentInput",
        response_schema: "Document",
        list_item_schema: None,
        versioned: true,
        metadata_bulk_limit: 20,
        bulk_limit: Some(20),
    },
    Kind {
        kind: "repository",
        plural: "repositories",
        id_param: "repository_id",
        label: "Repository",
        create_schema: "RepositoryInput",
        update_schema: "RepositoryInput",
        response_schema: "Repository",
        list_item_schema: None,
        versioned: false,
        metadata_bulk_limit: 20,
        bulk_limit: Some(20),
    },
    Kind {
        kind: "note",
        plural: "notes",
        id_param: "note_id",
        label: "Note",
        create_schema: "NoteInput",
        update_schema: "NoteInput",
        response_schema: "Note",
        list_item_schema: Some("NoteListItem"),
        versioned: false,
        metadata_bulk_limit: 100,
        bulk_limit: None,
    },
    Kind {
        kind: "asset",
        plural: "assets",
        id_param: "asset_id",
        label: "Asset",
        create_schema: "AssetInput",
        update_schema: "AssetInput",
        response_schema: "Asset",
        list_item_schema: None,
        versioned: true,
        metadata_bulk_limit: 100,
        bulk_limit: Some(50),
    },
];

/// A kind by its path segment.
pub fn by_plural(plural: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.plural == plural)
}

/// The response document, restricted to the response schema's properties; `embedded` selects the
/// form used inside a threat model (assets are `ExtendedAsset` there).
pub fn response(
    spec: &Spec,
    kind: &Kind,
    c: &ChildRecord,
    metadata: &[MetadataEntry],
    embedded: bool,
) -> Value {
    let schema = if embedded && kind.kind == "asset" {
        "ExtendedAsset"
    } else {
        kind.response_schema
    };
    let allowed = spec.property_names(schema);
    let mut full = match &c.doc {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    full.insert("id".into(), json!(c.id));
    full.insert("threat_model_id".into(), json!(c.threat_model_id));
    full.insert("alias".into(), json!(c.alias));
    full.insert("version".into(), json!(c.version));
    full.insert("created_at".into(), json!(rfc3339(&c.created_at)));
    full.insert("modified_at".into(), json!(rfc3339(&c.modified_at)));
    if let Some(d) = &c.deleted_at {
        full.insert("deleted_at".into(), json!(rfc3339(d)));
    }
    full.insert(
        "metadata".into(),
        serde_json::to_value(metadata).unwrap_or_else(|_| json!([])),
    );
    full.retain(|k, v| allowed.contains(k) && !v.is_null());
    Value::Object(full)
}

/// The list form of a child.
pub fn list_item(spec: &Spec, kind: &Kind, c: &ChildRecord, metadata: &[MetadataEntry]) -> Value {
    let mut v = response(spec, kind, c, metadata, false);
    if let (Some(schema), Value::Object(m)) = (kind.list_item_schema, &mut v) {
        let allowed = spec.property_names(schema);
        m.retain(|k, _| allowed.contains(k));
    }
    v
}

pub fn router() -> Router<AppState> {
    let mut r = Router::new();
    for kind in KINDS {
        let collection = format!("/threat_models/{{threat_model_id}}/{}", kind.plural);
        let item = format!("{collection}/{{{}}}", kind.id_param);
        r = r
            .route(
                &collection,
                get(move |s, u, a, q| handlers::list(kind, s, u, a, q))
                    .post(move |s, a, b| handlers::create(kind, s, a, b)),
            )
            .route(
                &item,
                get(move |s, a, p| handlers::get(kind, s, a, p))
                    .put(move |s, h, a, p, b| handlers::update(kind, s, h, a, p, b))
                    .patch(move |s, h, a, p, b| handlers::patch(kind, s, h, a, p, b))
                    .delete(move |s, a, p| handlers::delete(kind, s, a, p)),
            )
            .route(
                &format!("{item}/restore"),
                post(move |s, a, p| handlers::restore(kind, s, a, p)),
            );
        if kind.bulk_limit.is_some() {
            // A literal segment outranks `{id}`, so `…/bulk` never reaches the item routes.
            let mut bulk = post(move |s, a, b| bulk::create(kind, s, a, b));
            bulk = if kind.kind == "threat" {
                bulk.put(move |s, a, b| bulk::update_all(kind, s, a, b))
                    .patch(move |s, a, b| bulk::patch_all(kind, s, a, b))
                    .delete(move |s, a, q| bulk::delete_all(kind, s, a, q))
            } else {
                bulk.put(move |s, a, b| bulk::upsert(kind, s, a, b))
            };
            r = r.route(&format!("{collection}/bulk"), bulk);
        }
    }
    r
}
