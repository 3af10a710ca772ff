-- Columns the threat-model list filters match (`SearchColumns` in src/store/mod.rs): lower-cased text
-- from the document, written by the store on every insert and update. Multi-part columns join their
-- parts with a newline. Existing rows are filled from their documents here.
ALTER TABLE threat_models ADD COLUMN search_name TEXT;
ALTER TABLE threat_models ADD COLUMN search_description TEXT;
ALTER TABLE threat_models ADD COLUMN search_issue_uri TEXT;
ALTER TABLE threat_models ADD COLUMN search_owner TEXT;
ALTER TABLE threat_models ADD COLUMN search_reviewer TEXT;
ALTER TABLE threat_models ADD COLUMN status_updated TIMESTAMPTZ;

UPDATE threat_models SET
    search_name = LOWER(name),
    search_description = LOWER(doc->>'description'),
    search_issue_uri = LOWER(doc->>'issue_uri'),
    search_owner = LOWER(owner_email) || E'\n' || LOWER(COALESCE(doc->'owner'->>'display_name', '')),
    search_reviewer = CASE WHEN jsonb_typeof(doc->'security_reviewer') = 'object' THEN
        LOWER(COALESCE(doc->'security_reviewer'->>'email', '')) || E'\n'
            || LOWER(COALESCE(doc->'security_reviewer'->>'display_name', '')) END,
    status_updated = (doc->>'status_updated')::timestamptz;
