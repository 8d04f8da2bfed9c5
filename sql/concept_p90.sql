-- Per concept present in embedding run $run_a or $run_b (the same run twice for one run), their rows
-- pooled: the 90th percentile of its nonzero max activations and the documents where it is present.
-- Property retrieval divides a document's activation by p90, so concepts that fire strongly do not drown
-- the others; the diff counts a concept present where max_act reaches a share of it
-- (saeembed/storage/percentiles.py). quantile_cont interpolates linearly, as numpy.percentile does by default.
SELECT feature_id, quantile_cont(max_act, 0.9)::DOUBLE AS p90, count(*) AS n_docs
FROM doc_features
WHERE run_id IN ($run_a, $run_b) AND max_act > 0
GROUP BY feature_id
ORDER BY feature_id;
