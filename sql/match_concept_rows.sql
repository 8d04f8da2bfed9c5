-- One embedding run's concept activations in a range of documents, for concept matching: (document,
-- concept, max activation), read between $first_doc and $last_doc (the rest skipped by block, unread).
-- Parameters: $run_id, $first_doc, $last_doc.
SELECT doc_id, feature_id, max_act
FROM doc_features
WHERE run_id = $run_id AND doc_id BETWEEN $first_doc AND $last_doc
