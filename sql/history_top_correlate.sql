-- The first pairs of a stored correlation analysis (their first concept), in ranking order.
-- Parameters: $analysis_id, $top.
SELECT feature_a AS feature_id, rank
FROM correlations
WHERE analysis_id = $analysis_id
ORDER BY rank
LIMIT $top
