-- In how many documents of a run a concept is present. Parameters: $run_id, $feature_id.
SELECT count(*) AS n FROM doc_features WHERE run_id = $run_id AND feature_id = $feature_id
