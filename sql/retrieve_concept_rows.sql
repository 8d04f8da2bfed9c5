-- An embedding run's concept rows ordered by concept (then document): property retrieval keeps them beside
-- the database as a concept-major copy, so a query reads only the slices of the concepts it selected.
-- Parameters: $run_id.
SELECT feature_id, doc_id, max_act, argmax_pos
FROM doc_features
WHERE run_id = $run_id AND max_act > 0
ORDER BY feature_id, doc_id;
