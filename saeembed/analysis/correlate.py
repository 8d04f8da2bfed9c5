"""Concept-correlation mining: concept pairs that go together, and concepts that track a metadata column.

Pairs: NPMI(i, j) = log[P(i,j) / (P(i)P(j))] / −log P(i,j) over binarized document vectors (a concept is
present in a document when it has a row in `doc_features`), as in Jiang et al. (2025). Reported pairs have
high NPMI and dissimilar labels (cosine at most `max_label_sim` between the labels' sentence embeddings, or
between the peak-token counts of two token labels); pairs that peak on the same token in most documents
where both are present are dropped, since they are one phenomenon seen twice.

Co-occurrence is counted sparsely, never through a documents × concepts matrix; at a million documents of
~100 concepts there are ≈ 5·10⁹ co-occurrences, far more than a sparse product counts per second on a
core, so the counting avoids most of them:

1. A bound prunes concept pairs. NPMI grows with P(i,j) ≤ min(P(i), P(j)), so NPMI(i,j) ≤
   log max(P(i),P(j)) / log min(P(i),P(j)): with concepts ranked by frequency, concept i can only reach
   `min_npmi` = t > 0 with concepts of frequency ≥ P(i)^(1/t) — a band along the diagonal of the
   concepts × concepts counts. Concepts in fewer than `min_count` documents are dropped first.
2. Only one triangle of the band is counted, in blocks: ranks are cut into blocks of equal concept-row
   mass, and block [a, b) is counted against ranks [a, c), c the end of the band of its rarest concept:
   C[a:c, a:b] = X[:, a:c]ᵀ X[:, a:b] over chunks of documents (sparse products, or dense BLAS where both
   sides are dense enough), blocks on all cores (scipy and BLAS release the GIL).
3. Frequent concepts are screened on a sample. NPMI ≥ t needs n_ij ≥ L_ij = max(min_count,
   N·(P(i)P(j))^(1/(1+t))). A seeded random SAMPLE_SHARE of the documents (drawn without replacement) is
   a uniform sample, where a pair with n_ij ≥ L_ij has, by the Chernoff–Hoeffding bound (which holds for
   sampling without replacement), at least μ − sqrt(2μ·ln(1/MISS_PROBABILITY)) co-occurrences
   (μ = share × L_ij) except with probability MISS_PROBABILITY. Pairs of concepts frequent enough for that
   screen to be ≥ 1 are counted on the sample first, and only the pairs that pass are counted on the other
   documents; pairs with a rarer concept (cheap: few documents) are counted on every document.

So every count, probability and NPMI reported is exact; what is not certain is only that a pair meeting
both thresholds among frequent concepts is found: each is missed with probability ≤ MISS_PROBABILITY
(10⁻⁹). With few documents the sample screens nothing and the whole count is exact.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import polars as pl
import pyarrow as pa
from scipy import sparse, stats

from saeembed.analysis.presence import count_present
from saeembed.concepts.dense import SentenceEmbedder
from saeembed.concepts.provenance import concept_labels, current_labels, with_labels
from saeembed.errors import SaeembedError
from saeembed.options import CorrelateOptions
from saeembed.storage.percentiles import presence_thresholds
from saeembed.storage.predicates import Predicate, parse_predicate
from saeembed.storage.store import RunInfo, Store

CHUNK_NNZ = 1 << 23
"""Concept rows per chunk of documents: a block's operands per chunk stay within a few MB (cache)."""
BLOCKS = 16
"""Blocks of equal concept-row mass the ranks are cut into (the diagonal blocks count both halves of a
square, ≈ 1/(2·BLOCKS) of the work wasted; more blocks cost more passes over the chunks)."""
MAX_BLOCK_WIDTH = 2048
"""Widest block, in concepts: bounds a block's count matrix (band × width int32) per worker."""
DENSE_PRODUCT = 0.0025
"""Product of the two operands' densities above which a block is multiplied densely: a sparse product pays
per co-occurrence counted, dense float32 BLAS per multiply-add at about 1/800 of that cost (measured on the
project's CPU machine), so dense wins when density_left × density_right > 2/800."""
DENSE_TILE_CELLS = 1 << 25
"""Documents × concepts cells of one dense operand (128 MB as float32)."""
SAMPLE_SHARE = 1 / 8
"""Share of documents (a seeded uniform sample) on which pairs of frequent concepts are screened."""
MISS_PROBABILITY = 1e-9
"""Largest chance that the sample screen misses a pair meeting both thresholds."""
MAX_CANDIDATES = 1_000_000
"""Candidate pairs kept (those of highest NPMI) for the label and token filters; the count is exact."""
FIRST_BATCH = 256
"""Candidates checked against the label and token filters at first (then 4× more each round)."""
PAIR_SCHEMA = {
    "feature_a": pl.Int32,
    "feature_b": pl.Int32,
    "n_ab": pl.Int64,
    "n_a": pl.Int64,
    "n_b": pl.Int64,
    "npmi": pl.Float64,
    "label_a": pl.Utf8,
    "label_b": pl.Utf8,
    "label_similarity": pl.Float64,
    "same_token_share": pl.Float64,
    "example_doc_id": pl.Int64,
}


class PairCounts(NamedTuple):
    feature_a: np.ndarray
    """int32: the lower concept id of each pair, pairs in descending NPMI (ties: more co-occurrences)."""
    feature_b: np.ndarray
    """int32: the higher concept id."""
    n_ab: np.ndarray
    """int64: documents where both are present (exact)."""
    n_a: np.ndarray
    """int64: documents where feature_a is present."""
    n_b: np.ndarray
    """int64: documents where feature_b is present."""
    npmi: np.ndarray
    """float64: NPMI of the pair."""
    total: int
    """Pairs with n_ab ≥ min_count and NPMI ≥ min_npmi (the arrays hold the best MAX_CANDIDATES of them)."""


class CorrelationResult(NamedTuple):
    analysis_id: int
    """Key of the analysis in `analyses` and `correlations`."""
    n_docs: int
    """Documents read: the run's embedded documents that satisfy `where`."""
    candidates: int
    """Pairs with ≥ min_count co-occurrences and NPMI ≥ min_npmi, before the label and token filters."""
    pairs: pl.DataFrame
    """The top pairs (those stored), by NPMI: feature_a, feature_b, n_ab, n_a, n_b, p_b_given_a, p_a_given_b,
    npmi, label_similarity, same_token_share, example_doc_id, rank, then each concept's label, label_source,
    label_score and peak_tokens (suffixed _a and _b; see concepts.provenance)."""


class ColumnCorrelationResult(NamedTuple):
    analysis_id: int
    """Key of the analysis in `analyses` and `column_correlations`."""
    n_docs: int
    """Documents with a value in the column."""
    kind: str
    """'numeric' (Spearman) or 'categorical' (chi-square)."""
    table: pl.DataFrame
    """The top concepts (all are stored), by q-value: feature_id, level, statistic, test, p_value, q_value,
    rank, label, label_source, label_score, peak_tokens."""


class _Plan(NamedTuple):
    """What the blocks share: the chunks, the sample, and the thresholds."""

    chunks: list[sparse.csc_matrix]
    """The sample's documents, then the others', × ranks, in chunks of consecutive documents."""
    sample_chunks: int
    """The first chunks, which hold the sample."""
    share: float
    """Share of the documents in the sample."""
    first_exact: int
    """First rank whose pairs are counted on every document (rarer concepts: the screen can't help)."""
    n: np.ndarray
    """Documents per rank."""
    n_docs: int
    """Documents read (N)."""
    min_npmi: float
    """Least NPMI of a pair."""
    min_count: int
    """Fewest documents with both concepts."""


def npmi(n_ab: np.ndarray, n_a: np.ndarray, n_b: np.ndarray, n_docs: int) -> np.ndarray:
    """Normalised PMI (Bouma 2009): log[P(a,b)/(P(a)P(b))] / −log P(a,b); 1 when a and b are in every document."""
    p_ab, p_a, p_b = n_ab / n_docs, n_a / n_docs, n_b / n_docs
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.log(p_ab / (p_a * p_b)) / -np.log(p_ab)
    return np.where(p_ab >= 1.0, 1.0, value)


def least_count(n_a: np.ndarray, n_b: np.ndarray, n_docs: int, min_npmi: float, min_count: int) -> np.ndarray:
    """The fewest co-occurrences with which concepts present in n_a and n_b documents reach both thresholds:
    max(min_count, N·(P(a)P(b))^(1/(1+t))), since NPMI ≥ t ⇔ P(a,b)^(1+t) ≥ P(a)P(b) (for t > −1)."""
    least = np.full(np.broadcast(n_a, n_b).shape, float(min_count))
    if min_npmi > -1:
        least = np.maximum(least, n_docs * ((n_a / n_docs) * (n_b / n_docs)) ** (1 / (1 + min_npmi)))
    return least


def screen(expected: np.ndarray) -> np.ndarray:
    """Fewest sample co-occurrences a pair expected to have `expected` there shows, except with probability
    MISS_PROBABILITY (Chernoff–Hoeffding lower tail)."""
    return expected - np.sqrt(2 * expected * np.log(1 / MISS_PROBABILITY))


def count_pairs(
    rows: np.ndarray, features: np.ndarray, n_docs: int, *, min_npmi: float, min_count: int, seed: int = 0
) -> PairCounts:
    """The concept pairs with n_ab ≥ min_count and NPMI ≥ min_npmi, with exact counts, from the (document row
    in [0, n_docs), concept id) pairs of the binarized vectors (any order, no duplicates). `seed` orders the
    documents for the sample screen (see the module's docstring)."""
    present = np.bincount(features) if features.size else np.zeros(0, dtype=np.int64)
    kept = np.flatnonzero(present >= min_count)
    by_rank = kept[np.argsort(-present[kept], kind="stable")]  # rank 0 = most frequent concept
    n = present[by_rank]
    if by_rank.size < 2:
        return _pair_counts([], by_rank, n)
    rank_of = np.full(present.size, by_rank.size, dtype=np.int32)
    rank_of[by_rank] = np.arange(by_rank.size, dtype=np.int32)
    ranks = rank_of[features]
    if (ranks == by_rank.size).any():
        keep = ranks < by_rank.size
        rows, ranks = rows[keep], ranks[keep]
    if np.any(rows[1:] < rows[:-1]):
        order = np.argsort(rows, kind="stable")
        rows, ranks = rows[order], ranks[order]
    n_sample = int(n_docs * SAMPLE_SHARE)
    in_sample = np.zeros(n_docs, dtype=bool)
    in_sample[np.random.default_rng(seed).permutation(n_docs)[:n_sample]] = True
    workers = len(os.sched_getaffinity(0))
    with ThreadPoolExecutor(workers) as pool:
        chunks, sample_chunks = _chunks(rows, ranks, in_sample, by_rank.size, pool)
        del rows, ranks
        share = n_sample / n_docs
        # The screen asks ≥ 1 co-occurrence in the sample of the pairs of ranks [0, first_exact) only (it
        # grows with frequency where it is ≥ 1, so those ranks are a prefix); rarer ranks count everything.
        rarest_partner = least_count(n, n, n_docs, min_npmi, min_count)
        first_exact = int((screen(share * rarest_partner) >= 1).sum())
        plan = _Plan(chunks, sample_chunks, share, first_exact, n, n_docs, min_npmi, min_count)
        blocks = _blocks(n, n_docs, min_npmi)
        # Largest first, so the workers finish together.
        blocks.sort(key=lambda block: -float(n[block[0] : block[1]].sum()) * float(n[block[0] : block[2]].sum()))
        parts = list(pool.map(lambda block: _block_pairs(plan, block), blocks))
    return _pair_counts(parts, by_rank, n)


def _blocks(n: np.ndarray, n_docs: int, min_npmi: float) -> list[tuple[int, int, int, bool]]:
    """(a, b, c, dense) per block of ranks [a, b): counted against ranks [a, c), densely or not."""
    m = n.size
    if min_npmi > 0:
        # Partners of rank i need a frequency of at least P(i)^(1/t); the slack keeps rounding from
        # ever excluding a pair on the boundary.
        least = n_docs * np.exp(np.log(n / n_docs) / min_npmi) * (1 - 1e-9)
        band_end = np.searchsorted(-n, -least, side="right")
    else:
        band_end = np.full(m, m)
    mass = np.concatenate([[0], np.cumsum(n, dtype=np.float64)])
    cuts = np.searchsorted(mass, np.linspace(0, mass[-1], BLOCKS + 1)[1:-1], side="right")
    edges = np.unique(np.concatenate([[0], cuts, [m]]))
    blocks = []
    for first, last in itertools.pairwise(edges):
        for a in range(int(first), int(last), MAX_BLOCK_WIDTH):
            b = min(int(last), a + MAX_BLOCK_WIDTH)
            c = max(b, int(band_end[b - 1]))
            density_left = (mass[c] - mass[a]) / (n_docs * (c - a))
            density_right = (mass[b] - mass[a]) / (n_docs * (b - a))
            blocks.append((a, b, c, density_left * density_right >= DENSE_PRODUCT))
    return blocks


def _chunks(
    rows: np.ndarray, ranks: np.ndarray, in_sample: np.ndarray, m: int, pool: ThreadPoolExecutor
) -> tuple[list[sparse.csc_matrix], int]:
    """CSC matrices (documents × ranks) of the sample's documents, then of the others', each over
    consecutive documents with about CHUNK_NNZ concept rows; and how many hold the sample. `rows` ascends."""
    groups = []
    for members in (in_sample, ~in_sample):
        inside = members[rows]
        group_rows = (np.cumsum(members, dtype=np.int32) - 1)[rows[inside]]  # ascending, numbered in the group
        # Cut every CHUNK_NNZ entries, moved back to the first entry of that document.
        cuts = np.searchsorted(group_rows, group_rows[CHUNK_NNZ::CHUNK_NNZ])
        groups.append((group_rows, ranks[inside], np.unique(np.concatenate([[0], cuts, [group_rows.size]]))))
    ones = np.ones(CHUNK_NNZ + m, dtype=np.float32)  # a chunk holds < CHUNK_NNZ + one document's concepts

    def chunk(group_rows: np.ndarray, group_ranks: np.ndarray, lo: int, hi: int) -> sparse.csc_matrix:
        first, last = int(group_rows[lo]), int(group_rows[hi - 1]) + 1
        indptr = np.searchsorted(group_rows[lo:hi], np.arange(first, last + 1)).astype(np.int32)
        return sparse.csr_matrix((ones[: hi - lo], group_ranks[lo:hi], indptr), shape=(last - first, m)).tocsc()

    jobs = [
        (rows_, ranks_, int(lo), int(hi)) for rows_, ranks_, bounds in groups for lo, hi in itertools.pairwise(bounds)
    ]
    return list(pool.map(lambda job: chunk(*job), jobs)), len(groups[0][2]) - 1


def _columns(chunk: sparse.csc_matrix, ranks: slice | np.ndarray) -> sparse.csc_matrix:
    """The chunk's documents × the given ranks: a view for a range (no copy), a gather for an array."""
    if isinstance(ranks, np.ndarray):
        return chunk[:, ranks]
    lo, hi = chunk.indptr[ranks.start], chunk.indptr[ranks.stop]
    part = (chunk.data[lo:hi], chunk.indices[lo:hi], chunk.indptr[ranks.start : ranks.stop + 1] - lo)
    return sparse.csc_matrix(part, shape=(chunk.shape[0], ranks.stop - ranks.start))


def _product(
    chunk: sparse.csc_matrix, left: slice | np.ndarray, right: slice | np.ndarray, dense: bool, out: np.ndarray
) -> None:
    """out = co-occurrences in the chunk of the `left` ranks (rows) with the `right` ranks (columns)."""
    x, y = _columns(chunk, left), _columns(chunk, right)
    if dense:
        x, y = x.tocsr(), y.tocsr()
        step = max(1, DENSE_TILE_CELLS // max(x.shape[1], y.shape[1]))
        out[...] = 0
        for start in range(0, chunk.shape[0], step):
            out += x[start : start + step].toarray().T @ y[start : start + step].toarray()  # exact below 2**24
    else:
        (x.T @ y.tocsr()).toarray(out=out)


def _block_pairs(
    plan: _Plan, block: tuple[int, int, int, bool]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Candidate pairs (rank_r > rank_q) of one block, with exact counts: ranks, counts, NPMI, how many."""
    a, b, c, dense = block
    n, n_docs = plan.n, plan.n_docs
    split = min(max(plan.first_exact, a), c)  # rows [a, split) are screened on the sample first
    counts = np.zeros((c - a, b - a), dtype=np.int32)  # counts ≤ documents < 2**31
    product = np.empty((c - a, b - a), dtype=np.float32)
    for k, chunk in enumerate(plan.chunks):
        first = a if k < plan.sample_chunks else split
        if first < c:
            _product(chunk, slice(first, c), slice(a, b), dense, product[first - a :])
            np.add(counts[first - a :], product[first - a :], out=counts[first - a :], casting="unsafe")
    r = np.arange(a, c)
    screened = r < split
    # Rows' lowest thresholds (each partner is at least as frequent), then each pair's own; the slack
    # keeps rounding from ever excluding a pair on the boundary.
    floor = least_count(n[r], n[r], n_docs, plan.min_npmi, plan.min_count)
    floor = np.where(screened, screen(plan.share * floor), floor) * (1 - 1e-9)
    mask = counts >= floor[:, None]
    mask[: b - a] &= np.tri(b - a, k=-1, dtype=bool)  # one triangle of the diagonal square, no self-pairs
    i, j = np.nonzero(mask)
    least = least_count(n[r[i]], n[a + j], n_docs, plan.min_npmi, plan.min_count)
    keep = counts[i, j] >= np.where(screened[i], screen(plan.share * least), least) * (1 - 1e-9)
    i, j = i[keep], j[keep]
    n_rq = counts[i, j].astype(np.int64)
    recount = screened[i]
    if recount.any() and plan.sample_chunks < len(plan.chunks):
        n_rq[recount] += _recount(plan.chunks[plan.sample_chunks :], r[i[recount]], a + j[recount], dense)
    rank_r, rank_q = r[i], a + j
    score = npmi(n_rq, n[rank_r], n[rank_q], n_docs)
    keep = (n_rq >= plan.min_count) & (score >= plan.min_npmi)
    rank_r, rank_q, n_rq, score = rank_r[keep], rank_q[keep], n_rq[keep], score[keep]
    total = int(score.size)
    if total > MAX_CANDIDATES:
        best = np.argpartition(-score, MAX_CANDIDATES)[:MAX_CANDIDATES]
        rank_r, rank_q, n_rq, score = rank_r[best], rank_q[best], n_rq[best], score[best]
    return rank_r, rank_q, n_rq, score, total


def _recount(chunks: list[sparse.csc_matrix], rank_r: np.ndarray, rank_q: np.ndarray, dense: bool) -> np.ndarray:
    """Co-occurrences of the pairs (rank_r, rank_q) in the chunks."""
    rows, cols = np.unique(rank_r), np.unique(rank_q)
    counts = np.zeros((rows.size, cols.size), dtype=np.int64)
    product = np.empty((rows.size, cols.size), dtype=np.float32)
    for chunk in chunks:
        _product(chunk, rows, cols, dense, product)
        np.add(counts, product, out=counts, casting="unsafe")
    return counts[np.searchsorted(rows, rank_r), np.searchsorted(cols, rank_q)]


def _pair_counts(
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]], by_rank: np.ndarray, n: np.ndarray
) -> PairCounts:
    """The blocks' candidates as concept ids (feature_a < feature_b), best MAX_CANDIDATES, in NPMI order."""
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return PairCounts(empty.astype(np.int32), empty.astype(np.int32), empty, empty, empty, empty.astype(float), 0)
    rank_r, rank_q, n_rq, score = (np.concatenate([part[k] for part in parts]) for k in range(4))
    if score.size > MAX_CANDIDATES:
        best = np.argpartition(-score, MAX_CANDIDATES)[:MAX_CANDIDATES]
        rank_r, rank_q, n_rq, score = rank_r[best], rank_q[best], n_rq[best], score[best]
    rank_a, rank_b = np.where(by_rank[rank_r] < by_rank[rank_q], [rank_r, rank_q], [rank_q, rank_r])
    order = np.lexsort((by_rank[rank_b], by_rank[rank_a], -n_rq, -score))
    rank_a, rank_b = rank_a[order], rank_b[order]
    return PairCounts(
        by_rank[rank_a].astype(np.int32),
        by_rank[rank_b].astype(np.int32),
        n_rq[order],
        n[rank_a].astype(np.int64),
        n[rank_b].astype(np.int64),
        score[order],
        sum(part[4] for part in parts),
    )


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
    embedder: SentenceEmbedder | None = None,
) -> CorrelationResult:
    """The `top` concept pairs of `corpus` (its latest run; documents satisfying `where`) by NPMI, stored in
    `correlations` under a new analysis id.

    A pair needs ≥ min_count documents with both concepts and NPMI ≥ min_npmi; pairs whose labels are
    alike (cosine > max_label_sim of their sentence embeddings; of their peak-token counts when both are
    token labels, see `_Labels.similarity`) are dropped (kept, with label_similarity null, when a label
    or its embedding is missing), and so are pairs where both concepts peak on the same token in
    more than max_same_token of the documents with both. Label embeddings are those stored with the
    labels; with `embedder`, labels stored without one of its model are embedded now. Every count is
    exact; how pairs are found (a pair of frequent concepts is missed with probability ≤ 10⁻⁹) is in the
    module's docstring."""
    started = time.perf_counter()
    CorrelateOptions(
        corpus=corpus,
        where=where,
        min_npmi=min_npmi,
        max_label_sim=max_label_sim,
        min_count=min_count,
        max_same_token=max_same_token,
        top=top,
    )
    predicate = None if where is None else parse_predicate(where)
    run = store.latest_run(corpus)
    doc_ids = _documents(store, run, predicate)
    rows, features = _concept_rows(store, run, doc_ids)
    counts = count_pairs(rows, features, doc_ids.size, min_npmi=min_npmi, min_count=min_count)
    del rows, features
    with store.registered(correlate_docs=pa.table({"doc_id": doc_ids})):
        table = _top_pairs(store, run, counts, max_label_sim, max_same_token, top, embedder)
    table = table.with_columns(
        (pl.col("n_ab") / pl.col("n_a")).alias("p_b_given_a"),
        (pl.col("n_ab") / pl.col("n_b")).alias("p_a_given_b"),
        pl.int_range(1, pl.len() + 1, dtype=pl.Int32).alias("rank"),
    )
    params = {
        "corpus": corpus,
        "where": None if predicate is None else predicate.text,
        "min_npmi": min_npmi,
        "max_label_sim": max_label_sim,
        "min_count": min_count,
        "max_same_token": max_same_token,
        "top": top,
        "label_model": embedder.model_id if embedder is not None else None,
    }
    columns = ["n_ab", "n_a", "n_b", "p_b_given_a", "p_a_given_b", "npmi", "label_similarity", "same_token_share"]
    inputs = {"n_docs": int(doc_ids.size), "run": run.run_id, "candidates": counts.total}
    stored = table.select("feature_a", "feature_b", *columns, "rank")
    analysis_id = store.record("correlate", params, inputs, time.perf_counter() - started, {"correlations": stored})
    shown = table.select("feature_a", "label_a", "feature_b", "label_b", *columns, "example_doc_id", "rank")
    labels = concept_labels(store, run, shown["feature_a"].to_list() + shown["feature_b"].to_list())
    shown = with_labels(with_labels(shown, labels, on="feature_a", suffix="_a"), labels, on="feature_b", suffix="_b")
    return CorrelationResult(analysis_id, int(doc_ids.size), counts.total, shown)


def _documents(store: Store, run: RunInfo, predicate: Predicate | None) -> np.ndarray:
    """doc_id (ascending, int64) of the run's embedded documents that satisfy the predicate."""
    doc_ids = store.run_documents(run, predicate)
    if doc_ids.size == 0:
        suffix = " that satisfy --where" if predicate is not None else ""
        raise SaeembedError(f"no embedded documents in corpus '{run.corpus}'{suffix}")
    return doc_ids


def _concept_rows(store: Store, run: RunInfo, doc_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, feature_id) of every concept present in the documents `doc_ids`; rows number the documents
    that have concepts 0, 1, … in the order the store holds them, so they come out ascending."""
    params = {"run_id": run.run_id, "first_doc": int(doc_ids[0]), "last_doc": int(doc_ids[-1])}
    data = store.arrow("correlate_concept_rows", params)
    doc = data.column("doc").to_numpy()
    features = np.asarray(data.column("feature_id").to_numpy(), dtype=np.int32)
    if doc.size == 0:
        return doc, features
    new_doc = np.concatenate([[True], doc[1:] != doc[:-1]])
    firsts = doc[new_doc]
    if np.any(firsts[1:] <= firsts[:-1]) and np.unique(firsts).size < firsts.size:
        # Some document's rows are apart (not as the embedding writes them): bring them together.
        order = np.argsort(doc, kind="stable")
        doc, features = doc[order], features[order]
        new_doc = np.concatenate([[True], doc[1:] != doc[:-1]])
        firsts = doc[new_doc]
    rows = np.cumsum(new_doc, dtype=np.int32) - 1
    wanted = np.isin(firsts, doc_ids - doc_ids[0])
    if not wanted.all():
        keep = wanted[rows]
        rows, features = (np.cumsum(wanted, dtype=np.int32) - 1)[rows[keep]], features[keep]
    return rows, features


def _top_pairs(
    store: Store,
    run: RunInfo,
    counts: PairCounts,
    max_label_sim: float,
    max_same_token: float,
    top: int,
    embedder: SentenceEmbedder | None,
) -> pl.DataFrame:
    """The first `top` candidates (in NPMI order) that pass the label and same-token filters, with labels,
    label_similarity, same_token_share and example_doc_id. Candidates are checked in growing batches: the
    same-token share needs the pair's documents from the store, so only as many are read as needed."""
    labels = _Labels(store, run, embedder)
    kept: list[pl.DataFrame] = []
    start, size = 0, max(FIRST_BATCH, 4 * top)
    while start < counts.feature_a.size and sum(frame.height for frame in kept) < top:
        batch = pl.DataFrame(
            {
                "feature_a": counts.feature_a[start : start + size],
                "feature_b": counts.feature_b[start : start + size],
                "n_ab": counts.n_ab[start : start + size],
                "n_a": counts.n_a[start : start + size],
                "n_b": counts.n_b[start : start + size],
                "npmi": counts.npmi[start : start + size],
            }
        )
        batch = labels.annotate(batch).filter(
            pl.col("label_similarity").is_null() | (pl.col("label_similarity") <= max_label_sim)
        )
        details = _pair_details(store, run, batch.select("feature_a", "feature_b"))
        kept.append(
            batch.join(details, on=["feature_a", "feature_b"], how="left", maintain_order="left")
            .filter(pl.col("same_token_share") <= max_same_token)
            .select(list(PAIR_SCHEMA))
            .cast(PAIR_SCHEMA)
        )
        start, size = start + size, 4 * size
    return pl.concat(kept).head(top) if kept else pl.DataFrame(schema=PAIR_SCHEMA)


class _Labels:
    """Each concept's current label and its sentence embedding, for the label-similarity filter."""

    def __init__(self, store: Store, run: RunInfo, embedder: SentenceEmbedder | None) -> None:
        labels = current_labels(store, run.sae_id, store.corpus_id(run.corpus))
        self.names: dict[int, str] = dict(labels.select("feature_id", "label").iter_rows())
        self.peaks: dict[int, dict[str, int]] = {
            feature_id: _peak_profile(details)
            for feature_id, method, details in labels.select("feature_id", "method", "details").iter_rows()
            if method == "tokens" and details is not None and "top_tokens" in details
        }
        self.embedder = embedder
        self.vectors: dict[int, np.ndarray] = {}
        self.models: dict[int, str] = {}
        for feature_id, vector, model in labels.select("feature_id", "embedding", "embedding_model").iter_rows():
            if vector is not None and model is not None and (embedder is None or model == embedder.model_id):
                self.vectors[feature_id] = np.asarray(vector, dtype=np.float32)
                self.models[feature_id] = model

    def annotate(self, pairs: pl.DataFrame) -> pl.DataFrame:
        """pairs with label_a, label_b and label_similarity (null unless both labels have embeddings of one
        sentence model)."""
        features = set(pairs["feature_a"].to_list()) | set(pairs["feature_b"].to_list())
        if self.embedder is not None:
            missing = sorted(f for f in features if f in self.names and f not in self.vectors)
            for feature_id, vector in zip(missing, self.embedder.encode([self.names[f] for f in missing]), strict=True):
                self.vectors[feature_id] = vector
                self.models[feature_id] = self.embedder.model_id
        similarity = [self.similarity(a, b) for a, b in pairs.select("feature_a", "feature_b").iter_rows()]
        return pairs.with_columns(
            pl.Series("label_a", [self.names.get(a) for a in pairs["feature_a"]], dtype=pl.Utf8),
            pl.Series("label_b", [self.names.get(b) for b in pairs["feature_b"]], dtype=pl.Utf8),
            pl.Series("label_similarity", similarity, dtype=pl.Float64),
        )

    def similarity(self, a: int, b: int) -> float | None:
        """How alike the two concepts' labels are, None when they cannot be compared.

        Two token labels are compared by their peak tokens, not their text: a token label's words come
        from the concept's top documents, so two concepts that always fire together in the same documents
        get near-identical words even when one fires on "saffron" and the other on "violin" — exactly the
        pairs correlation mining is after. Their peak tokens are what each concept itself responds to.
        """
        if a in self.peaks and b in self.peaks:
            return _cosine(self.peaks[a], self.peaks[b])
        if a in self.vectors and b in self.vectors and self.models[a] == self.models[b]:
            return float(self.vectors[a] @ self.vectors[b])  # unit-norm embeddings: the dot product is the cosine
        return None


def _peak_profile(details: str) -> dict[str, int]:
    """Token label details → {peak token (lower case, trimmed): top documents peaking on it}."""
    profile: dict[str, int] = {}
    for token, count in json.loads(details)["top_tokens"]:
        key = token.strip().lower()
        profile[key] = profile.get(key, 0) + count
    return profile


def _cosine(a: dict[str, int], b: dict[str, int]) -> float:
    dot = sum(count * b.get(token, 0) for token, count in a.items())
    return dot / (np.sqrt(sum(c * c for c in a.values())) * np.sqrt(sum(c * c for c in b.values())))


def _pair_details(store: Store, run: RunInfo, pairs: pl.DataFrame) -> pl.DataFrame:
    """same_token_share and example_doc_id of each pair, over the documents registered as correlate_docs."""
    schema = {"feature_a": pl.Int32, "feature_b": pl.Int32, "same_token_share": pl.Float64, "example_doc_id": pl.Int64}
    if pairs.height == 0:
        return pl.DataFrame(schema=schema)
    features = pl.concat([pairs["feature_a"], pairs["feature_b"]]).unique().sort().to_list()
    params = {"run_id": run.run_id, "features": features}
    details = store.rows("correlate_pair_details", params, correlate_pairs=pairs)
    return details.select(list(schema)).cast(schema)


def correlate_column(
    store: Store,
    corpus: str,
    column: str,
    *,
    where: str | None = None,
    top: int = 50,
    min_count: int = 5,
) -> ColumnCorrelationResult:
    """Concepts whose presence tracks `meta->>column` over the documents of `corpus` (latest run) that
    satisfy `where` and have a value in the column; every concept present in ≥ min_count of them is
    tested and stored, the `top` are returned.

    A column whose values are all JSON numbers is numeric: Spearman's ρ between the value and the concept's
    presence (0/1), as scipy.stats.spearmanr computes it (average ranks, Student's t p-value). Otherwise
    (strings, booleans) it is categorical: the chi-square test of presence × level without continuity
    correction, Cramér's V as the statistic, and the level where the concept is most over-represented.
    q-values: Benjamini–Hochberg over the tested concepts."""
    from statsmodels.stats.multitest import multipletests

    started = time.perf_counter()
    CorrelateOptions(corpus=corpus, with_column=column, where=where, min_count=min_count, top=top)
    predicate = None if where is None else parse_predicate(where)
    run = store.latest_run(corpus)
    values = _column_values(store, run, column, predicate)
    numeric = _is_numeric(values, column)
    n_docs = values.height
    if numeric:
        levels = values.select(
            "doc_id",
            pl.lit("all").alias("level"),
            pl.col("value").cast(pl.Float64).rank("average").alias("value_rank"),
        )
    else:
        levels = values.select("doc_id", pl.col("value").alias("level"), pl.lit(0.0).alias("value_rank"))
    if levels["value_rank" if numeric else "level"].n_unique() < 2:
        raise SaeembedError(f"--with-column {column}: every document has the same value ({values['value'][0]!r})")
    counts = _level_counts(store, run, levels)
    totals = (
        counts.group_by("feature_id")
        .agg(pl.col("n").sum().alias("n_present"), pl.col("rank_sum").sum())
        .filter(pl.col("n_present") >= min_count)
        .sort("feature_id")
    )
    if numeric:
        table = _spearman(totals, levels["value_rank"].to_numpy(), n_docs)
    else:
        table = _chi_square(counts, totals, levels.group_by("level").len().sort("level"), n_docs)
    q = multipletests(table["p_value"].to_numpy(), method="fdr_bh")[1] if table.height else np.zeros(0)
    table = (
        table.with_columns(pl.Series("q_value", q, dtype=pl.Float64), pl.lit(column).alias("column_name"))
        .sort(["q_value", "statistic", "feature_id"], descending=[False, True, False])
        .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int32).alias("rank"))
    )
    where = None if predicate is None else predicate.text
    params = {"corpus": corpus, "column": column, "where": where, "min_count": min_count}
    columns = ["column_name", "feature_id", "level", "statistic", "test", "p_value", "q_value", "detail", "rank"]
    analysis_id = store.record(
        "correlate-column",
        params,
        {"n_docs": n_docs, "run": run.run_id, "kind": "numeric" if numeric else "categorical"},
        time.perf_counter() - started,
        {"column_correlations": table.select(columns)},
    )
    shown = table.head(top).select("feature_id", "level", "statistic", "test", "p_value", "q_value", "rank")
    shown = with_labels(shown, concept_labels(store, run, shown["feature_id"].to_list()))
    return ColumnCorrelationResult(analysis_id, n_docs, "numeric" if numeric else "categorical", shown)


def _level_counts(store: Store, run: RunInfo, levels: pl.DataFrame) -> pl.DataFrame:
    """feature_id, level, n, rank_sum: per concept and level, the documents where the concept is present
    and the sum of their value ranks (numeric columns: Spearman from sums)."""
    groups = levels.select("doc_id", pl.col("level").alias("group"), pl.col("value_rank").alias("weight"))
    any_firing = presence_thresholds(store, run.run_id, run.run_id, 0.0)
    present = count_present(store, run, run, groups, any_firing)
    group, feature = np.nonzero(present.n)
    return pl.DataFrame(
        {
            "feature_id": feature.astype(np.int32),
            "level": present.groups.gather(group),
            "n": present.n[group, feature],
            "rank_sum": present.weight_sum[group, feature],
        }
    ).sort("feature_id", "level")


def _column_values(store: Store, run: RunInfo, column: str, predicate: Predicate | None) -> pl.DataFrame:
    """doc_id, value (text) and json_type of `meta->column` for the documents that have a value."""
    values = store.rows("correlate_column_values", {"run_id": run.run_id, "column": column})
    if predicate is not None:
        values = values.filter(store.predicate_mask(values["doc_id"].to_numpy(), run, predicate))
    if values.height == 0:
        where = " that satisfy --where" if predicate is not None else ""
        raise SaeembedError(f"--with-column {column}: no embedded document of '{run.corpus}'{where} has it in its meta")
    return values


def _is_numeric(values: pl.DataFrame, column: str) -> bool:
    """True when every value is a JSON number, False when none is; mixed columns are refused."""
    numeric = values["json_type"].is_in(["BIGINT", "UBIGINT", "DOUBLE"])
    if numeric.all():
        return True
    if numeric.any():
        example = values.filter(~numeric)["value"][0]
        raise SaeembedError(
            f"--with-column {column}: mixes numbers with other values (e.g. {example!r}); "
            "use a column with one kind of value"
        )
    if values["json_type"].is_in(["ARRAY", "OBJECT"]).any():
        raise SaeembedError(f"--with-column {column}: holds arrays or objects, not single values")
    return False


def _spearman(totals: pl.DataFrame, ranks: np.ndarray, n_docs: int) -> pl.DataFrame:
    """Spearman's ρ between the column and each concept's presence, from per-concept rank sums: ρ is
    Pearson's r of the ranks, and a 0/1 indicator's average ranks are an affine function of it, so
    ρ = (S/N − R̄·p) / (sd_R·sqrt(p(1−p))); p-value from Student's t with N−2 df, as scipy.stats.spearmanr."""
    p = totals["n_present"].to_numpy() / n_docs
    mean_rank, sd_rank = ranks.mean(), ranks.std()
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = (totals["rank_sum"].to_numpy() / n_docs - mean_rank * p) / (sd_rank * np.sqrt(p * (1 - p)))
        rho = np.clip(np.nan_to_num(rho), -1.0, 1.0)  # present everywhere: no variation, ρ = 0
        t = rho * np.sqrt((n_docs - 2) / np.maximum(1 - rho**2, 1e-300))
    p_value = 2 * stats.t.sf(np.abs(t), n_docs - 2) if n_docs > 2 else np.ones_like(rho)
    return totals.select("feature_id").with_columns(
        pl.lit(None, dtype=pl.Utf8).alias("level"),
        pl.Series("statistic", rho, dtype=pl.Float64),
        pl.lit("spearman").alias("test"),
        pl.Series("p_value", p_value, dtype=pl.Float64),
        pl.lit(None, dtype=pl.Utf8).alias("detail"),
    )


def _chi_square(counts: pl.DataFrame, totals: pl.DataFrame, sizes: pl.DataFrame, n_docs: int) -> pl.DataFrame:
    """Chi-square test of presence × level per concept (vectorised scipy.stats.chi2_contingency without
    continuity correction), Cramér's V as the statistic, and the level where the concept is most
    over-represented (observed / expected)."""
    level_names = sizes["level"].to_list()
    level_size = sizes["len"].to_numpy().astype(float)
    index = totals.select("feature_id", pl.int_range(pl.len()).alias("i")).join(
        counts.join(pl.DataFrame({"level": level_names, "j": range(len(level_names))}), on="level"), on="feature_id"
    )
    observed = np.zeros((totals.height, len(level_names)))
    observed[index["i"].to_numpy(), index["j"].to_numpy()] = index["n"].to_numpy()
    present = observed.sum(axis=1, keepdims=True)
    expected_present = present * level_size / n_docs
    absent_observed, expected_absent = level_size - observed, (n_docs - present) * level_size / n_docs
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = np.nansum((observed - expected_present) ** 2 / expected_present, axis=1) + np.nansum(
            (absent_observed - expected_absent) ** 2 / expected_absent, axis=1
        )
        lift = observed / expected_present
    p_value = stats.chi2.sf(chi2, len(level_names) - 1)
    detail = [
        json.dumps({level: round(float(share), 4) for level, share in zip(level_names, row / level_size, strict=True)})
        for row in observed
    ]
    return totals.select("feature_id").with_columns(
        pl.Series("level", [level_names[j] for j in np.argmax(lift, axis=1)], dtype=pl.Utf8),
        pl.Series("statistic", np.sqrt(chi2 / n_docs), dtype=pl.Float64),  # Cramér's V of a 2 × L table
        pl.lit("chi-square").alias("test"),
        pl.Series("p_value", p_value, dtype=pl.Float64),
        pl.Series("detail", detail, dtype=pl.Utf8),
    )
