-- The documents an embedding run embedded, in doc_id order (what a clustering or a correlation reads;
-- a --where predicate then narrows them, evaluated apart: see Store.documents_matching). Parameters: $run_id.
SELECT doc_id
FROM embedded_documents
WHERE run_id = $run_id
ORDER BY doc_id
