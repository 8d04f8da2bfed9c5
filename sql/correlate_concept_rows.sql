-- The binarized concept vectors of one embedding run: one (document, concept) row per concept present,
-- in the order the store holds them (each document's rows together, as the embedding writes them).
-- Documents are read between $first_doc and $last_doc (the rest are skipped by block, unread) and given
-- as doc_id − $first_doc, which fits 32 bits: half the memory of doc_id at a hundred million rows.
-- Parameters: $run_id, $first_doc, $last_doc.
SELECT (doc_id - $first_doc)::INTEGER AS doc, feature_id
FROM doc_features
WHERE run_id = $run_id AND doc_id BETWEEN $first_doc AND $last_doc
