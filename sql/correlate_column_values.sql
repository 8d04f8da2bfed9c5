-- The values of one meta column (`correlate --with-column`) over the embedded documents of a run that
-- have one: the value as text and its JSON type (numbers: BIGINT, UBIGINT, DOUBLE). A --where predicate
-- then narrows them, evaluated apart (Store.documents_matching). Parameters: $run_id, $column.
SELECT e.doc_id, d.meta->>$column AS value, json_type(d.meta->$column) AS json_type
FROM embedded_documents e
JOIN documents d USING (doc_id)
WHERE e.run_id = $run_id AND d.meta->>$column IS NOT NULL
ORDER BY e.doc_id
