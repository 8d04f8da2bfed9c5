-- A stored clustering's clusters: size, top concepts and typical documents (JSON). Parameters: $analysis_id.
SELECT cluster, size, top_concepts, typical_docs
FROM cluster_summaries
WHERE analysis_id = $analysis_id
