-- The unit corpora made from corpus $parent_id (`embed --unit`), with whether each has been embedded.
SELECT c.name, c.meta->>'unit' AS unit,
       EXISTS (SELECT 1 FROM embed_runs r JOIN embedded_documents e USING (run_id) WHERE r.corpus_id = c.corpus_id)
           AS embedded
FROM corpora c
WHERE (c.meta->>'parent_corpus_id')::INTEGER = $parent_id
ORDER BY c.name
