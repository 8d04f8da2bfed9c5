-- Concepts against a metadata column: per concept and level, documents where the concept is present,
-- and the sum of the documents' ranks by the column's value (numeric columns: Spearman from sums).
-- Expects temp table correlate_levels(doc_id, level, value_rank). Parameters: $run_id.
SELECT f.feature_id, l.level, count(*) AS n, sum(l.value_rank) AS rank_sum
FROM doc_features f
JOIN correlate_levels l USING (doc_id)
WHERE f.run_id = $run_id
GROUP BY f.feature_id, l.level
ORDER BY f.feature_id, l.level
