-- The p90s kept for a set of runs in the state they were computed on (see storage/percentiles.py).
-- Parameters: $runs ('3', '1,3'), $state.
SELECT feature_id, p90, n_docs
FROM concept_percentiles
WHERE runs = $runs AND state = $state
ORDER BY feature_id
