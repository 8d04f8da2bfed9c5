-- The texts of the documents of table wanted_text (doc_id).
SELECT doc_id, text FROM documents SEMI JOIN wanted_text USING (doc_id)
