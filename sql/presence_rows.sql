-- Every concept row of embedding runs $run_a and $run_b (the same run twice for one run), as much as a
-- presence count needs: which document, which concept, how strongly (saeembed/analysis/presence.py).
SELECT doc_id, feature_id, max_act
FROM doc_features
WHERE run_id IN ($run_a, $run_b);
