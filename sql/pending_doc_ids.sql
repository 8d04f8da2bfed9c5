-- Documents of a run's corpus that the run has not embedded yet, in doc_id order; with $among_all false,
-- only those listed in the table `pending_among` (doc_id). Parameters: $run_id, $limit, $among_all.
SELECT d.doc_id
FROM documents d
JOIN embed_runs r ON r.corpus_id = d.corpus_id AND r.run_id = $run_id
ANTI JOIN embedded_documents e ON e.run_id = $run_id AND e.doc_id = d.doc_id
WHERE $among_all OR d.doc_id IN (SELECT doc_id FROM pending_among)
ORDER BY d.doc_id
LIMIT $limit
