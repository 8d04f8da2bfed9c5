-- The documents of one cluster of a stored clustering, with their text and map position.
-- Parameters: $analysis_id, $cluster (-1 = noise; NULL = the documents with none of the selected concepts).
SELECT c.doc_id, d.external_id, d.text, c.x, c.y
FROM clusters c
JOIN documents d USING (doc_id)
WHERE c.analysis_id = $analysis_id AND c.cluster IS NOT DISTINCT FROM $cluster
ORDER BY c.doc_id
