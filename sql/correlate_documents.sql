-- The documents a correlation analysis reads: the embedded documents of one run, optionally restricted
-- by a predicate (it replaces TRUE in `AND (TRUE)`; checked first: one expression over documents'
-- columns and meta, no subquery, no side effects). Parameters: $run_id.
SELECT e.doc_id
FROM embedded_documents e
JOIN documents d USING (doc_id)
WHERE e.run_id = $run_id AND (TRUE)
ORDER BY e.doc_id
