-- For candidate concept pairs (temp table correlate_pairs(feature_a, feature_b)), over the documents of
-- temp table correlate_docs(doc_id) where both are present: the share where both peak on the same token
-- (the same argmax_pos), and an example document — the one with the strongest joint activation.
-- Parameters: $run_id.
WITH both_present AS (
    SELECT p.feature_a, p.feature_b, fa.doc_id, fa.argmax_pos = fb.argmax_pos AS same_token,
           fa.max_act + fb.max_act AS joint
    FROM correlate_pairs p
    JOIN doc_features fa ON fa.feature_id = p.feature_a AND fa.run_id = $run_id
    JOIN doc_features fb ON fb.feature_id = p.feature_b AND fb.run_id = $run_id AND fb.doc_id = fa.doc_id
    SEMI JOIN correlate_docs c ON c.doc_id = fa.doc_id
)
SELECT feature_a, feature_b, avg(same_token::INT) AS same_token_share,
       arg_max(doc_id, joint) AS example_doc_id
FROM both_present
GROUP BY feature_a, feature_b
