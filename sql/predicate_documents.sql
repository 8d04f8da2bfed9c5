-- The documents of one corpus that a --where predicate is evaluated on, in doc_id order, meta as JSON text.
-- The predicate itself never runs here: these rows are handed in batches to a sandboxed in-memory DuckDB
-- (saeembed/storage/predicates.py) that evaluates the rebuilt expression. The store selects only the columns the
-- predicate reads from this query, so a predicate on meta never reads the texts. Parameters: $corpus_id.
SELECT doc_id, corpus_id, external_id, text, meta::VARCHAR AS meta, content_hash, ingested_at
FROM documents
WHERE corpus_id = $corpus_id
ORDER BY doc_id
