-- For each given concept, its strongest document on each side of a diff, with the peak token position.
-- Expects temp tables diff_side_a(doc_id), diff_side_b(doc_id) and presence_thresholds(feature_id,
-- min_act): only documents where the concept counts as present (max_act ≥ min_act) are examples.
-- Parameters: $run_a, $run_b, $feature_ids.
SELECT side, feature_id, doc_id, max_act, argmax_pos, d.text
FROM (
    SELECT 'a' AS side, f.feature_id, f.doc_id, f.max_act, f.argmax_pos FROM doc_features f
    SEMI JOIN diff_side_a USING (doc_id)
    WHERE f.run_id = $run_a AND list_contains($feature_ids, f.feature_id)
    UNION ALL
    SELECT 'b' AS side, f.feature_id, f.doc_id, f.max_act, f.argmax_pos FROM doc_features f
    SEMI JOIN diff_side_b USING (doc_id)
    WHERE f.run_id = $run_b AND list_contains($feature_ids, f.feature_id)
)
JOIN documents d USING (doc_id)
LEFT JOIN presence_thresholds t USING (feature_id)
WHERE max_act >= coalesce(t.min_act, 0)
QUALIFY row_number() OVER (PARTITION BY side, feature_id ORDER BY max_act DESC, doc_id) = 1
ORDER BY feature_id, side
