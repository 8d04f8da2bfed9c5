-- The corpora that have an embedding run, by name.
SELECT DISTINCT c.name
FROM embed_runs r
JOIN corpora c USING (corpus_id)
ORDER BY c.name
