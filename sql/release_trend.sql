-- Share of each release's responses in which each of the given concepts is present (latest run).
-- Parameters: $corpus, $feature_ids.
WITH run AS (
    SELECT r.run_id FROM embed_runs r JOIN corpora c USING (corpus_id)
    WHERE c.name = $corpus ORDER BY r.updated_at DESC, r.run_id DESC LIMIT 1
),
responses AS (
    SELECT d.doc_id, d.meta->>'model' AS model, d.meta->>'release' AS release
    FROM documents d JOIN embedded_documents e USING (doc_id)
    WHERE e.run_id = (SELECT run_id FROM run)
),
sizes AS (SELECT model, release, count(*) AS n FROM responses GROUP BY ALL)
SELECT r.model, r.release, f.feature_id,
       count(*) / any_value(s.n) AS freq
FROM responses r
JOIN doc_features f ON f.doc_id = r.doc_id AND f.run_id = (SELECT run_id FROM run)
JOIN sizes s USING (model, release)
WHERE list_contains($feature_ids, f.feature_id)
GROUP BY r.model, r.release, f.feature_id
ORDER BY r.model, r.release, f.feature_id;
