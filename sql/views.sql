-- Views for the questions people ask most; safe to query from any DuckDB client.

-- Each embedding run with its corpus and SAE names.
CREATE OR REPLACE VIEW runs AS
SELECT r.run_id, c.name AS corpus, s.name AS sae, r.reader_model, r.layer, r.max_tokens,
       r.chat_template, r.dtype, r.status, r.created_at, r.updated_at,
       (SELECT count(*) FROM embedded_documents e WHERE e.run_id = r.run_id) AS n_docs
FROM embed_runs r
JOIN corpora c USING (corpus_id)
JOIN saes s USING (sae_id);

-- Share of a run's documents in which each concept is present.
CREATE OR REPLACE VIEW concept_frequency AS
WITH totals AS (SELECT run_id, count(*) AS n_docs FROM embedded_documents GROUP BY run_id)
SELECT f.run_id, f.feature_id, count(*) AS n_docs, count(*) / any_value(t.n_docs) AS freq,
       avg(f.max_act) AS mean_max_act, max(f.max_act) AS max_act
FROM doc_features f
JOIN totals t USING (run_id)
GROUP BY f.run_id, f.feature_id;

-- Every concept label ever made, newest first, with its SAE's name (relabelling keeps history).
CREATE OR REPLACE VIEW label_history AS
SELECT s.name AS sae, f.feature_id, f.method, f.model, f.label, f.description, f.auroc, f.detection,
       c.name AS corpus, f.created_at, f.label_id
FROM features f
JOIN saes s USING (sae_id)
LEFT JOIN embed_runs r USING (run_id)
LEFT JOIN corpora c ON c.corpus_id = r.corpus_id
ORDER BY f.created_at DESC, f.label_id DESC;

-- The newest label of each concept per SAE, corpus it was made from (NULL: shipped with the SAE) and
-- method: join it to doc_features on feature_id (and the run's SAE) to read concepts by name.
CREATE OR REPLACE VIEW concept_labels AS
SELECT s.name AS sae, f.sae_id, c.name AS corpus, f.feature_id, f.method, f.label, f.description, f.auroc,
       f.detection, f.created_at
FROM features f
JOIN saes s USING (sae_id)
LEFT JOIN embed_runs r USING (run_id)
LEFT JOIN corpora c ON c.corpus_id = r.corpus_id
QUALIFY row_number() OVER (
    PARTITION BY f.sae_id, c.name, f.feature_id, f.method ORDER BY f.created_at DESC, f.label_id DESC
) = 1;
