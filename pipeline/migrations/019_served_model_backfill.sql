-- why: migration 018 added proposals.served_model (and endpoint_host) empty for every proposal stored before it, though each LLM answer's raw_response has held the model name the server answered with (backend.model) all along: after an upgrade `kia runs NAME`, `kia report` and the exports' comments counted only the papers answered since. Fill both from the stored raw answer where it names them; a raw answer that is not JSON or names neither stays NULL.
UPDATE proposals
SET served_model = CASE WHEN json_valid(raw_response) THEN nullif(json_extract_string(raw_response, '$.backend.model'), '') END
WHERE served_model IS NULL AND raw_response IS NOT NULL;
UPDATE proposals
SET endpoint_host = CASE WHEN json_valid(raw_response) THEN nullif(json_extract_string(raw_response, '$.backend.endpoint'), '') END
WHERE endpoint_host IS NULL AND raw_response IS NOT NULL;
