-- A stored clustering's documents: cluster, whether they have a selected concept, map position.
-- Parameters: $analysis_id.
SELECT doc_id, cluster, has_concepts, x, y
FROM clusters
WHERE analysis_id = $analysis_id
ORDER BY doc_id
