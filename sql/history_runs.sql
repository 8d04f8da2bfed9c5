-- Every run of an analysis: the analyses of the same kind with the same parameters as $analysis_id,
-- oldest first, with their input sizes and time.
SELECT a.analysis_id, a.created_at, a.seconds, a.inputs
FROM analyses a, (SELECT kind, params FROM analyses WHERE analysis_id = $analysis_id) this
WHERE a.kind = this.kind AND a.params::VARCHAR = this.params::VARCHAR
ORDER BY a.created_at, a.analysis_id;
