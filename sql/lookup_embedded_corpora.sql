-- The corpora of whole documents that have an embedding run, by name (unit corpora, 'NAME:sentence', are
-- reached from their corpus with --level unit).
SELECT DISTINCT c.name
FROM embed_runs r
JOIN corpora c USING (corpus_id)
WHERE c.meta->>'unit' IS NULL
ORDER BY c.name
