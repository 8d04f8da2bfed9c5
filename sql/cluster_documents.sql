-- The documents a clustering looks at: those of an embedding run that satisfy the --where predicate.
-- Parameters: $run_id. The predicate replaces TRUE in `AND (TRUE)` (checked first: one expression over
-- documents' columns and meta, no subquery, no side effects).
SELECT e.doc_id
FROM embedded_documents e
JOIN documents d USING (doc_id)
WHERE e.run_id = $run_id AND (TRUE)
ORDER BY e.doc_id
