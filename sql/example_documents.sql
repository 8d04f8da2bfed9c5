-- The corpus of each given document (for search by example: unknown ids and other corpora are errors).
-- Parameters: $doc_ids (a list).
SELECT d.doc_id, c.name AS corpus
FROM documents d
JOIN corpora c USING (corpus_id)
WHERE d.doc_id IN (SELECT unnest($doc_ids::BIGINT[]))
ORDER BY d.doc_id
