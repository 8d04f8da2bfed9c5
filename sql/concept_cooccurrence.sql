-- The concepts that fire in at least $min_count of the documents where one concept of a run fires: n_ab
-- (documents with both) and n_b (documents with the other), for NPMI (a concept page).
-- Parameters: $run_id, $feature_id, $min_count.
WITH mine AS (
    SELECT doc_id FROM doc_features WHERE run_id = $run_id AND feature_id = $feature_id AND max_act > 0
)
SELECT f.feature_id, count(*) AS n_ab, any_value(cf.n_docs) AS n_b
FROM doc_features f
JOIN mine USING (doc_id)
JOIN concept_frequency cf ON cf.run_id = f.run_id AND cf.feature_id = f.feature_id
WHERE f.run_id = $run_id AND f.feature_id <> $feature_id AND f.max_act > 0
GROUP BY f.feature_id
HAVING count(*) >= $min_count
