-- Which of some concepts each document of table negative_candidates (doc_id) has in a run.
-- Parameters: $run_id, $feature_ids (a list).
SELECT feature_id, doc_id
FROM doc_features SEMI JOIN negative_candidates USING (doc_id)
WHERE run_id = $run_id AND list_contains($feature_ids, feature_id)
