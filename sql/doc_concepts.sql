-- One document's concepts in one run, strongest first, with how common each is in the run.
-- Parameters: $run_id, $doc_id, $limit.
SELECT f.feature_id, f.max_act, f.mean_act, f.n_active_tokens, f.argmax_pos, cf.freq
FROM doc_features f
JOIN concept_frequency cf USING (run_id, feature_id)
WHERE f.run_id = $run_id AND f.doc_id = $doc_id
ORDER BY f.max_act DESC, f.feature_id
LIMIT $limit;
