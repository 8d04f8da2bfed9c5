-- The significant concepts of a diff that its hypotheses are drawn from: the first $top by the diff's
-- ranking with q < $alpha. Parameters: $analysis_id, $top, $alpha.
SELECT rank, feature_id, freq_a, freq_b, delta, q_value
FROM diff_results
WHERE analysis_id = $analysis_id AND grp IS NULL AND q_value < $alpha
ORDER BY rank
LIMIT $top;
