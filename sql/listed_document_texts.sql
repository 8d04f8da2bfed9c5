-- The texts of the documents listed in the table `listed` (doc_id), in doc_id order.
SELECT d.doc_id, d.text
FROM documents d
JOIN listed l ON l.doc_id = d.doc_id
ORDER BY d.doc_id
