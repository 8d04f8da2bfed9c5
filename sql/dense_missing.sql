-- The documents of table wanted_docs (doc_id) with no embedding by a model yet, with their texts.
-- Parameters: $model.
SELECT w.doc_id, d.text
FROM (SELECT DISTINCT doc_id FROM wanted_docs) w
JOIN documents d USING (doc_id)
ANTI JOIN doc_embeddings e ON e.doc_id = w.doc_id AND e.model = $model
ORDER BY w.doc_id
