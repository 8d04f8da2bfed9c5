-- Documents of corpus $parent_id that have no units in unit corpus $unit_corpus_id yet, in doc_id order.
-- Parameters: $parent_id, $unit_corpus_id, $limit.
SELECT d.doc_id, d.external_id, d.text, d.meta::VARCHAR AS meta
FROM documents d
WHERE d.corpus_id = $parent_id
  AND NOT EXISTS (SELECT 1 FROM units u WHERE u.corpus_id = $unit_corpus_id AND u.parent_doc_id = d.doc_id)
ORDER BY d.doc_id
LIMIT $limit
