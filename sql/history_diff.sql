-- How concepts' differences moved across runs of a diff: Δ, its interval and q per run.
-- Parameters: $analysis_ids (the runs), $feature_ids (the concepts to follow).
SELECT analysis_id, grp, feature_id, freq_a, freq_b, delta, ci_low, ci_high, q_value, rank
FROM diff_results
WHERE list_contains($analysis_ids, analysis_id) AND list_contains($feature_ids, feature_id)
ORDER BY feature_id, grp, analysis_id;
