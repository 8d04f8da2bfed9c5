-- How many of some documents (table counted_docs: doc_id) have no embedding by a model yet.
-- Parameters: $model.
SELECT count(DISTINCT w.doc_id) AS n
FROM counted_docs w
ANTI JOIN doc_embeddings e ON e.doc_id = w.doc_id AND e.model = $model
