-- Every unit of the documents whose units are listed in the table `listed` (doc_id), with whether it is
-- listed, in (parent, unit) order: embedding reads a document once for all its units.
SELECT u.doc_id, u.parent_doc_id, u.unit_index, u.char_start, u.char_end,
       u.doc_id IN (SELECT doc_id FROM listed) AS wanted
FROM units u
WHERE u.parent_doc_id IN (SELECT p.parent_doc_id FROM units p JOIN listed l ON l.doc_id = p.doc_id)
  AND u.corpus_id = (SELECT any_value(p.corpus_id) FROM units p JOIN listed l ON l.doc_id = p.doc_id)
ORDER BY u.parent_doc_id, u.unit_index
