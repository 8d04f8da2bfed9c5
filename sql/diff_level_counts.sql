-- One-vs-rest diff over a metadata column: per concept and level, the documents where it is present.
-- Expects temp table diff_levels(doc_id, level). Parameters: $run_id.
SELECT f.feature_id, l.level, count(*) AS n
FROM doc_features f
JOIN diff_levels l USING (doc_id)
WHERE f.run_id = $run_id
GROUP BY f.feature_id, l.level
ORDER BY f.feature_id, l.level
