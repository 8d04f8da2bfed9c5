-- One stored clustering, per cluster (-1 = HDBSCAN noise, NULL = none of the selected concepts): its size,
-- share of the documents, top concept and most typical document. Parameters: $analysis_id.
SELECT c.cluster, count(*) AS size, count(*) / sum(count(*)) OVER () AS share,
       any_value(s.top_concepts->0->>'label') AS top_concept,
       any_value((s.typical_docs->>0)::BIGINT) AS typical_doc_id
FROM clusters c
LEFT JOIN cluster_summaries s USING (analysis_id, cluster)
WHERE c.analysis_id = $analysis_id
GROUP BY c.cluster
ORDER BY c.cluster NULLS LAST
