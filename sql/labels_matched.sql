-- The matches of a concept matching (`saeembed concepts match`) whose score reaches $min_score: the
-- concepts whose labels `saeembed label --from-matches` carries across. Parameters: $analysis_id, $min_score.
SELECT feature_a, feature_b, score
FROM concept_matches
WHERE analysis_id = $analysis_id AND score >= $min_score
ORDER BY score DESC, feature_b, feature_a
