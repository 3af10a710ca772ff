//! The six kinds of threat-model children (diagrams, threats, documents, notes, assets,
//! repositories) as one table: path segments, schema names, versioning and bulk limits. Pure.

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

/// A kind by its store name (`entity_type`).
pub fn by_kind(kind: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.kind == kind)
}

/// The diagram kind.
pub fn diagram() -> &'static Kind {
    &KINDS[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_found_by_path_segment_and_store_name() {
        assert_eq!(diagram().kind, "diagram");
        assert_eq!(by_plural("repositories").map(|k| k.kind), Some("repository"));
        assert_eq!(by_kind("asset").map(|k| k.plural), Some("assets"));
        assert!(by_plural("widgets").is_none());
        // Only the kinds with bulk endpoints have a bulk limit; assets allow the most.
        assert_eq!(by_plural("assets").and_then(|k| k.bulk_limit), Some(50));
        assert_eq!(by_plural("notes").and_then(|k| k.bulk_limit), None);
    }
}
