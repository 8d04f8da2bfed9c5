-- Per concept of an embedding run: the 90th percentile of its nonzero max activations (property retrieval
-- divides a document's activation by it, so concepts that fire strongly do not drown the others), and the
-- documents where it is present. quantile_cont interpolates linearly, as numpy.percentile does by default.
-- Parameters: $run_id.
SELECT feature_id, quantile_cont(max_act, 0.9) AS p90, count(*) AS n_docs
FROM doc_features
WHERE run_id = $run_id AND max_act > 0
GROUP BY feature_id
ORDER BY feature_id;
