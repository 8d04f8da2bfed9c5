-- A corpus's texts in a seeded random order (the SAE training split). Parameters: $corpus_id, $seed.
SELECT text
FROM documents
WHERE corpus_id = $corpus_id
ORDER BY hash(doc_id + $seed), doc_id
