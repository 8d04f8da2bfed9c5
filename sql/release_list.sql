-- The releases in a corpus of release responses, per model in release order, with their sizes.
-- Parameters: $corpus.
SELECT d.meta->>'model' AS model, d.meta->>'release' AS release, min(d.meta->>'released_at') AS released_at,
       count(*) AS documents
FROM documents d JOIN corpora c USING (corpus_id)
WHERE c.name = $corpus AND d.meta->>'release' IS NOT NULL
GROUP BY ALL
ORDER BY model, released_at, release;
