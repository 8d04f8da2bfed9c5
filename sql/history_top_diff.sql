-- The first concepts of a stored diff, in ranking order (what `saeembed history` follows by default).
-- Parameters: $analysis_id, $top.
SELECT DISTINCT feature_id, rank
FROM diff_results
WHERE analysis_id = $analysis_id
ORDER BY rank
LIMIT $top
