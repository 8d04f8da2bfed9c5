-- Where the units listed in the table `listed` (doc_id) sit: their document, index and span, and the
-- document's text. Units of whole-document corpora have no row.
SELECT u.doc_id, u.parent_doc_id, d.external_id AS parent_external_id, u.unit_index, u.char_start, u.char_end,
       d.text AS parent_text
FROM units u
JOIN listed l ON l.doc_id = u.doc_id
JOIN documents d ON d.doc_id = u.parent_doc_id
ORDER BY u.doc_id
