-- For candidate concept pairs (temp table correlate_pairs(feature_a, feature_b); $features: every concept
-- of a pair), over the documents of temp table correlate_docs(doc_id) where both are present: the share
-- where both peak on the same token (the same argmax_pos), and an example document — the one with the
-- strongest joint activation. Parameters: $run_id, $features.
-- The concepts are a list filter, which the Parquet scan applies before it decodes the other columns (a
-- join on them probed every row: 10× slower). A pair's documents are joined on (concept, document)
-- together: joining the two sides on doc_id alone pairs every concept of a document with every other,
-- a million rows a document at 1,000 concepts each.
WITH candidate_rows AS MATERIALIZED (
    SELECT d.doc_id, d.feature_id, d.argmax_pos, d.max_act
    FROM doc_features d
    SEMI JOIN correlate_docs s ON s.doc_id = d.doc_id
    WHERE d.run_id = $run_id AND list_contains($features, d.feature_id)
),
side_a AS MATERIALIZED (
    SELECT p.feature_a, p.feature_b, r.doc_id, r.argmax_pos, r.max_act
    FROM correlate_pairs p
    JOIN candidate_rows r ON r.feature_id = p.feature_a
)
SELECT a.feature_a, a.feature_b, avg((a.argmax_pos = b.argmax_pos)::INT) AS same_token_share,
       arg_max(a.doc_id, a.max_act + b.max_act) AS example_doc_id
FROM side_a a
JOIN candidate_rows b ON b.feature_id = a.feature_b AND b.doc_id = a.doc_id
GROUP BY a.feature_a, a.feature_b
