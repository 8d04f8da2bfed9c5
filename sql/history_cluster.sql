-- How clusters' shares moved across runs of a clustering: per run and cluster (-1 = noise, NULL = no
-- selected concept), its share of the documents and its top concept (cluster numbers are not stable
-- across runs; the top concept says which is which). Parameters: $analysis_ids.
SELECT c.analysis_id, c.cluster, count(*) AS size,
       count(*) / sum(count(*)) OVER (PARTITION BY c.analysis_id) AS share,
       any_value(s.top_concepts->0->>'label') AS top_concept
FROM clusters c
LEFT JOIN cluster_summaries s USING (analysis_id, cluster)
WHERE list_contains($analysis_ids, c.analysis_id)
GROUP BY c.analysis_id, c.cluster
ORDER BY c.analysis_id, c.cluster NULLS LAST;
