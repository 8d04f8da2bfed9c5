-- The ids and texts of some documents. Parameters: $doc_ids (a list).
SELECT doc_id, external_id, text FROM documents WHERE doc_id IN (SELECT unnest($doc_ids::BIGINT[]))
