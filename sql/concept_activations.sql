-- One concept's max activation in every document of a run where it fires (a concept page's histogram).
-- Parameters: $run_id, $feature_id.
SELECT max_act
FROM doc_features
WHERE run_id = $run_id AND feature_id = $feature_id AND max_act > 0
