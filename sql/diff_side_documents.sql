-- The documents of one side of a diff: those of an embedding run that satisfy the side's predicate.
-- Parameters: $run_id, $with_meta (false: meta is not read, which matters at millions of documents).
-- The predicate replaces TRUE in `AND (TRUE)` (checked first: one expression over documents' columns and
-- meta, no subquery, no side effects).
SELECT e.doc_id, CASE WHEN $with_meta THEN d.meta END AS meta
FROM embedded_documents e
JOIN documents d USING (doc_id)
WHERE e.run_id = $run_id AND (TRUE)
