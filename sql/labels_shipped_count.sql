-- How many labels shipped with an SAE (made without a run) the database holds. Parameters: $sae_id.
SELECT count(*) AS n FROM features WHERE sae_id = $sae_id AND run_id IS NULL
