-- A stored column-correlation analysis's concepts in rank order. Parameters: $analysis_id.
SELECT * EXCLUDE (analysis_id) FROM column_correlations WHERE analysis_id = $analysis_id ORDER BY rank
