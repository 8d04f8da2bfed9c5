-- The embeddings by a model of the documents of table embedding_order (doc_id, i), in the order of i.
-- Parameters: $model.
SELECT o.i, e.embedding
FROM embedding_order o
JOIN doc_embeddings e ON e.doc_id = o.doc_id AND e.model = $model
ORDER BY o.i
