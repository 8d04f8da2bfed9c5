-- Paired diff (the same prompt answered on both sides): per concept, pairs where it is present on side
-- A, on side B, and on both. Expects temp tables diff_pairs(doc_a, doc_b) and
-- presence_thresholds(feature_id, min_act): present where max_act ≥ min_act (any row of a concept
-- without one). Parameters: $run_a, $run_b.
WITH fa AS (
    SELECT p.doc_a AS pair, f.feature_id FROM diff_pairs p JOIN doc_features f ON f.doc_id = p.doc_a
    LEFT JOIN presence_thresholds t ON t.feature_id = f.feature_id
    WHERE f.run_id = $run_a AND f.max_act >= coalesce(t.min_act, 0)
), fb AS (
    SELECT p.doc_a AS pair, f.feature_id FROM diff_pairs p JOIN doc_features f ON f.doc_id = p.doc_b
    LEFT JOIN presence_thresholds t ON t.feature_id = f.feature_id
    WHERE f.run_id = $run_b AND f.max_act >= coalesce(t.min_act, 0)
)
SELECT feature_id,
       count(fa.pair) AS n_a,
       count(fb.pair) AS n_b,
       count(*) FILTER (WHERE fa.pair IS NOT NULL AND fb.pair IS NOT NULL) AS n_both
FROM fa FULL JOIN fb USING (pair, feature_id)
GROUP BY feature_id
ORDER BY feature_id
