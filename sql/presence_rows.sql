-- The concept rows of embedding runs $run_a and $run_b (the same run twice for one run) between documents
-- $first_doc and $last_doc, as much as a presence count needs: which document, which concept, how
-- strongly (saeembed/analysis/presence.py). Shards hold their rows by document, so a narrow range of
-- documents skips the rest by row group, unread.
SELECT doc_id, feature_id, max_act
FROM doc_features
WHERE run_id IN ($run_a, $run_b) AND doc_id BETWEEN $first_doc AND $last_doc;
