-- Each concept's documents ranked by max activation (rank 1 = strongest), ranks first_rank..last_rank.
-- Labels are made from ranks 1..N and scored on the next ones, which the label never saw.
-- Parameters: $run_id, $feature_ids (list, or NULL for every concept), $first_rank, $last_rank.
SELECT feature_id, doc_id, max_act, argmax_pos, rank
FROM (
    SELECT feature_id, doc_id, max_act, argmax_pos,
           row_number() OVER (PARTITION BY feature_id ORDER BY max_act DESC, doc_id) AS rank
    FROM doc_features
    WHERE run_id = $run_id AND ($feature_ids IS NULL OR list_contains($feature_ids, feature_id))
)
WHERE rank BETWEEN $first_rank AND $last_rank
ORDER BY feature_id, rank;
