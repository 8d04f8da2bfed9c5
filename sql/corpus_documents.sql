-- The doc_ids of a corpus, ascending. Parameters: $corpus_id.
SELECT doc_id FROM documents WHERE corpus_id = $corpus_id ORDER BY doc_id
