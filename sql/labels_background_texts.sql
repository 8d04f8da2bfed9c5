-- A seeded random sample of a run's texts (the background a token label's words are compared with).
-- Parameters: $run_id, $seed, $n.
SELECT d.text
FROM embedded_documents e
JOIN documents d USING (doc_id)
WHERE e.run_id = $run_id
ORDER BY hash(e.doc_id + $seed), e.doc_id
LIMIT $n
