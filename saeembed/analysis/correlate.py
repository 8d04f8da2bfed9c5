"""Concept-correlation mining: concept pairs that go together, and concepts that track a metadata column.

Pairs: NPMI(i, j) = log[P(i,j) / (P(i)P(j))] / −log P(i,j) over binarized document vectors (a concept is
present when it has a row in `doc_features`), as in Jiang et al. (2025). Interesting pairs have high
NPMI and dissimilar labels (label-embedding cosine below `max_label_sim`); pairs that peak on the same
token in most documents where both are present are dropped, since they are one phenomenon seen twice.

Co-occurrence counts XᵀX are accumulated over chunks of documents, so no documents × concepts matrix is
ever held dense: a chunk of CHUNK_DOCS documents is multiplied densely with BLAS when documents have
many concepts (≥ 2% of the SAE's latents, where dense multiply-adds beat sparse bookkeeping), and
otherwise chunks as large as SPARSE_PRODUCTS allows are multiplied as sparse matrices. The concepts ×
concepts count matrix itself is dense (d_sae² int32: 256 MB at 8,192 latents).
"""

from __future__ import annotations

import itertools
import time
from typing import NamedTuple

import numpy as np
import polars as pl
import pyarrow as pa
from scipy import sparse, stats

from saeembed.analysis.predicates import check_predicate
from saeembed.errors import SaeembedError
from saeembed.store import RunInfo, Store, first_row, read_sql

CHUNK_DOCS = 2048
"""Documents per dense chunk."""
SPARSE_PRODUCTS = 2_000_000_000
"""Pair increments per sparse chunk (≈ 400,000 documents of 100 concepts; a few GB at most)."""
DENSE_DENSITY = 0.02
"""Share of latents present per document above which a chunk's XᵀX is computed densely."""


class CorrelationResult(NamedTuple):
    analysis_id: int
    """Key of the analysis in `analyses` and `correlations`."""
    n_docs: int
    """Documents read."""
    candidates: int
    """Pairs with ≥ min_count co-occurrences and NPMI ≥ min_npmi, before the label and token filters."""
    pairs: pl.DataFrame
    """Top pairs by NPMI: feature_a, label_a, feature_b, label_b, n_ab, n_a, n_b, p_b_given_a,
    p_a_given_b, npmi, label_similarity, same_token_share, example_doc_id, rank."""


class ColumnCorrelationResult(NamedTuple):
    analysis_id: int
    """Key of the analysis in `analyses` and `column_correlations`."""
    n_docs: int
    """Documents with a value in the column."""
    kind: str
    """'numeric' (Spearman) or 'categorical' (chi-square)."""
    table: pl.DataFrame
    """Top concepts by q-value: feature_id, label, level, statistic, test, p_value, q_value, rank."""


def cooccurrence(doc_index: np.ndarray, feature_id: np.ndarray, n_docs: int, d_sae: int) -> np.ndarray:
    """[d_sae, d_sae] int32 counts of documents where both concepts are present (diagonal: each concept's
    count), from (document row, concept) pairs sorted by document."""
    counts = np.zeros((d_sae, d_sae), dtype=np.int32)  # counts ≤ documents < 2**31
    per_doc = np.bincount(doc_index, minlength=n_docs)
    dense = feature_id.size / max(n_docs, 1) / d_sae >= DENSE_DENSITY
    for start, end in _chunks(per_doc, dense):
        first, last = doc_index[start], doc_index[end - 1]
        chunk = sparse.csr_matrix(
            (np.ones(end - start, dtype=np.float32), (doc_index[start:end] - first, feature_id[start:end])),
            shape=(last - first + 1, d_sae),
        )
        if dense:
            block = chunk.toarray()
            counts += np.rint(block.T @ block).astype(np.int32)  # exact: counts < 2**24
        else:
            product = (chunk.T.tocsr() @ chunk).tocoo()
            # A sparse product holds each (row, col) once, so fancy-index addition is exact.
            counts[product.row, product.col] += np.rint(product.data).astype(np.int32)
    return counts


def _chunks(per_doc: np.ndarray, dense: bool) -> list[tuple[int, int]]:
    """(start, end) row ranges of whole documents: CHUNK_DOCS documents for the dense product; for the
    sparse one, as many as keep the product's work (Σ concepts² per document) under SPARSE_PRODUCTS, since
    one large sparse product is several times faster than many small ones (measured: 3.2 s for 20,000
    documents at once against 16 s in chunks of 2,048)."""
    ends = np.cumsum(per_doc)
    if dense:
        cuts = np.arange(CHUNK_DOCS, per_doc.size, CHUNK_DOCS)
    else:
        work = np.cumsum(per_doc.astype(np.int64) ** 2)
        cuts = np.searchsorted(work, np.arange(SPARSE_PRODUCTS, work[-1], SPARSE_PRODUCTS)) + 1
    bounds = np.unique(np.concatenate([[0], ends[np.clip(cuts, 1, per_doc.size) - 1], [ends[-1]]]))
    return [(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]


def npmi(n_ab: np.ndarray, n_a: np.ndarray, n_b: np.ndarray, n_docs: int) -> np.ndarray:
    """Normalised PMI (Bouma 2009): log[P(a,b)/(P(a)P(b))] / −log P(a,b); 1 when a and b always co-occur."""
    p_ab, p_a, p_b = n_ab / n_docs, n_a / n_docs, n_b / n_docs
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.log(p_ab / (p_a * p_b)) / -np.log(p_ab)
    return np.where(p_ab >= 1.0, 1.0, value)


def correlate_pairs(
    store: Store,
    corpus: str,
    *,
    where: str | None = None,
    min_npmi: float = 0.6,
    max_label_sim: float = 0.2,
    min_count: int = 5,
    max_same_token: float = 0.5,
    top: int = 50,
) -> CorrelationResult:
    """Concept pairs of `corpus` that go together, stored in `correlations` under a new analysis id."""
    started = time.perf_counter()
    if not -1 <= min_npmi <= 1:
        raise SaeembedError(f"--min-npmi must be between -1 and 1, got {min_npmi}")
    if min_count < 1 or top < 1:
        raise SaeembedError(f"--min-count and --top must be at least 1, got {min_count} and {top}")
    predicate = None if where is None else check_predicate(where)
    run = store.latest_run(corpus)
    rows = _concept_rows(store, run, predicate)
    doc_ids, doc_index = np.unique(rows["doc_id"].to_numpy(), return_inverse=True)
    n_docs = doc_ids.size
    if n_docs == 0:
        raise SaeembedError(f"no embedded documents in corpus '{corpus}'" + (" match --where" if where else ""))
    d_sae = _d_sae(store, run)
    counts = cooccurrence(doc_index, rows["feature_id"].to_numpy(), n_docs, d_sae)
    present = np.diag(counts).copy()
    upper_a, upper_b = np.nonzero(np.triu(counts >= min_count, k=1))
    n_ab = counts[upper_a, upper_b]
    scores = npmi(n_ab, present[upper_a], present[upper_b], n_docs)
    keep = scores >= min_npmi
    candidates = pl.DataFrame(
        {
            "feature_a": upper_a[keep].astype(np.int32),
            "feature_b": upper_b[keep].astype(np.int32),
            "n_ab": n_ab[keep],
            "n_a": present[upper_a[keep]],
            "n_b": present[upper_b[keep]],
            "npmi": scores[keep],
        }
    )
    del counts
    labelled = _label_similarity(store, run, corpus, candidates)
    labelled = labelled.filter(pl.col("label_similarity").is_null() | (pl.col("label_similarity") <= max_label_sim))
    details = _pair_details(store, run, doc_ids, labelled.select("feature_a", "feature_b"))
    table = (
        labelled.join(details.drop("n_ab"), on=["feature_a", "feature_b"], how="left")
        .filter(pl.col("same_token_share") <= max_same_token)
        .with_columns(
            (pl.col("n_ab") / pl.col("n_a")).alias("p_b_given_a"), (pl.col("n_ab") / pl.col("n_b")).alias("p_a_given_b")
        )
        .sort(["npmi", "n_ab", "feature_a", "feature_b"], descending=[True, True, False, False])
        .with_columns(pl.int_range(1, pl.len() + 1).alias("rank"))
    )
    params = {
        "corpus": corpus,
        "where": predicate,
        "min_npmi": min_npmi,
        "max_label_sim": max_label_sim,
        "min_count": min_count,
        "max_same_token": max_same_token,
    }
    columns = [
        "feature_a",
        "feature_b",
        "n_ab",
        "n_a",
        "n_b",
        "p_b_given_a",
        "p_a_given_b",
        "npmi",
        "label_similarity",
        "same_token_share",
        "rank",
    ]
    analysis_id = _store(
        store,
        "correlate",
        params,
        {"n_docs": n_docs, "run": run.run_id},
        "correlations",
        table.select(columns),
        started,
    )
    shown = table.head(top).select(
        "feature_a", "label_a", "feature_b", "label_b", *columns[2:-1], "example_doc_id", "rank"
    )
    return CorrelationResult(analysis_id, n_docs, candidates.height, shown)


def correlate_column(
    store: Store,
    corpus: str,
    column: str,
    *,
    where: str | None = None,
    min_count: int = 5,
    top: int = 50,
) -> ColumnCorrelationResult:
    """Concepts whose presence tracks `meta->>column`: Spearman's ρ for a numeric column, chi-square
    (Cramér's V) for a categorical one; BH q-values over the concepts present in ≥ min_count documents."""
    from statsmodels.stats.multitest import multipletests

    started = time.perf_counter()
    predicate = None if where is None else check_predicate(where)
    run = store.latest_run(corpus)
    sql = "SELECT e.doc_id, d.meta->>$column AS value FROM embedded_documents e JOIN documents d USING (doc_id) "
    sql += f"WHERE e.run_id = $run_id AND ({predicate or 'TRUE'}) AND d.meta->>$column IS NOT NULL"
    values = store.query(sql, {"run_id": run.run_id, "column": column})
    if values.height == 0:
        raise SaeembedError(f"--with-column {column}: no document of '{corpus}' has '{column}' in its meta")
    numbers = values["value"].cast(pl.Float64, strict=False)
    numeric = numbers.null_count() == 0
    n_docs = values.height
    if numeric:
        levels = values.select("doc_id", pl.lit("all").alias("level"), numbers.rank("average").alias("value_rank"))
    else:
        levels = values.select("doc_id", pl.col("value").alias("level"), pl.lit(0.0).alias("value_rank"))
        if levels["level"].n_unique() < 2:
            raise SaeembedError(f"--with-column {column}: a single value ({levels['level'][0]!r}) — nothing to track")
    store.con.register("correlate_levels", levels.to_arrow())
    try:
        counts = store.query(read_sql("correlate_column_counts"), {"run_id": run.run_id})
    finally:
        store.con.unregister("correlate_levels")
    totals = counts.group_by("feature_id").agg(pl.col("n").sum().alias("n_present"), pl.col("rank_sum").sum())
    totals = totals.filter(pl.col("n_present") >= min_count).sort("feature_id")
    if numeric:
        table = _spearman(totals, levels["value_rank"].to_numpy(), n_docs)
    else:
        table = _chi_square(counts, totals, levels.group_by("level").len().sort("level"), n_docs)
    q = multipletests(table["p_value"].to_numpy(), method="fdr_bh")[1] if table.height else np.zeros(0)
    table = (
        table.with_columns(pl.Series("q_value", q), pl.lit(column).alias("column_name"))
        .sort(["q_value", "statistic"], descending=[False, True])
        .with_columns(pl.int_range(1, pl.len() + 1).alias("rank"))
    )
    params = {"corpus": corpus, "column": column, "where": predicate, "min_count": min_count}
    columns = ["column_name", "feature_id", "level", "statistic", "test", "p_value", "q_value", "detail", "rank"]
    analysis_id = _store(
        store,
        "correlate-column",
        params,
        {"n_docs": n_docs, "run": run.run_id},
        "column_correlations",
        table.select(columns),
        started,
    )
    labels = _labels(store, run, corpus)
    shown = table.head(top).join(labels, on="feature_id", how="left").sort("rank")
    return ColumnCorrelationResult(
        analysis_id,
        n_docs,
        "numeric" if numeric else "categorical",
        shown.select("feature_id", "label", "level", "statistic", "test", "p_value", "q_value", "rank"),
    )


def _spearman(totals: pl.DataFrame, ranks: np.ndarray, n_docs: int) -> pl.DataFrame:
    """Spearman's ρ between the column and each concept's presence, from per-concept rank sums: ρ is
    Pearson's r of the ranks, and a 0/1 indicator's ranks are an affine function of it, so
    ρ = (S/N − R̄·p) / (sd_R·sqrt(p(1−p))); p-value from Student's t with N−2 df, as scipy.stats.spearmanr."""
    p = totals["n_present"].to_numpy() / n_docs
    mean_rank, sd_rank = ranks.mean(), ranks.std()
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = (totals["rank_sum"].to_numpy() / n_docs - mean_rank * p) / (sd_rank * np.sqrt(p * (1 - p)))
        rho = np.clip(np.nan_to_num(rho), -1.0, 1.0)
        t = rho * np.sqrt((n_docs - 2) / np.maximum(1 - rho**2, 1e-300))
    p_value = 2 * stats.t.sf(np.abs(t), n_docs - 2)
    return totals.select("feature_id").with_columns(
        pl.lit(None, dtype=pl.Utf8).alias("level"),
        pl.Series("statistic", rho),
        pl.lit("spearman").alias("test"),
        pl.Series("p_value", p_value),
        pl.lit(None, dtype=pl.Utf8).alias("detail"),
    )


def _chi_square(counts: pl.DataFrame, totals: pl.DataFrame, sizes: pl.DataFrame, n_docs: int) -> pl.DataFrame:
    """Chi-square test of presence × level per concept (vectorised scipy.stats.chi2_contingency without
    continuity correction), Cramér's V as the statistic, and the level where the concept is most
    over-represented (observed / expected)."""
    level_names = sizes["level"].to_list()
    level_size = sizes["len"].to_numpy().astype(float)
    features = totals["feature_id"].to_list()
    row_of = {f: i for i, f in enumerate(features)}
    column_of = {level: j for j, level in enumerate(level_names)}
    observed = np.zeros((len(features), len(level_names)))
    for feature_id, level, n in counts.select("feature_id", "level", "n").iter_rows():
        if feature_id in row_of:
            observed[row_of[feature_id], column_of[level]] = n
    present = observed.sum(axis=1, keepdims=True)
    expected_present = present * level_size / n_docs
    absent_observed, expected_absent = level_size - observed, (n_docs - present) * level_size / n_docs
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = np.nansum((observed - expected_present) ** 2 / expected_present, axis=1) + np.nansum(
            (absent_observed - expected_absent) ** 2 / expected_absent, axis=1
        )
        lift = observed / expected_present
    p_value = stats.chi2.sf(chi2, len(level_names) - 1)
    detail = [json_frequencies(level_names, observed[i] / level_size) for i in range(len(features))]
    return totals.select("feature_id").with_columns(
        pl.Series("level", [level_names[j] for j in np.argmax(lift, axis=1)], dtype=pl.Utf8),
        pl.Series("statistic", np.sqrt(chi2 / n_docs)),  # Cramér's V for a 2 × L table
        pl.lit("chi-square").alias("test"),
        pl.Series("p_value", p_value),
        pl.Series("detail", detail, dtype=pl.Utf8),
    )


def json_frequencies(levels: list[str], shares: np.ndarray) -> str:
    """{"level": share of the level's documents where the concept is present, …} as JSON text."""
    import json

    return json.dumps({level: round(float(share), 4) for level, share in zip(levels, shares, strict=True)})


def _concept_rows(store: Store, run: RunInfo, predicate: str | None) -> pl.DataFrame:
    sql = read_sql("correlate_documents")
    if predicate is not None:
        sql = sql.replace("AND (TRUE)", f"AND ({predicate})")
    try:
        return store.query(sql, {"run_id": run.run_id})
    except Exception as error:  # a predicate that parses but fails to run
        raise SaeembedError(f"--where failed: {str(error).splitlines()[0]}") from None


def _d_sae(store: Store, run: RunInfo) -> int:
    return first_row(store.con.execute("SELECT d_sae FROM saes WHERE sae_id = ?", [run.sae_id]))[0]


def _labels(store: Store, run: RunInfo, corpus: str) -> pl.DataFrame:
    from saeembed.search import current_labels

    return current_labels(store, run.sae_id, store.corpus_id(corpus)).select("feature_id", "label", "embedding")


def _label_similarity(store: Store, run: RunInfo, corpus: str, pairs: pl.DataFrame) -> pl.DataFrame:
    """Pairs with label_a, label_b and the cosine of the labels' stored embeddings (null without both)."""
    labels = _labels(store, run, corpus)
    vectors = {f: np.asarray(v, dtype=np.float32) for f, v in labels.select("feature_id", "embedding").iter_rows() if v}
    names = dict(labels.select("feature_id", "label").iter_rows())
    similarity = [
        float(vectors[a] @ vectors[b]) if a in vectors and b in vectors else None
        for a, b in pairs.select("feature_a", "feature_b").iter_rows()
    ]
    return pairs.with_columns(
        pl.Series("label_a", [names.get(a) for a in pairs["feature_a"]], dtype=pl.Utf8),
        pl.Series("label_b", [names.get(b) for b in pairs["feature_b"]], dtype=pl.Utf8),
        pl.Series("label_similarity", similarity, dtype=pl.Float64),
    )


def _pair_details(store: Store, run: RunInfo, doc_ids: np.ndarray, pairs: pl.DataFrame) -> pl.DataFrame:
    schema = {
        "feature_a": pl.Int32,
        "feature_b": pl.Int32,
        "n_ab": pl.Int64,
        "same_token_share": pl.Float64,
        "example_doc_id": pl.Int64,
    }
    if pairs.height == 0:
        return pl.DataFrame(schema=schema)
    store.con.register("correlate_pairs", pairs.to_arrow())
    store.con.register("correlate_docs", pa.table({"doc_id": pa.array(doc_ids, type=pa.int64())}))
    try:
        return store.query(read_sql("correlate_pair_details"), {"run_id": run.run_id}).cast(schema)
    finally:
        store.con.unregister("correlate_pairs")
        store.con.unregister("correlate_docs")


def _store(
    store: Store, kind: str, params: dict, inputs: dict, table_name: str, rows: pl.DataFrame, started: float
) -> int:
    store.con.register("new_analysis_rows", rows.to_arrow())  # outside the transaction: see Store.write_batch
    try:
        with store.transaction():
            analysis_id = store.record_analysis(kind, params, inputs, round(time.perf_counter() - started, 3))
            store.con.execute(
                f"INSERT INTO {table_name} SELECT ?, {', '.join(rows.columns)} FROM new_analysis_rows", [analysis_id]
            )
    finally:
        store.con.unregister("new_analysis_rows")
    return analysis_id
