-- Threat-model aliases come from a sequence: nextval() takes no row lock, whereas the shared
-- `alias_counters` row serialized every concurrent create until its transaction committed.
CREATE SEQUENCE threat_model_alias;
SELECT setval('threat_model_alias', COALESCE((SELECT value FROM alias_counters WHERE scope = 'threat_model'), 0) + 1, false);
