-- How many documents of a corpus have no sentence embedding by a model yet. Parameters: $corpus_id, $model.
SELECT count(*) AS n
FROM documents d
WHERE corpus_id = $corpus_id
  AND NOT EXISTS (SELECT 1 FROM doc_embeddings e WHERE e.doc_id = d.doc_id AND e.model = $model)
