-- A stored correlation analysis's pairs in rank order. Parameters: $analysis_id.
SELECT * EXCLUDE (analysis_id) FROM correlations WHERE analysis_id = $analysis_id ORDER BY rank
