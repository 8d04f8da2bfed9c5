-- Share of each release's responses in which each of the given concepts is present, in embedding run
-- $run_id (the corpus's latest). Expects temp table presence_thresholds(feature_id, min_act): a concept is
-- present where its max activation is at least min_act (any firing without a row), as in the diffs.
-- Parameters: $run_id, $feature_ids.
WITH responses AS (
    SELECT d.doc_id, d.meta->>'model' AS model, d.meta->>'release' AS release
    FROM documents d JOIN embedded_documents e USING (doc_id)
    WHERE e.run_id = $run_id
),
sizes AS (SELECT model, release, count(*) AS n FROM responses GROUP BY ALL)
SELECT r.model, r.release, f.feature_id,
       count(*) / any_value(s.n) AS freq
FROM responses r
JOIN doc_features f ON f.doc_id = r.doc_id AND f.run_id = $run_id
JOIN sizes s USING (model, release)
LEFT JOIN presence_thresholds t ON t.feature_id = f.feature_id
WHERE list_contains($feature_ids, f.feature_id) AND f.max_act >= coalesce(t.min_act, 0)
GROUP BY r.model, r.release, f.feature_id
ORDER BY r.model, r.release, f.feature_id;
