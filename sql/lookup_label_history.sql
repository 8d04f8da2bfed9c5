-- Every label a concept of an SAE has had, newest first, with where each was made (label_source, as in
-- current_labels.sql, seen from corpus $corpus_id). Parameters: $sae_id, $feature_id, $corpus_id.
SELECT f.label_id, f.method, f.model, f.label,
       CASE WHEN f.run_id IS NULL THEN 'shipped' WHEN r.corpus_id = $corpus_id THEN 'this corpus'
            ELSE 'corpus ' || c.name END AS label_source,
       f.description, f.auroc, f.detection, f.created_at
FROM features f
LEFT JOIN embed_runs r USING (run_id)
LEFT JOIN corpora c ON c.corpus_id = r.corpus_id
WHERE f.sae_id = $sae_id AND f.feature_id = $feature_id
ORDER BY f.created_at DESC, f.label_id DESC
