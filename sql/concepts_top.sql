-- The most frequent concepts of one embedding run.
-- Parameters: $run_id, $limit.
SELECT feature_id, n_docs, freq, mean_max_act, max_act
FROM concept_frequency
WHERE run_id = $run_id
ORDER BY n_docs DESC, feature_id
LIMIT $limit;
