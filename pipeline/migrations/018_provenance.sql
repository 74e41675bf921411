-- why: the run identity hashed neither the system message nor the kia version, and its schema hash was kia's answer model, not the schema sent: a kia upgrade that changed the system message filled new runs from old runs' cache. New runs store identity version 2 (sent schema, system message hash, kia version); runs stored before keep their version 1 identity (NULL), so resuming them still finds them.
ALTER TABLE runs ADD COLUMN identity_version INTEGER;
ALTER TABLE runs ADD COLUMN system_hash VARCHAR;
