-- How concept pairs' NPMI moved across runs of a correlation analysis (a pair missing from a run was
-- not among its reported pairs). Parameters: $analysis_ids, $feature_ids (pairs with either concept).
SELECT analysis_id, feature_a, feature_b, n_ab, npmi, rank
FROM correlations
WHERE list_contains($analysis_ids, analysis_id)
  AND (list_contains($feature_ids, feature_a) OR list_contains($feature_ids, feature_b))
ORDER BY feature_a, feature_b, analysis_id;
