-- Per concept, the documents of each side of a diff where it is present; counted in DuckDB, never as a
-- dense documents × concepts matrix. Expects temp tables diff_side_a(doc_id), diff_side_b(doc_id).
-- Parameters: $run_a, $run_b.
WITH a AS (
    SELECT feature_id, count(*) AS n FROM doc_features SEMI JOIN diff_side_a USING (doc_id)
    WHERE run_id = $run_a GROUP BY feature_id
), b AS (
    SELECT feature_id, count(*) AS n FROM doc_features SEMI JOIN diff_side_b USING (doc_id)
    WHERE run_id = $run_b GROUP BY feature_id
)
SELECT feature_id, coalesce(a.n, 0) AS n_a, coalesce(b.n, 0) AS n_b
FROM a FULL JOIN b USING (feature_id)
ORDER BY feature_id
