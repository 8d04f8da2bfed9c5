-- The concepts present in a run, ascending. Parameters: $run_id.
SELECT DISTINCT feature_id FROM doc_features WHERE run_id = $run_id ORDER BY feature_id
