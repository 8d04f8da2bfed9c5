-- The label each concept of an SAE goes by, and where it comes from (label_source): a label made from the
-- given corpus ('this corpus') where one exists, else one shipped with the SAE ('shipped'), else one made
-- from another corpus ('corpus NAME', said so wherever it is shown). Within that order: each method's
-- newest label, then the best offline score (auroc), ties to the newest.
-- Parameters: $sae_id, $corpus_id (may be NULL).
WITH sourced AS (
    SELECT f.*, c.name AS corpus_name,
           CASE WHEN r.corpus_id = $corpus_id THEN 0 WHEN f.run_id IS NULL THEN 1 ELSE 2 END AS source_rank
    FROM features f
    LEFT JOIN embed_runs r USING (run_id)
    LEFT JOIN corpora c ON c.corpus_id = r.corpus_id
    WHERE f.sae_id = $sae_id
),
newest_per_method AS (
    SELECT *
    FROM sourced
    QUALIFY row_number() OVER (
        PARTITION BY feature_id, method ORDER BY source_rank, created_at DESC, label_id DESC
    ) = 1
)
SELECT label_id, feature_id, method, model, label, description, details, auroc, detection, run_id, created_at,
       embedding, embedding_model,
       CASE source_rank WHEN 0 THEN 'this corpus' WHEN 1 THEN 'shipped' ELSE 'corpus ' || corpus_name END
           AS label_source
FROM newest_per_method
QUALIFY row_number() OVER (
    PARTITION BY feature_id ORDER BY source_rank, auroc DESC NULLS LAST, created_at DESC, label_id DESC
) = 1
ORDER BY feature_id;
