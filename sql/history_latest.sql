-- The latest analysis of a kind. Parameters: $kind.
SELECT analysis_id
FROM analyses
WHERE kind = $kind
ORDER BY created_at DESC, analysis_id DESC
LIMIT 1
