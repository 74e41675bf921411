-- why: the run identity hashed neither the system message nor the kia version, and its schema hash was kia's answer model, not the schema sent: a kia upgrade that changed the system message filled new runs from old runs' cache. New runs store identity version 2 (sent schema, system message hash, kia version); runs stored before keep their version 1 identity (NULL), so resuming them still finds them. Per proposal, the model name the server answered with and the endpoint (host:port) that answered: a llama.cpp server serves whatever it loaded under any name asked for, and a resumed run may go to another endpoint. Per model call, when its request started (logged_at is when the paper's result was written, one time for a 500, a 429 and the retry).
ALTER TABLE runs ADD COLUMN identity_version INTEGER;
ALTER TABLE runs ADD COLUMN system_hash VARCHAR;
ALTER TABLE proposals ADD COLUMN served_model VARCHAR;
ALTER TABLE proposals ADD COLUMN endpoint_host VARCHAR;
ALTER TABLE llm_calls ADD COLUMN started_at TIMESTAMPTZ;
