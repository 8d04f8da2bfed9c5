-- A run's most frequent concepts (`--features top:N`). Parameters: $run_id, $n.
SELECT feature_id
FROM concept_frequency
WHERE run_id = $run_id
ORDER BY n_docs DESC, feature_id
LIMIT $n
