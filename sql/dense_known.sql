-- Which documents of table wanted_docs (doc_id) exist.
SELECT doc_id FROM documents SEMI JOIN wanted_docs USING (doc_id)
