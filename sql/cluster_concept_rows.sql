-- The binarized document vectors restricted to the selected concepts: one row per (document, selected
-- concept present), present meaning max_act > 0 (doc_features holds only present concepts).
-- Parameters: $run_id, $feature_ids; the documents are those registered as `cluster_docs` (doc_id).
SELECT f.doc_id, f.feature_id
FROM doc_features f
SEMI JOIN cluster_docs c USING (doc_id)
WHERE f.run_id = $run_id AND f.feature_id IN (SELECT unnest($feature_ids))
ORDER BY f.doc_id, f.feature_id
