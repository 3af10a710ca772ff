-- Columns the threat-model list filters match (`SearchColumns` in src/store/mod.rs): lower-cased text
-- from the document, written by the store on every insert and update. Multi-part columns join their
-- parts with a newline. Existing rows are filled from their documents here (SQLite's LOWER folds
-- ASCII only; rows are rewritten with Rust's lower-casing on their next update).
ALTER TABLE threat_models ADD COLUMN search_name TEXT;
ALTER TABLE threat_models ADD COLUMN search_description TEXT;
ALTER TABLE threat_models ADD COLUMN search_issue_uri TEXT;
ALTER TABLE threat_models ADD COLUMN search_owner TEXT;
ALTER TABLE threat_models ADD COLUMN search_reviewer TEXT;
ALTER TABLE threat_models ADD COLUMN status_updated TEXT;

UPDATE threat_models SET
    search_name = LOWER(name),
    search_description = LOWER(json_extract(doc, '$.description')),
    search_issue_uri = LOWER(json_extract(doc, '$.issue_uri')),
    search_owner = LOWER(owner_email) || char(10) || LOWER(COALESCE(json_extract(doc, '$.owner.display_name'), '')),
    search_reviewer = CASE WHEN json_type(doc, '$.security_reviewer') = 'object' THEN
        LOWER(COALESCE(json_extract(doc, '$.security_reviewer.email'), '')) || char(10)
            || LOWER(COALESCE(json_extract(doc, '$.security_reviewer.display_name'), '')) END,
    -- The format sqlx writes: RFC 3339 with a numeric offset.
    status_updated = REPLACE(json_extract(doc, '$.status_updated'), 'Z', '+00:00');
