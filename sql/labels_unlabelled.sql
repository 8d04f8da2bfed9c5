-- Of the concepts of table candidate_features (feature_id), or of every concept present in a run when
-- $all_features, those without a label of $method made from the run's corpus with the run's SAE.
-- Parameters: $run_id, $method, $all_features.
WITH run AS (SELECT sae_id, corpus_id FROM embed_runs WHERE run_id = $run_id),
wanted AS (
    SELECT DISTINCT feature_id FROM doc_features WHERE run_id = $run_id AND $all_features
    UNION SELECT feature_id FROM candidate_features
)
SELECT w.feature_id
FROM wanted w
WHERE NOT EXISTS (
    SELECT 1 FROM features f JOIN embed_runs r USING (run_id), run
    WHERE f.feature_id = w.feature_id AND f.method = $method
      AND f.sae_id = run.sae_id AND r.corpus_id = run.corpus_id
)
ORDER BY w.feature_id
