-- Each concept's share of a run's documents. Parameters: $run_id.
SELECT feature_id, freq FROM concept_frequency WHERE run_id = $run_id
