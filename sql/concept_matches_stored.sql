-- A concept matching's stored matches, best first, and its summary (the same on every row).
-- Parameters: $analysis_id, $limit.
SELECT m.feature_a, m.feature_b, m.score, m.runner_up, m.runner_up_score,
       s.n_docs, s.n_concepts_a, s.share_matched, s.mean_best, s.svcca, s.svcca_reference, s.itda_jaccard
FROM concept_matches m
JOIN concept_match_summary s USING (analysis_id)
WHERE m.analysis_id = $analysis_id
ORDER BY m.score DESC, m.feature_a
LIMIT $limit
