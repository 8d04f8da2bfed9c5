-- The concept rows of the documents a correlation analysis reads: one embedding run, optionally
-- restricted by a predicate (replaces TRUE in `AND (TRUE)`, checked first like diff's).
-- Parameters: $run_id.
SELECT f.doc_id, f.feature_id, f.max_act, f.argmax_pos
FROM doc_features f
JOIN documents d USING (doc_id)
WHERE f.run_id = $run_id AND (TRUE)
ORDER BY f.doc_id, f.feature_id
