-- The documents of one side of a diff: those an embedding run embedded (a --where predicate then narrows
-- them, evaluated apart: see Store.documents_matching).
-- Parameters: $run_id, $with_meta (false: meta is not read, which matters at millions of documents).
SELECT e.doc_id, CASE WHEN $with_meta THEN d.meta END AS meta
FROM embedded_documents e
JOIN documents d USING (doc_id)
WHERE e.run_id = $run_id
