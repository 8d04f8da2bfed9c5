-- Paired diff (the same prompt answered on both sides): per concept, pairs where it is present on side
-- A, on side B, and on both. Expects temp table diff_pairs(doc_a, doc_b). Parameters: $run_a, $run_b.
WITH fa AS (
    SELECT p.doc_a AS pair, f.feature_id FROM diff_pairs p JOIN doc_features f ON f.doc_id = p.doc_a
    WHERE f.run_id = $run_a
), fb AS (
    SELECT p.doc_a AS pair, f.feature_id FROM diff_pairs p JOIN doc_features f ON f.doc_id = p.doc_b
    WHERE f.run_id = $run_b
)
SELECT feature_id,
       count(fa.pair) AS n_a,
       count(fb.pair) AS n_b,
       count(*) FILTER (WHERE fa.pair IS NOT NULL AND fb.pair IS NOT NULL) AS n_both
FROM fa FULL JOIN fb USING (pair, feature_id)
GROUP BY feature_id
ORDER BY feature_id
