-- saeembed's DuckDB schema. Every statement is idempotent: opening a database applies this file.
-- Layout choices and the measurements behind them are in docs/storage.md.

CREATE SEQUENCE IF NOT EXISTS corpus_id_seq START 1;
CREATE SEQUENCE IF NOT EXISTS doc_id_seq START 1;
CREATE SEQUENCE IF NOT EXISTS sae_id_seq START 1;
CREATE SEQUENCE IF NOT EXISTS run_id_seq START 1;

-- A named collection of documents (one ingest target).
CREATE TABLE IF NOT EXISTS corpora (
    corpus_id  INTEGER PRIMARY KEY DEFAULT nextval('corpus_id_seq'),
    name       VARCHAR NOT NULL UNIQUE,
    source     VARCHAR,                 -- path of the first ingest
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    meta       JSON
);

-- One row per ingested text. content_hash covers text, external_id and meta, so re-ingesting the
-- same rows adds nothing. meta holds every source column other than the text and id columns.
CREATE TABLE IF NOT EXISTS documents (
    doc_id       BIGINT PRIMARY KEY DEFAULT nextval('doc_id_seq'),
    corpus_id    INTEGER NOT NULL,
    external_id  VARCHAR,
    text         VARCHAR NOT NULL,
    meta         JSON,
    content_hash VARCHAR NOT NULL,
    ingested_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,
    UNIQUE (corpus_id, content_hash)
);

-- Units below the document (`embed --unit sentence|paragraph|chunk:N`). Each unit is a document of the unit
-- corpus 'NAME:UNIT' (its text the span, its meta the parent document's, so predicates on meta select units
-- too); this table says which document it comes from and where. A document's spans partition its text.
CREATE TABLE IF NOT EXISTS units (
    doc_id        BIGINT PRIMARY KEY,   -- the unit, a document of the unit corpus
    corpus_id     INTEGER NOT NULL,     -- the unit corpus
    parent_doc_id BIGINT NOT NULL,      -- the document it is a span of
    unit_index    INTEGER NOT NULL,     -- 0-based, in text order
    char_start    INTEGER NOT NULL,     -- [char_start, char_end) in the parent's text (Python string indices)
    char_end      INTEGER NOT NULL
);

-- Every SAE that has embedded something. fingerprint hashes the config and weights, so the same
-- checkpoint registers once wherever it lives on disk.
CREATE TABLE IF NOT EXISTS saes (
    sae_id        INTEGER PRIMARY KEY DEFAULT nextval('sae_id_seq'),
    name          VARCHAR NOT NULL,
    fingerprint   VARCHAR NOT NULL UNIQUE,
    path          VARCHAR,
    format        VARCHAR NOT NULL,
    reader_model  VARCHAR,
    layer         INTEGER,
    hook          VARCHAR,
    arch          VARCHAR NOT NULL,
    d_in          INTEGER NOT NULL,
    d_sae         INTEGER NOT NULL,
    k             INTEGER,
    registered_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    meta          JSON
);

-- One embedding of one corpus by one SAE under settings that change the vectors (settings_key).
-- Rerunning `embed` with the same settings resumes this run instead of starting another.
CREATE TABLE IF NOT EXISTS embed_runs (
    run_id        INTEGER PRIMARY KEY DEFAULT nextval('run_id_seq'),
    corpus_id     INTEGER NOT NULL,
    sae_id        INTEGER NOT NULL,
    reader_model  VARCHAR NOT NULL,
    layer         INTEGER NOT NULL,
    max_tokens    INTEGER NOT NULL,
    chat_template BOOLEAN NOT NULL,
    dtype         VARCHAR NOT NULL,
    settings_key  VARCHAR NOT NULL UNIQUE,
    status        VARCHAR NOT NULL,     -- 'running' until every document of the corpus is embedded, then 'complete'
    created_at    TIMESTAMP NOT NULL DEFAULT current_timestamp,
    updated_at    TIMESTAMP NOT NULL DEFAULT current_timestamp,
    config        JSON                  -- everything else: device, batch size, timings of the last invocation
);

-- embedded_documents and doc_features are views over Parquet shards beside the database: sql/shard_views.sql.

-- Each concept's 90th percentile of nonzero max activations over one or two embedding runs, rows pooled
-- (sql/concept_p90.sql): retrieval's normaliser and the diff's presence threshold. A cache: `runs` names
-- the runs ('3', '1,3'), `state` what they held when it was computed (saeembed/storage/percentiles.py); an entry
-- whose runs have since gained documents is recomputed.
CREATE TABLE IF NOT EXISTS concept_percentiles (
    runs       VARCHAR NOT NULL,
    state      VARCHAR NOT NULL,
    feature_id INTEGER NOT NULL,
    p90        DOUBLE NOT NULL,
    n_docs     BIGINT NOT NULL
);

-- Concept labels, one row per label made (relabelling adds rows, so history is kept).
-- method:    'tokens' (firing tokens + c-TF-IDF words, offline) or 'llm' (auto-interp, Jiang et al. 2025)
-- model:     what made the label (the LLM, or the tokenizer/vectoriser for 'tokens')
-- run_id:    the embedding run whose documents the label was made from
-- auroc:     offline score: how well the label's sentence embedding separates held-out activating from
--            non-activating documents (all-MiniLM-L6-v2 cosine, area under the ROC curve)
-- detection: LLM judge's balanced accuracy on held-out positives and negatives (NULL without a judge)
-- embedding: computed once when the label is scored, reused by every concept search index
CREATE SEQUENCE IF NOT EXISTS label_id_seq START 1;
CREATE TABLE IF NOT EXISTS features (
    label_id    BIGINT PRIMARY KEY DEFAULT nextval('label_id_seq'),
    sae_id      INTEGER NOT NULL,
    feature_id  INTEGER NOT NULL,
    method      VARCHAR NOT NULL,
    model       VARCHAR NOT NULL,
    label       VARCHAR NOT NULL,
    description VARCHAR,
    run_id      INTEGER,
    auroc       FLOAT,
    detection   FLOAT,
    details     JSON,
    created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,
    embedding       FLOAT[],            -- the label's sentence embedding (unit norm), for concept search
    embedding_model VARCHAR             -- the sentence model that made it
);
-- Databases made before label embeddings were kept gain the columns (labels made then get embedded on
-- the next concept search).
ALTER TABLE features ADD COLUMN IF NOT EXISTS embedding FLOAT[];
ALTER TABLE features ADD COLUMN IF NOT EXISTS embedding_model VARCHAR;

-- Every LLM request and its response, so a rerun never pays for the same call twice.
-- key: sha256 of the canonical JSON of (backend, model, messages, generation settings)
CREATE TABLE IF NOT EXISTS llm_cache (
    key        VARCHAR PRIMARY KEY,
    model      VARCHAR NOT NULL,
    request    JSON NOT NULL,
    response   VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- Dense sentence embeddings of documents (unit norm), one per document and sentence model: label
-- scoring, concept search's dense side and the dense retrieval baseline all read them from here.
CREATE TABLE IF NOT EXISTS doc_embeddings (
    model     VARCHAR NOT NULL,
    doc_id    BIGINT NOT NULL,
    embedding FLOAT[] NOT NULL,
    PRIMARY KEY (model, doc_id)
);

-- One row per analysis run (diff, correlate, …): what was asked, on how much data, and when, so reruns
-- are comparable. Results live in per-kind tables keyed by analysis_id.
CREATE SEQUENCE IF NOT EXISTS analysis_id_seq START 1;
CREATE TABLE IF NOT EXISTS analyses (
    analysis_id BIGINT PRIMARY KEY DEFAULT nextval('analysis_id_seq'),
    kind        VARCHAR NOT NULL,       -- 'diff', 'correlate', 'correlate-column', …
    params      JSON NOT NULL,          -- the call's parameters (corpora, predicates, thresholds)
    inputs      JSON,                   -- input sizes, e.g. {"n_a": 1500, "n_b": 1500, "run_a": 1}
    seconds     DOUBLE,
    created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- Dataset diff: per concept, how often it is present on each side, with the test of the difference.
-- grp: the group compared with the rest in one-vs-rest diffs (`--by COLUMN`); NULL for A vs B.
CREATE TABLE IF NOT EXISTS diff_results (
    analysis_id BIGINT NOT NULL,
    grp         VARCHAR,
    feature_id  INTEGER NOT NULL,
    n_a         BIGINT NOT NULL,        -- documents of A where the concept is present
    n_b         BIGINT NOT NULL,
    freq_a      DOUBLE NOT NULL,        -- n_a / documents in A
    freq_b      DOUBLE NOT NULL,
    delta       DOUBLE NOT NULL,        -- freq_a - freq_b
    ratio       DOUBLE,                 -- freq_a / freq_b (NULL when freq_b = 0)
    ci_low      DOUBLE NOT NULL,        -- 95% confidence interval of delta
    ci_high     DOUBLE NOT NULL,
    p_value     DOUBLE NOT NULL,
    q_value     DOUBLE NOT NULL,        -- Benjamini–Hochberg over the analysis's concepts (per group)
    test        VARCHAR NOT NULL,       -- 'two-proportion z', 'fisher', 'mcnemar'
    rank        INTEGER NOT NULL        -- position in the default ranking (1 = first)
);

-- Concept pairs that go together (NPMI over binarized document vectors).
CREATE TABLE IF NOT EXISTS correlations (
    analysis_id      BIGINT NOT NULL,
    feature_a        INTEGER NOT NULL,
    feature_b        INTEGER NOT NULL,
    n_ab             BIGINT NOT NULL,   -- documents with both
    n_a              BIGINT NOT NULL,
    n_b              BIGINT NOT NULL,
    p_b_given_a      DOUBLE NOT NULL,
    p_a_given_b      DOUBLE NOT NULL,
    npmi             DOUBLE NOT NULL,
    label_similarity DOUBLE,            -- labels' cosine: sentence embeddings, or peak tokens of token labels
    same_token_share DOUBLE NOT NULL,   -- share of co-occurrences where both peak on the same token
    rank             INTEGER NOT NULL
);

-- Concepts that track a metadata column (`correlate --with-column`).
CREATE TABLE IF NOT EXISTS column_correlations (
    analysis_id BIGINT NOT NULL,
    column_name VARCHAR NOT NULL,
    feature_id  INTEGER NOT NULL,
    level       VARCHAR,                -- categorical columns: the level the concept is most over-represented in
    statistic   DOUBLE NOT NULL,        -- Spearman rho (numeric) or Cramér's V (categorical)
    test        VARCHAR NOT NULL,       -- 'spearman' or 'chi-square'
    p_value     DOUBLE NOT NULL,
    q_value     DOUBLE NOT NULL,
    detail      JSON,                   -- per-level frequencies for categorical columns
    rank        INTEGER NOT NULL
);

-- Concept-filtered clustering: which cluster each document fell in. cluster -1 = HDBSCAN noise;
-- documents with none of the selected concepts are kept with cluster NULL and has_concepts = false.
CREATE TABLE IF NOT EXISTS clusters (
    analysis_id  BIGINT NOT NULL,
    doc_id       BIGINT NOT NULL,
    cluster      INTEGER,
    has_concepts BOOLEAN NOT NULL,
    x            DOUBLE,                -- 2-D map coordinates of the document (NULL when not mapped)
    y            DOUBLE
);

-- One row per cluster: its size and the concepts that set it apart (in-cluster minus out-of-cluster
-- frequency), with its most typical documents.
CREATE TABLE IF NOT EXISTS cluster_summaries (
    analysis_id  BIGINT NOT NULL,
    cluster      INTEGER NOT NULL,
    size         BIGINT NOT NULL,
    top_concepts JSON NOT NULL,         -- [{"feature_id", "label", "label_source", "freq_in", "freq_out", "delta"}, …]
    typical_docs JSON NOT NULL          -- doc_ids, most typical first
);

-- Property retrieval: the documents a query returned, best first, and why each matched.
CREATE TABLE IF NOT EXISTS retrieval_results (
    analysis_id BIGINT NOT NULL,
    mode        VARCHAR NOT NULL,       -- 'sae', 'dense' or 'fused'
    rank        INTEGER NOT NULL,
    doc_id      BIGINT NOT NULL,
    score       DOUBLE NOT NULL,
    concepts    JSON                    -- sae/fused: [{"feature_id", "label", "weight", "activation"}, …]
);

-- Hypotheses an LLM drew from a diff's top concepts, each judged on held-out documents of both sides.
CREATE TABLE IF NOT EXISTS diff_hypotheses (
    analysis_id   BIGINT NOT NULL,      -- the diff's
    hypothesis_id INTEGER NOT NULL,
    hypothesis    VARCHAR NOT NULL,
    more_in       VARCHAR NOT NULL,     -- the side the LLM said it is more common in: 'A' or 'B'
    n_a           BIGINT NOT NULL,      -- judged documents of A where the judge said it holds
    n_b           BIGINT NOT NULL,
    size_a        BIGINT NOT NULL,      -- judgements on A that could be read
    size_b        BIGINT NOT NULL,
    freq_a        DOUBLE NOT NULL,
    freq_b        DOUBLE NOT NULL,
    delta         DOUBLE NOT NULL,
    ci_low        DOUBLE NOT NULL,
    ci_high       DOUBLE NOT NULL,
    p_value       DOUBLE NOT NULL,
    q_value       DOUBLE NOT NULL,      -- Benjamini–Hochberg over the diff's hypotheses
    test          VARCHAR NOT NULL,
    confirmed     BOOLEAN NOT NULL,     -- q < 0.05 with the difference on the claimed side
    seconds       DOUBLE
);

-- Concept matching (`saeembed concepts match RUN_A RUN_B`): each concept of run A with its closest concept of
-- run B and the runner-up. score: the Pearson correlation of the two concepts' max activations over the
-- shared documents (method 'correlation'), or the cosine of their decoder directions ('decoder').
CREATE TABLE IF NOT EXISTS concept_matches (
    analysis_id     BIGINT NOT NULL,
    feature_a       INTEGER NOT NULL,   -- concept of run A
    feature_b       INTEGER NOT NULL,   -- its best match in run B
    score           DOUBLE NOT NULL,
    runner_up       INTEGER,            -- B's second best (NULL when B has no other candidate)
    runner_up_score DOUBLE
);

-- How universal the two runs' concept spaces are: one row per concept matching.
CREATE TABLE IF NOT EXISTS concept_match_summary (
    analysis_id     BIGINT NOT NULL,
    n_docs          BIGINT NOT NULL,    -- shared documents the activations were read from
    n_concepts_a    INTEGER NOT NULL,   -- concepts of A that were matched
    share_matched   DOUBLE NOT NULL,    -- share of them whose best score is at least 0.5
    mean_best       DOUBLE NOT NULL,    -- mean best score
    svcca           DOUBLE,             -- SVCCA of A's activations and their matches' (NULL: too few)
    svcca_reference DOUBLE,             -- the same with the pairs shuffled
    itda_jaccard    DOUBLE              -- two ITDA dictionaries: Jaccard similarity of their atoms
);
ALTER TABLE concept_match_summary ADD COLUMN IF NOT EXISTS itda_jaccard DOUBLE;

-- The digest of the schema.sql and views.sql a database was last brought up to: opening a database that
-- already has them applies nothing, so opening for writing changes nothing in the file.
CREATE TABLE IF NOT EXISTS schema_version (
    digest     VARCHAR NOT NULL,
    applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
