-- How many concepts rose and fell significantly (q < 0.05, |Δ| ≥ $min_delta) in one diff.
SELECT count(*) FILTER (WHERE delta > 0) AS rising, count(*) FILTER (WHERE delta < 0) AS falling
FROM diff_results
WHERE analysis_id = $analysis_id AND q_value < 0.05 AND abs(delta) >= $min_delta;
