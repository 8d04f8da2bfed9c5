-- For each given concept, its strongest documents with the token position where it peaked.
-- Parameters: $run_id, $feature_ids (list), $per_feature.
SELECT feature_id, doc_id, max_act, argmax_pos, text
FROM (
    SELECT f.feature_id, f.doc_id, f.max_act, f.argmax_pos, d.text,
           row_number() OVER (PARTITION BY f.feature_id ORDER BY f.max_act DESC, f.doc_id) AS rank
    FROM doc_features f
    JOIN documents d USING (doc_id)
    WHERE f.run_id = $run_id AND list_contains($feature_ids, f.feature_id)
)
WHERE rank <= $per_feature
ORDER BY feature_id, rank;
