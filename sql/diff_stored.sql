-- A stored diff's rows, group by group in ranking order. Parameters: $analysis_id.
SELECT * EXCLUDE (analysis_id)
FROM diff_results
WHERE analysis_id = $analysis_id
ORDER BY grp NULLS FIRST, rank
