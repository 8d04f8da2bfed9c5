-- One-vs-rest diff over a metadata column: per concept and level, the documents where it is present.
-- Expects temp tables diff_levels(doc_id, level) and presence_thresholds(feature_id, min_act) (see
-- diff_counts.sql). Parameters: $run_id.
SELECT f.feature_id, l.level, count(*) AS n
FROM doc_features f
JOIN diff_levels l USING (doc_id)
LEFT JOIN presence_thresholds t ON t.feature_id = f.feature_id
WHERE f.run_id = $run_id AND f.max_act >= coalesce(t.min_act, 0)
GROUP BY f.feature_id, l.level
ORDER BY f.feature_id, l.level
