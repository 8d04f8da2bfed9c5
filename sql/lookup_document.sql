-- One document as `saeembed docs show` prints it, with what the run read of it.
-- Parameters: $run_id, $doc_id.
SELECT d.external_id, d.text, d.meta, e.n_tokens, e.truncated
FROM documents d
JOIN embedded_documents e ON e.doc_id = d.doc_id AND e.run_id = $run_id
WHERE d.doc_id = $doc_id
