-- A stored search's documents in rank order, with the concepts each matched (JSON) and its text.
-- Parameters: $analysis_id.
SELECT r.rank, r.mode, r.doc_id, r.score, r.concepts, d.text
FROM retrieval_results r
JOIN documents d USING (doc_id)
WHERE r.analysis_id = $analysis_id
ORDER BY r.rank
