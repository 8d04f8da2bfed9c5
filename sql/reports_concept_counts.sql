-- In how many of some documents of a run each of some concepts is present.
-- Parameters: $run_id, $feature_ids, $doc_ids (lists).
SELECT feature_id, count(*) AS n
FROM doc_features
WHERE run_id = $run_id AND list_contains($feature_ids, feature_id) AND list_contains($doc_ids, doc_id)
GROUP BY feature_id
