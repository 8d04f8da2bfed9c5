-- A seeded random sample of a run's documents (candidates for documents where a concept is absent).
-- Parameters: $run_id, $seed, $n.
SELECT doc_id
FROM embedded_documents
WHERE run_id = $run_id
ORDER BY hash(doc_id + $seed), doc_id
LIMIT $n
