-- The label each concept of an SAE goes by: among each method's newest label (made from the given
-- corpus where one exists, else from any corpus or shipped with the SAE), the one with the best
-- offline score (auroc), ties to the newest.
-- Parameters: $sae_id, $corpus_id (may be NULL).
WITH newest_per_method AS (
    SELECT f.*, coalesce(r.corpus_id = $corpus_id, false) AS from_corpus
    FROM features f LEFT JOIN embed_runs r USING (run_id)
    WHERE f.sae_id = $sae_id
    QUALIFY row_number() OVER (
        PARTITION BY f.feature_id, f.method
        ORDER BY coalesce(r.corpus_id = $corpus_id, false) DESC, f.created_at DESC, f.label_id DESC
    ) = 1
)
SELECT label_id, feature_id, method, model, label, description, details, auroc, detection, run_id, created_at,
       embedding, embedding_model
FROM newest_per_method
QUALIFY row_number() OVER (
    PARTITION BY feature_id ORDER BY from_corpus DESC, auroc DESC NULLS LAST, created_at DESC, label_id DESC
) = 1
ORDER BY feature_id;
