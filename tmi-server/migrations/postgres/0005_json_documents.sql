-- Documents are stored as `json` (their text, verbatim) instead of `jsonb`: jsonb keeps numbers as
-- `numeric`, which reads `1e16` back as an integer and `-0.0` as `0.0`, and renders numbers near the
-- largest double as 309-digit integer literals. Rows written before keep the numbers jsonb gave them;
-- the server parses those long literals back to the nearest double (serde_json `float_roundtrip`).
ALTER TABLE threat_models ALTER COLUMN doc TYPE json USING doc::json;
ALTER TABLE children ALTER COLUMN doc TYPE json USING doc::json;
ALTER TABLE user_preferences ALTER COLUMN doc TYPE json USING doc::json;
