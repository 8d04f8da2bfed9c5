-- The units of document $doc_id in every unit corpus made from its corpus, in order.
SELECT c.name AS unit_corpus, c.meta->>'unit' AS unit, u.doc_id, u.unit_index, u.char_start, u.char_end
FROM units u
JOIN corpora c ON c.corpus_id = u.corpus_id
WHERE u.parent_doc_id = $doc_id
ORDER BY c.name, u.unit_index
