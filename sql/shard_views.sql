-- The concept vectors: views over the Parquet shards kept beside the database (saeembed/storage/shards.py),
-- one folder per embedding run (run_id=N) and one sub-folder per stored batch. FEATURES_GLOB and
-- DOCUMENTS_GLOB stand for the absolute globs of the shards' two files; saeembed writes them in when it
-- opens the database for writing (again after the database has moved).

-- One row per embedded document. Its shard also holds its doc_features rows and is published by one
-- rename: a document is either embedded with all its concept rows, or not at all, so a killed run resumes
-- exactly where it stopped.
-- n_tokens:       document tokens the reader saw (template tokens excluded)
-- n_tokens_total: document tokens before truncation at max_tokens
-- n_features:     concepts present (max_act > 0)
CREATE OR REPLACE VIEW embedded_documents AS
SELECT run_id, doc_id, n_tokens, n_tokens_total, truncated, n_features
FROM read_parquet(DOCUMENTS_GLOB, hive_partitioning = true, hive_types = {'run_id': INTEGER});

-- The sparse concept vectors, in long format: one row per (document, concept that fired in it).
-- max_act:         max over the document's tokens (the paper's pooling: a row = the concept fired; the diff
--                  counts it present where max_act >= 0.5 x the concept's p90, see concept_percentiles)
-- mean_act:        sum over the document's tokens / n_tokens (zeros included)
-- n_active_tokens: tokens where the concept fired
-- argmax_pos:      0-based index, among the document's own tokens, of the token with max_act
CREATE OR REPLACE VIEW doc_features AS
SELECT run_id, doc_id, feature_id, max_act, mean_act, n_active_tokens, argmax_pos
FROM read_parquet(FEATURES_GLOB, hive_partitioning = true, hive_types = {'run_id': INTEGER});
