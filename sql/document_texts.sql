-- The texts of some documents. Parameters: $doc_ids (a list).
SELECT doc_id, text
FROM documents
WHERE list_contains($doc_ids, doc_id)
