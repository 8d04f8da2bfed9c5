-- Forget every kept p90 (concept_percentiles is a cache: the next analysis that needs them recomputes them).
DELETE FROM concept_percentiles
