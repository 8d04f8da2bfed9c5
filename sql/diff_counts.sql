-- Per concept, the documents of each side of a diff where it is present; counted in DuckDB, never as a
-- dense documents × concepts matrix. Expects temp tables diff_side_a(doc_id), diff_side_b(doc_id) and
-- presence_thresholds(feature_id, min_act): a concept is present in a document when its max activation is
-- at least min_act (any firing for a concept without a row). Parameters: $run_a, $run_b.
WITH a AS (
    SELECT f.feature_id, count(*) AS n FROM doc_features f SEMI JOIN diff_side_a USING (doc_id)
    LEFT JOIN presence_thresholds t USING (feature_id)
    WHERE f.run_id = $run_a AND f.max_act >= coalesce(t.min_act, 0) GROUP BY f.feature_id
), b AS (
    SELECT f.feature_id, count(*) AS n FROM doc_features f SEMI JOIN diff_side_b USING (doc_id)
    LEFT JOIN presence_thresholds t USING (feature_id)
    WHERE f.run_id = $run_b AND f.max_act >= coalesce(t.min_act, 0) GROUP BY f.feature_id
)
SELECT feature_id, coalesce(a.n, 0) AS n_a, coalesce(b.n, 0) AS n_b
FROM a FULL JOIN b USING (feature_id)
ORDER BY feature_id
