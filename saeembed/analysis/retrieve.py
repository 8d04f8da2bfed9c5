"""Property retrieval: which documents have property X (negative, spam, about sports, written by an AI)?

Three modes:

- sae (Jiang et al. 2025's method): concept search picks the k concepts closest to the query — by the mean of
  the cosine to their label and the cosine to their exemplar vector, the mean embedding of their strongest
  documents (saeembed/concepts/exemplars.py; exemplar_weight = 0 is the paper's label-only choice); the concept at
  rank r (0 = closest) gets weight w_r = exp(−r / (k·T)), T = 0.2 by default; a
  document scores Σ_r w_r · a_r / p90_r, where a_r is its max activation on the concept and p90_r the 90th
  percentile of the concept's nonzero activations over the run, so concepts with large activations do
  not drown the others.
- dense: cosine of all-MiniLM-L6-v2 embeddings of the query and the documents (FAISS; see doc_index).
- with an LLM (`chat`), the concepts are the LLM's choice, in its order, among the 3k closest labels: a
  label can be close in wording and wrong in meaning ("review" for "negative review").
- fused: reciprocal rank fusion of the two rankings (Cormack, Clarke & Büttcher 2009, "Reciprocal rank
  fusion outperforms Condorcet and individual rank learning methods", SIGIR), k = 60.

Only the selected concepts' activations are read, from a per-run concept-major (CSC) copy of
`doc_features` kept beside the database as memory-mapped .npy files (`<db>.retrieval-run<R>/`, rebuilt
when the run gains documents) together with each concept's p90: a query touches k contiguous slices
instead of filtering a table stored in document order, which at tens of millions of rows costs more than
the whole query from the slices (benchmarks/retrieval_latency.py; figures in docs/benchmarks.md).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import numpy as np
import polars as pl
import pyarrow as pa

from saeembed.concepts.dense import DEFAULT_SENTENCE_MODEL, SentenceEmbedder, document_embeddings
from saeembed.concepts.doc_index import FLAT_BELOW, DocumentIndex, document_index, search_index
from saeembed.concepts.exemplars import exemplar_vectors
from saeembed.concepts.llm import ChatBackend, MalformedAnswer, complete_parsed
from saeembed.concepts.provenance import PEAK_DOCUMENTS, concept_labels, count_peaks, with_labels
from saeembed.concepts.search import DEFAULT_MIN_SCORE, ConceptIndex, concept_index
from saeembed.errors import SaeembedError
from saeembed.model.tokens import load_tokenizer, mark_context, mark_positions, mark_span
from saeembed.options import SearchOptions
from saeembed.storage.concept_columns import ConceptColumns, concept_columns
from saeembed.storage.predicates import Predicate, parse_predicate
from saeembed.storage.store import RunInfo, Store

Mode = Literal["sae", "dense", "fused"]
MODES = ("sae", "dense", "fused")
DEFAULT_CONCEPTS = 60
"""Concepts a query selects (k). Chosen on benchmarks/quality_retrieval.py with token labels made from the
corpus (sae MAP over 18 queries, properties that are not topics / all), with exemplars: k = 20: 0.219 /
0.314; 40: 0.268 / 0.360; 60: 0.284 / 0.375; 100: 0.293 / 0.383; by labels only: k = 20: 0.208 / 0.275;
60: 0.273 / 0.313. A token label names a few words, so one property needs many concepts; with T fixed the
weights spread over the larger k."""
DEFAULT_EXAMPLE_CONCEPTS = 60
"""Concepts a search by example selects (the text search's k until benchmarks/quality_retrieval.py says
otherwise)."""
EXAMPLE_PRESENCE = 0.5
"""A concept is present in a document where its max activation is at least this share of its p90 (the
diff's default presence threshold)."""
ROCCHIO_UNLIKE = 0.15 / 0.75
"""Weight of the mean `unlike` embedding against the mean `like` one: Rocchio's γ/β."""
DEFAULT_TEMPERATURE = 0.2
"""T in w_r = exp(−r / (k·T)): the weight of the last selected concept is e^(−1/T) ≈ 0.007 at 0.2."""
DEFAULT_EXEMPLAR_WEIGHT = 0.5
"""Share of a concept's similarity to the query that comes from its exemplar vector (the rest: its label).
benchmarks/quality_retrieval.py, corpus token labels, k = 60, sae MAP non-topic / topic / all: 0 (labels
only, the paper's) 0.273 / 0.377 / 0.313; 0.3: 0.276 / 0.445 / 0.342; 0.5: 0.284 / 0.518 / 0.375; 0.7:
0.281 / 0.557 / 0.388; 1: 0.278 / 0.570 / 0.392. Half and half keeps the label, which an LLM label makes far
better than a token label, as half of the evidence."""
RRF_K = 60
"""Reciprocal rank fusion's constant (Cormack et al. 2009): damps the difference between top ranks."""
FUSE_DEPTH = 100
"""Documents of each ranking that reciprocal rank fusion considers (at least `top`)."""
LOW_CONFIDENCE_BELOW = 0.35
"""Cosine between the query and its closest concept label below which the concepts match it poorly: results
come with confidence 'low'. The cosine alone misses most queries in a language the labels are not in
(all-MiniLM-L6-v2 puts Chinese text near labels of single whitespace tokens at 0.4–0.5), so a query none of
whose words appears in any label is of low confidence too."""
WORD = re.compile(r"[^\W\d_]{3,}")
"""A word, for the vocabulary check: letters only, at least three (short function words carry no topic)."""
SNIPPET_CHARS = 200
LLM_CANDIDATES = 3
"""With an LLM, it chooses the k concepts among the LLM_CANDIDATES·k closest labels."""
LLM_MAX_TOKENS = 200


def search_like(
    store: Store,
    like: Sequence[int],
    *,
    corpus: str,
    unlike: Sequence[int] | None = None,
    mode: Mode = "sae",
    top: int = 20,
    n_concepts: int = DEFAULT_EXAMPLE_CONCEPTS,
    temperature: float = DEFAULT_TEMPERATURE,
    where: str | None = None,
    flat_below: int = FLAT_BELOW,
    embedder: SentenceEmbedder | None = None,
) -> RetrievalResult:
    """The `top` documents of `corpus` most like the example documents `like` (doc ids), the examples
    themselves (and `unlike`) left out. sae: the concepts present in a larger share of the examples than of
    the rest of the corpus (or of `unlike`), by that difference, weighted by rank as in the text search;
    dense: the mean embedding of the examples (less a fifth of the mean of `unlike`, Rocchio's query update
    with β = 0.75, γ = 0.15; Manning et al., Introduction to IR, §9.1.1); fused: both by reciprocal rank.
    Recorded like `search_documents` (kind 'search', params `like` and `unlike`)."""
    started = time.perf_counter()
    checked = SearchOptions(
        like=tuple(like),
        unlike=None if unlike is None else tuple(unlike),
        corpus=corpus,
        mode=mode,
        top=top,
        n_concepts=n_concepts,
        temperature=temperature,
        where=where,
    )
    like, unlike = checked.like, checked.unlike or ()
    _check_examples(store, corpus, like, unlike)
    predicate = None if where is None else parse_predicate(where)
    corpus_id = store.corpus_id(corpus)
    allowed = _allowed_documents(store, corpus_id, predicate)
    known = np.asarray([*like, *unlike], dtype=np.int64)
    depth = (top if mode != "fused" else max(top, FUSE_DEPTH)) + known.size
    concepts, sae, dense, run, columns, index = _empty_concepts(), None, None, None, None, None
    if mode in ("sae", "fused"):
        run = store.latest_run(corpus)
        columns = concept_columns(store, run.run_id)
        concepts = example_concepts(
            columns, _rows_of(columns, like, run), _rows_of(columns, unlike, run) if unlike else None, n_concepts
        )
        concepts = concepts.with_columns(pl.Series("weight", concept_weights(concepts.height, temperature)))
        concepts = with_labels(concepts, concept_labels(store, run, concepts["feature_id"].to_list(), peaks=False))
        concepts = _with_peaks(store, run, columns, concepts)
        sae = _without(_sae_ranking(columns, concepts, allowed, depth), known)
    if mode in ("dense", "fused"):
        embedder = embedder or SentenceEmbedder.load(DEFAULT_SENTENCE_MODEL)
        found = document_index(store, corpus, embedder, flat_below=flat_below)
        index = found.describe()
        query_vector = document_embeddings(store, list(like), embedder).mean(axis=0)
        if unlike:
            query_vector = query_vector - ROCCHIO_UNLIKE * document_embeddings(store, list(unlike), embedder).mean(
                axis=0
            )
        query_vector = (query_vector / max(float(np.linalg.norm(query_vector)), 1e-12)).astype(np.float32)
        dense = _without(_dense_ranking(found, query_vector, allowed, depth), known)
    documents = _combine(mode, sae, dense, top)
    message = None
    if documents.height == 0:
        message = _empty_message(corpus, predicate, concepts, allowed, "no concept is more common in the examples")
    documents = _in_documents(store, _present(store, run, concepts, documents, columns if sae is not None else None))
    params = {
        "query": None,
        "like": list(like),
        "unlike": list(unlike),
        "corpus": corpus,
        "mode": mode,
        "top": top,
        "n_concepts": n_concepts,
        "temperature": temperature,
        "where": None if predicate is None else predicate.text,
        "model": embedder.model_id if embedder is not None else None,
    }
    inputs = {
        "run_id": run.run_id if run is not None else None,
        "concepts": concepts["feature_id"].to_list(),
        "index": index,
        "allowed_documents": None if allowed is None else len(allowed),
    }
    seconds = round(time.perf_counter() - started, 4)
    analysis_id = store.record("search", params, inputs, seconds, {"retrieval_results": _result_rows(mode, documents)})
    query = f"like {', '.join(map(str, like))}" + (f"; unlike {', '.join(map(str, unlike))}" if unlike else "")
    return RetrievalResult(analysis_id, mode, query, corpus, concepts, documents, index, None, message, seconds)


def example_concepts(
    columns: ConceptColumns,
    like_rows: np.ndarray,
    unlike_rows: np.ndarray | None,
    n_concepts: int,
    *,
    presence: float = EXAMPLE_PRESENCE,
) -> pl.DataFrame:
    """The `n_concepts` concepts present in a larger share of the examples (rows `like_rows` of `columns`)
    than of the background — the `unlike_rows`, else every other document of the run — by that difference:
    rank, feature_id, like_share, background_share, delta, why (the two shares in words), p90, n_docs.
    A concept is present where its max activation is at least `presence` × its p90 (as in the diff)."""
    n_docs = len(columns.doc_ids)
    like_rows = np.unique(like_rows)
    background = None if unlike_rows is None else np.unique(unlike_rows)
    n_background = n_docs - like_rows.size if background is None else background.size
    found = []
    # One pass over the concepts' slices, each sorted by document row: a concept none of the examples has
    # is skipped after two binary searches, so only the examples' concepts are counted in the background.
    for feature_id in range(len(columns.ptr) - 1):
        start, end = int(columns.ptr[feature_id]), int(columns.ptr[feature_id + 1])
        if start == end:
            continue
        rows = columns.rows[start:end]
        at = np.searchsorted(rows, like_rows)
        inside = at < rows.size
        hits = at[inside][rows[at[inside]] == like_rows[inside]]
        if hits.size == 0:
            continue
        threshold = presence * float(columns.p90[feature_id])
        k_like = int((columns.max_act[start + hits] >= threshold).sum())
        if k_like == 0:
            continue
        present = columns.max_act[start:end] >= threshold
        if background is None:
            k_background = int(present.sum()) - k_like
        else:
            k_background = int(present[np.isin(rows, background)].sum())
        found.append((feature_id, k_like, k_background, end - start))
    table = pl.DataFrame(
        found,
        schema={"feature_id": pl.Int32, "k_like": pl.Int64, "k_background": pl.Int64, "n_docs": pl.Int64},
        orient="row",
    )
    against = "of --unlike" if background is not None else "of the rest of the corpus"
    table = (
        table.with_columns(
            (pl.col("k_like") / like_rows.size).alias("like_share"),
            (pl.col("k_background") / max(n_background, 1)).alias("background_share"),
        )
        .with_columns((pl.col("like_share") - pl.col("background_share")).alias("delta"))
        .filter(pl.col("delta") > 0)
        .sort(["delta", "k_like", "feature_id"], descending=[True, True, False])
        .head(n_concepts)
    )
    return table.select(
        pl.int_range(1, pl.len() + 1).alias("rank"),
        "feature_id",
        "like_share",
        "background_share",
        "delta",
        pl.format(
            "in {} of {} examples, {}% {}",
            "k_like",
            pl.lit(like_rows.size),
            (100 * pl.col("background_share")).round(1),
            pl.lit(against),
        ).alias("why"),
        pl.Series("p90", np.asarray(columns.p90)[table["feature_id"].to_numpy()].astype(np.float64)),
        "n_docs",
    )


def _check_examples(store: Store, corpus: str, like: Sequence[int], unlike: Sequence[int]) -> None:
    """Every example is a document of `corpus`: one line naming the unknown ids or the other corpus."""
    wanted = [*like, *unlike]
    found = store.rows("example_documents", {"doc_ids": wanted})
    unknown = sorted(set(wanted) - set(found["doc_id"].to_list()))
    if unknown:
        raise SaeembedError(f"unknown document ids: {', '.join(map(str, unknown[:10]))}")
    elsewhere = found.filter(pl.col("corpus") != corpus)
    if elsewhere.height:
        first = elsewhere.row(0, named=True)
        raise SaeembedError(
            f"example documents must come from corpus '{corpus}': {elsewhere.height} do not "
            f"(doc {first['doc_id']} is in corpus '{first['corpus']}')"
        )


def _rows_of(columns: ConceptColumns, doc_ids: Sequence[int], run: RunInfo) -> np.ndarray:
    """The rows of `doc_ids` in the run's concept columns; documents the run has not embedded are an error."""
    wanted = np.asarray(doc_ids, dtype=np.int64)
    rows = np.searchsorted(columns.doc_ids, wanted).clip(max=max(len(columns.doc_ids) - 1, 0))
    missing = wanted[columns.doc_ids[rows] != wanted] if len(columns.doc_ids) else wanted
    if missing.size:
        raise SaeembedError(
            f"documents {missing[:5].tolist()} are not embedded by run {run.run_id} of corpus '{run.corpus}' yet: "
            f"run `saeembed embed --corpus {run.corpus}`"
        )
    return rows


def _without(ranking: tuple[np.ndarray, np.ndarray], doc_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A (doc_ids, scores) ranking without `doc_ids` (the examples)."""
    keep = ~np.isin(ranking[0], doc_ids)
    return ranking[0][keep], ranking[1][keep]


def _with_peaks(store: Store, run: RunInfo, columns: ConceptColumns, concepts: pl.DataFrame) -> pl.DataFrame:
    """`concepts` with peak_tokens: the tokens each peaks on in its strongest documents of the run, read from
    the concept columns (a query's concepts' slices) rather than the rows stored in document order."""
    strongest = []
    for feature_id in concepts["feature_id"].to_list():
        start, end = int(columns.ptr[feature_id]), int(columns.ptr[feature_id + 1])
        acts = columns.max_act[start:end]
        # The strongest few of a slice that may hold millions (their order does not matter for the counts).
        strongest_rows = (
            np.argpartition(-acts, PEAK_DOCUMENTS - 1)[:PEAK_DOCUMENTS]
            if acts.size > PEAK_DOCUMENTS
            else np.arange(acts.size)
        )
        best = start + strongest_rows
        strongest += [
            (feature_id, int(columns.doc_ids[columns.rows[i]]), int(columns.argmax_pos[i])) for i in best.tolist()
        ]
    frame = pl.DataFrame(
        strongest, schema={"feature_id": pl.Int32, "doc_id": pl.Int64, "argmax_pos": pl.Int64}, orient="row"
    )
    texts = store.rows("retrieve_texts", {"doc_ids": frame["doc_id"].unique().to_list()}).select("doc_id", "text")
    peaks = count_peaks(frame.join(texts, on="doc_id", how="left", maintain_order="left"), run.reader_model)
    return concepts.drop("peak_tokens", strict=False).join(
        peaks.cast({"feature_id": concepts.schema["feature_id"]}), on="feature_id", how="left", maintain_order="left"
    )


class RetrievalResult(NamedTuple):
    analysis_id: int
    """Key of the search in `analyses` (kind 'search') and `retrieval_results`."""
    mode: str
    """'sae', 'dense' or 'fused'."""
    query: str
    """The property searched for."""
    corpus: str
    """Corpus searched."""
    concepts: pl.DataFrame
    """The selected concepts (sae and fused; empty for dense): rank (1 = closest to the query), feature_id,
    label, label_source (where the label was made), similarity (what they were ranked by: the mix of the two
    cosines), label_similarity (cosine of query and label), exemplar_similarity (cosine of query and
    exemplar vector; null when not used), score
    (the label's offline AUROC), weight (w_r), p90 (the normaliser), n_docs (documents of the run where the
    concept is present)."""
    documents: pl.DataFrame
    """The top documents, best first: rank, doc_id, external_id, score (sae: Σ w·a/p90; dense: cosine;
    fused: Σ 1/(60 + rank)), sae_rank and dense_rank (null where a mode did not rank it or was not run),
    concepts (the selected concepts the document has, by contribution: feature_id, label, weight,
    activation (max_act), contribution (w·a/p90), argmax_pos (the token where it peaks)), snippet (around
    the firing token of the strongest matched concept, marked «like this»; the start of the text when none
    matched), marked (the whole text with every matched concept's firing token marked; null when none);
    for units (`--level unit`), parent_doc_id and in_document (the document's text with the unit «marked»),
    both null for whole documents."""
    index: str | None
    """The dense index used (dense and fused), e.g. 'flat (exact, 3,500 documents)' or 'ivf (nlist …)'."""
    confidence: str | None
    """'high' or 'low' (sae and fused): low when the closest concept label is far from the query."""
    message: str | None
    """Why the result is empty or of low confidence; None when there is nothing to say."""
    seconds: float
    """Time the search took."""


# Concept indexes opened in this process: queries after the first skip reading them.
_CONCEPT_INDEXES: dict[tuple, tuple[ConceptIndex, frozenset[str]]] = {}


# -- the arithmetic ----------------------------------------------------------------------------------


def concept_weights(n: int, temperature: float = DEFAULT_TEMPERATURE) -> np.ndarray:
    """w_r = exp(−r / (n·T)) for ranks r = 0 … n−1 (rank 0 = the concept closest to the query)."""
    if temperature <= 0:
        raise SaeembedError(f"--temperature must be positive, got {temperature}")
    return np.exp(-np.arange(n) / (n * temperature))


def normalised_activation(max_act: np.ndarray, p90: np.ndarray) -> np.ndarray:
    """a / p90: a document's activation on a concept relative to the concept's 90th percentile."""
    return np.asarray(max_act, dtype=np.float64) / np.asarray(p90, dtype=np.float64)


def reciprocal_rank_fusion(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Documents of all `rankings` (doc_ids, best first) by Σ 1/(k + rank), rank counted from 1; ties keep
    the order of first appearance."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, doc_id in enumerate(ranking, start=1):
            fused[doc_id] = fused.get(doc_id, 0.0) + 1.0 / (k + rank)
    return sorted(fused.items(), key=lambda item: -item[1])


def sae_scores(columns: ConceptColumns, feature_ids: Sequence[int], weights: np.ndarray) -> np.ndarray:
    """The score of every document row: Σ_r w_r · a_r / p90_r over the concepts `feature_ids`."""
    scores = np.zeros(len(columns.doc_ids), dtype=np.float64)
    for feature_id, weight in zip(feature_ids, weights, strict=True):
        start, end = int(columns.ptr[feature_id]), int(columns.ptr[feature_id + 1])
        # A concept has at most one row per document, so the fancy-indexed += adds each row once.
        scores[columns.rows[start:end]] += weight * normalised_activation(
            columns.max_act[start:end], columns.p90[feature_id]
        )
    return scores


# -- concept selection -------------------------------------------------------------------------------


def _concept_index(
    store: Store, run: RunInfo, corpus_id: int, embedder: SentenceEmbedder
) -> tuple[ConceptIndex, frozenset[str]]:
    """search.concept_index and the words of its labels, kept in memory while the SAE's labels stay the
    same (labels are only ever added, so their count and newest id identify them)."""
    count, newest = store.rows("retrieve_label_state", {"sae_id": run.sae_id}).row(0)
    key = (str(store.path.resolve()), run.sae_id, corpus_id, embedder.model_id, count, newest)
    if key not in _CONCEPT_INDEXES:
        found = concept_index(store, run.sae_id, corpus_id, embedder)
        vocabulary = frozenset(word.lower() for label in found.labels["label"] for word in WORD.findall(label))
        _CONCEPT_INDEXES[key] = (found, vocabulary)
    return _CONCEPT_INDEXES[key]


def select_concepts(
    found: ConceptIndex,
    query_vector: np.ndarray,
    columns: ConceptColumns,
    *,
    n_concepts: int,
    temperature: float,
    min_score: float,
    exemplars: np.ndarray | None = None,
    exemplar_weight: float = 0.0,
    choose: Callable[[pl.DataFrame], list[int]] | None = None,
) -> pl.DataFrame:
    """The `n_concepts` concepts closest to the query among those whose label scored at least `min_score`
    and that are present in the run, with their weights and p90 (see RetrievalResult). Closeness is the
    cosine to the label, mixed with the cosine to the concept's row of `exemplars` ([d_sae, dim]) with
    weight `exemplar_weight`. `choose(candidates)` (the LLM filter), given the closest
    LLM_CANDIDATES·n_concepts, returns the rows to keep in order."""
    similarity, rows = found.index.search(query_vector.reshape(1, -1), found.labels.height)
    hits = found.labels[rows[0].tolist()].with_columns(pl.Series("label_similarity", similarity[0].astype(np.float64)))
    if exemplars is not None and exemplar_weight > 0:
        exemplar = exemplars[hits["feature_id"].to_numpy()] @ query_vector
        hits = (
            hits.with_columns(pl.Series("exemplar_similarity", exemplar.astype(np.float64)))
            .with_columns(
                (
                    (1 - exemplar_weight) * pl.col("label_similarity") + exemplar_weight * pl.col("exemplar_similarity")
                ).alias("similarity")
            )
            .sort("similarity", descending=True, maintain_order=True)
        )
    else:
        hits = hits.with_columns(
            pl.lit(None, dtype=pl.Float64).alias("exemplar_similarity"), pl.col("label_similarity").alias("similarity")
        )
    if min_score > 0:
        hits = hits.filter(pl.col("auroc") >= min_score)
    ptr = np.asarray(columns.ptr)
    n_docs = ptr[1:] - ptr[:-1]
    present = hits["feature_id"].to_numpy()
    hits = hits.filter(pl.Series(n_docs[present] > 0))
    if choose is not None:
        candidates = hits.head(LLM_CANDIDATES * n_concepts)
        hits = candidates[choose(candidates)]
    hits = hits.head(n_concepts)
    feature_ids = hits["feature_id"].to_numpy()
    return hits.select(
        pl.int_range(1, pl.len() + 1).alias("rank"),
        "feature_id",
        "label",
        "label_source",
        "similarity",
        "label_similarity",
        "exemplar_similarity",
        pl.col("auroc").alias("score"),
        pl.Series("weight", concept_weights(hits.height, temperature)),
        pl.Series("p90", np.asarray(columns.p90)[feature_ids].astype(np.float64)),
        pl.Series("n_docs", n_docs[feature_ids].astype(np.int64)),
    )


# -- search ------------------------------------------------------------------------------------------


def search_documents(
    store: Store,
    query: str,
    *,
    corpus: str,
    mode: Mode = "sae",
    top: int = 20,
    n_concepts: int = DEFAULT_CONCEPTS,
    temperature: float = DEFAULT_TEMPERATURE,
    min_score: float = DEFAULT_MIN_SCORE,
    exemplar_weight: float = DEFAULT_EXEMPLAR_WEIGHT,
    where: str | None = None,
    flat_below: int = FLAT_BELOW,
    embedder: SentenceEmbedder | None = None,
    chat: ChatBackend | None = None,
) -> RetrievalResult:
    """The `top` documents of `corpus` that best have the property `query` (see the module docstring for
    the modes), optionally among those matching `where` (one expression over documents' columns and meta).
    With `chat` (a saeembed.concepts.llm backend, e.g. `chat_backend(store, …)`), an LLM chooses the concepts among
    the closest labels (see `llm_choice`). Recorded in `analyses` (kind 'search') and `retrieval_results`."""
    started = time.perf_counter()
    SearchOptions(
        query=query,
        corpus=corpus,
        mode=mode,
        top=top,
        n_concepts=n_concepts,
        temperature=temperature,
        exemplar_weight=exemplar_weight,
        where=where,
    )
    predicate = None if where is None else parse_predicate(where)
    corpus_id = store.corpus_id(corpus)
    embedder = embedder or SentenceEmbedder.load(DEFAULT_SENTENCE_MODEL)
    query_vector = embedder.encode([query])[0]
    allowed = _allowed_documents(store, corpus_id, predicate)
    depth = top if mode != "fused" else max(top, FUSE_DEPTH)
    concepts = _empty_concepts()
    sae = dense = None
    run: RunInfo | None = None
    confidence = message = index = None
    llm_notes: list[str] = []
    if mode in ("sae", "fused"):
        run = store.latest_run(corpus)
        columns = concept_columns(store, run.run_id)
        found_concepts, vocabulary = _concept_index(store, run, corpus_id, embedder)
        exemplars = exemplar_vectors(store, run.run_id, columns, embedder) if exemplar_weight > 0 else None
        concepts = select_concepts(
            found_concepts,
            query_vector,
            columns,
            n_concepts=n_concepts,
            temperature=temperature,
            min_score=min_score,
            exemplars=exemplars,
            exemplar_weight=exemplar_weight,
            choose=None if chat is None else lambda candidates: llm_choice(chat, query, candidates, llm_notes),
        )
        concepts = _with_peaks(store, run, columns, concepts)
        confidence, message = query_confidence(query, concepts, vocabulary, min_score)
        if llm_notes:
            message = " ".join(filter(None, [message, *llm_notes]))
        sae = _sae_ranking(columns, concepts, allowed, depth)
    if mode in ("dense", "fused"):
        found = document_index(store, corpus, embedder, flat_below=flat_below)
        index = found.describe()
        dense = _dense_ranking(found, query_vector, allowed, depth)
    documents = _combine(mode, sae, dense, top)
    if documents.height == 0:
        message = _empty_message(corpus, predicate, concepts, allowed, message)
    documents = _in_documents(store, _present(store, run, concepts, documents, columns if sae is not None else None))
    params = {
        "query": query,
        "corpus": corpus,
        "mode": mode,
        "top": top,
        "n_concepts": n_concepts,
        "temperature": temperature,
        "min_score": min_score,
        "exemplar_weight": exemplar_weight,
        "where": None if predicate is None else predicate.text,
        "model": embedder.model_id,
        "llm": None if chat is None else chat.model,
    }
    inputs = {
        "run_id": run.run_id if run is not None else None,
        "concepts": concepts["feature_id"].to_list(),
        "index": index,
        "confidence": confidence,
        "allowed_documents": None if allowed is None else len(allowed),
    }
    seconds = round(time.perf_counter() - started, 4)
    analysis_id = store.record("search", params, inputs, seconds, {"retrieval_results": _result_rows(mode, documents)})
    return RetrievalResult(analysis_id, mode, query, corpus, concepts, documents, index, confidence, message, seconds)


def llm_messages(query: str, candidates: pl.DataFrame) -> list[dict[str, str]]:
    """The request asking an LLM which of the candidate concepts show that a document has the property."""
    listed = "\n".join(f"{i}: {label}" for i, label in enumerate(candidates["label"].to_list(), start=1))
    return [
        {
            "role": "system",
            "content": "You select features of a text classifier. Each feature fires on the words or ideas its "
            "label describes.",
        },
        {
            "role": "user",
            "content": f"Property: {query}\n\nFeatures (number: label):\n{listed}\n\nWhich features indicate "
            "that a text has the property? Answer with their numbers only, most indicative first, separated by "
            "commas, or 'none'.",
        },
    ]


def parse_llm_choice(answer: str, n_candidates: int) -> list[int] | None:
    """The 0-based rows an answer like '3, 1, 7' names (in its order, each once, within range); [] for
    'none'; None when the answer names nothing readable."""
    numbers = [int(n) for n in re.findall(r"\d+", answer)]
    if not numbers:
        return [] if "none" in answer.lower() else None
    rows = [n - 1 for n in numbers if 1 <= n <= n_candidates]
    return list(dict.fromkeys(rows)) or None


def llm_choice(chat: ChatBackend, query: str, candidates: pl.DataFrame, notes: list[str]) -> list[int]:
    """The candidates (rows) the LLM keeps, in its order; all of them, in embedding order, with a note in
    `notes` when it keeps none or its answer cannot be read (the search still answers)."""
    everything = list(range(candidates.height))
    if candidates.height == 0:
        return everything

    def parse(answer: str) -> list[int]:
        rows = parse_llm_choice(answer, candidates.height)
        if rows is None:
            raise MalformedAnswer(f"the LLM's answer named no concept ({answer[:80]!r})", reason="names no concept")
        return rows

    try:
        # Parsed through the cache: an unreadable answer is not kept, so a rerun asks again.
        rows = complete_parsed(chat, llm_messages(query, candidates), parse, max_tokens=LLM_MAX_TOKENS, temperature=0)
    except MalformedAnswer as error:
        notes.append(f"{error}; concepts kept in embedding order")
        return everything
    if not rows:
        notes.append("the LLM found no concept that shows this property; concepts kept in embedding order")
        return everything
    return rows


def _result_rows(mode: str, documents: pl.DataFrame) -> pa.Table:
    """`retrieval_results` rows: each document's matched concepts as JSON text (none in dense mode)."""
    concepts = [
        json.dumps([{k: m[k] for k in ("feature_id", "label", "label_source", "weight", "activation")} for m in found])
        if mode != "dense"
        else None
        for found in documents["concepts"].to_list()
    ]
    return pa.table(
        {
            "mode": pa.array([mode] * documents.height, type=pa.string()),
            "rank": documents["rank"].to_arrow(),
            "doc_id": documents["doc_id"].to_arrow(),
            "score": documents["score"].to_arrow(),
            "concepts": pa.array(concepts, type=pa.string()),
        }
    )


def _allowed_documents(store: Store, corpus_id: int, predicate: Predicate | None) -> np.ndarray | None:
    return None if predicate is None else store.documents_matching(corpus_id, predicate)


def query_confidence(
    query: str, concepts: pl.DataFrame, vocabulary: frozenset[str], min_score: float
) -> tuple[str, str | None]:
    """('high' or 'low', why it is low): low when no concept was selected, when the closest label is far
    from the query, or when none of the query's words appears in any label (`vocabulary`)."""
    if concepts.height == 0:
        return "low", f"no concept label scored at least {min_score} and matched: try --min-score 0"
    closest = concepts.row(int(concepts["label_similarity"].arg_max()), named=True)
    words = {word.lower() for word in WORD.findall(query)}
    if words and not words & vocabulary:
        return "low", (
            "low confidence: none of the query's words appears in any concept label; the labels may not cover "
            f"this language or wording (closest label: '{closest['label']}')"
        )
    if closest["label_similarity"] < LOW_CONFIDENCE_BELOW:
        return "low", (
            f"low confidence: the closest concept label ('{closest['label']}') has cosine "
            f"{closest['label_similarity']:.2f} to the query (below {LOW_CONFIDENCE_BELOW}); the labels may not "
            "cover this wording or language"
        )
    return "high", None


def _sae_ranking(
    columns: ConceptColumns, concepts: pl.DataFrame, allowed: np.ndarray | None, depth: int
) -> tuple[np.ndarray, np.ndarray]:
    """(doc_ids, scores) of the `depth` best-scoring documents with a positive score."""
    scores = sae_scores(columns, concepts["feature_id"].to_list(), concepts["weight"].to_numpy())
    if allowed is not None:
        scores[~np.isin(columns.doc_ids, allowed)] = 0.0
    candidates = np.flatnonzero(scores > 0)
    if candidates.size > depth:
        candidates = candidates[np.argpartition(-scores[candidates], depth - 1)[:depth]]
    # Ties (documents with the same activations) go to the smaller doc_id, so rankings are reproducible.
    order = np.lexsort((columns.doc_ids[candidates], -scores[candidates]))
    best = candidates[order]
    return np.asarray(columns.doc_ids)[best], scores[best]


def _dense_ranking(
    found: DocumentIndex, query_vector: np.ndarray, allowed: np.ndarray | None, depth: int
) -> tuple[np.ndarray, np.ndarray]:
    return search_index(found, query_vector, depth, allowed)


def _combine(
    mode: str, sae: tuple[np.ndarray, np.ndarray] | None, dense: tuple[np.ndarray, np.ndarray] | None, top: int
) -> pl.DataFrame:
    """rank, doc_id, score, sae_rank, dense_rank of the top documents."""
    ranks = {
        name: {int(d): r for r, d in enumerate(ranking[0], start=1)}
        for name, ranking in (("sae", sae), ("dense", dense))
        if ranking is not None
    }
    if mode == "fused":
        chosen = reciprocal_rank_fusion([sae[0].tolist(), dense[0].tolist()])[:top]
    else:
        doc_ids, scores = sae if mode == "sae" else dense
        chosen = list(zip(doc_ids.tolist(), scores.astype(np.float64).tolist(), strict=True))[:top]
    return pl.DataFrame(
        {
            "rank": list(range(1, len(chosen) + 1)),
            "doc_id": [d for d, _ in chosen],
            "score": [s for _, s in chosen],
            "sae_rank": [ranks["sae"].get(d) if "sae" in ranks else None for d, _ in chosen],
            "dense_rank": [ranks["dense"].get(d) if "dense" in ranks else None for d, _ in chosen],
        },
        schema={
            "rank": pl.Int32,
            "doc_id": pl.Int64,
            "score": pl.Float64,
            "sae_rank": pl.Int32,
            "dense_rank": pl.Int32,
        },
    )


def _empty_message(
    corpus: str, predicate: Predicate | None, concepts: pl.DataFrame, allowed: np.ndarray | None, message: str | None
) -> str:
    if allowed is not None and len(allowed) == 0:
        return f"no document of corpus '{corpus}' matches --where {predicate.text}"
    if concepts.height == 0 and message is not None:
        return f"no documents: {message}"
    labels = ", ".join(f"'{label}'" for label in concepts["label"].head(3).to_list())
    scope = f" matching --where {predicate.text}" if predicate is not None else ""
    return f"no document of corpus '{corpus}'{scope} has any of the {concepts.height} selected concepts ({labels}, …)"


_MATCH = pl.Struct(
    {
        "feature_id": pl.Int64,
        "label": pl.Utf8,
        "label_source": pl.Utf8,
        "weight": pl.Float64,
        "activation": pl.Float64,
        "contribution": pl.Float64,
        "argmax_pos": pl.Int64,
    }
)


def _present(
    store: Store, run: RunInfo | None, concepts: pl.DataFrame, documents: pl.DataFrame, columns: ConceptColumns | None
) -> pl.DataFrame:
    """Add external_id, the matched concepts and a snippet to each listed document."""
    doc_ids = documents["doc_id"].to_list()
    texts = store.rows("retrieve_texts", {"doc_ids": doc_ids})
    documents = documents.join(texts, on="doc_id", how="left").sort("rank")
    matches: list[list[dict]] = [[] for _ in doc_ids]
    peaks: list[int | None] = [None] * len(doc_ids)
    if columns is not None and concepts.height and doc_ids:
        position = {d: i for i, d in enumerate(doc_ids)}
        # Rows of the listed documents the run embedded (a fused result may hold dense-only documents).
        listed_rows = np.searchsorted(columns.doc_ids, doc_ids).clip(max=max(len(columns.doc_ids) - 1, 0))
        listed_rows = listed_rows[columns.doc_ids[listed_rows] == np.asarray(doc_ids)]
        shown = concepts.select("feature_id", "label", "label_source", "weight", "p90")
        for feature_id, label, source, weight, p90 in shown.iter_rows():
            start, end = int(columns.ptr[feature_id]), int(columns.ptr[feature_id + 1])
            rows = np.asarray(columns.rows[start:end])
            hit = np.flatnonzero(np.isin(rows, listed_rows))
            for entry in hit:
                doc_id = int(columns.doc_ids[rows[entry]])
                activation = float(columns.max_act[start + entry])
                matches[position[doc_id]].append(
                    {
                        "feature_id": feature_id,
                        "label": label,
                        "label_source": source,
                        "weight": weight,
                        "activation": activation,
                        "contribution": weight * activation / p90,
                        "argmax_pos": int(columns.argmax_pos[start + entry]),
                    }
                )
        for i, found in enumerate(matches):
            found.sort(key=lambda m: -m["contribution"])
            peaks[i] = found[0]["argmax_pos"] if found else None
    texts_in_order = documents["text"].to_list()
    snippets = [text[:SNIPPET_CHARS] + ("…" if len(text) > SNIPPET_CHARS else "") for text in texts_in_order]
    marked: list[str | None] = [None] * len(doc_ids)
    with_peaks = [i for i, peak in enumerate(peaks) if peak is not None]
    if with_peaks and run is not None:
        offsets = load_tokenizer(run.reader_model).offsets([texts_in_order[i] for i in with_peaks])
        for i, doc_offsets in zip(with_peaks, offsets, strict=True):
            snippets[i] = mark_context(texts_in_order[i], doc_offsets, peaks[i])
            marked[i] = mark_positions(texts_in_order[i], doc_offsets, [m["argmax_pos"] for m in matches[i]])
    return (
        documents.drop("text")
        .with_columns(
            pl.Series("concepts", matches, dtype=pl.List(_MATCH)),
            pl.Series("snippet", snippets, dtype=pl.Utf8),
            pl.Series("marked", marked, dtype=pl.Utf8),
        )
        .select("rank", "doc_id", "external_id", "score", "sae_rank", "dense_rank", "concepts", "snippet", "marked")
    )


def _in_documents(store: Store, documents: pl.DataFrame) -> pl.DataFrame:
    """Add where each listed unit sits: parent_doc_id, and in_document, its document's text with the unit
    «marked» (both null for whole documents)."""
    context = store.unit_context(documents["doc_id"].to_list())
    shown = {
        doc_id: (parent, mark_span(text, start, end))
        for doc_id, parent, text, start, end in context.select(
            "doc_id", "parent_doc_id", "parent_text", "char_start", "char_end"
        ).iter_rows()
    }
    found = [shown.get(doc_id, (None, None)) for doc_id in documents["doc_id"].to_list()]
    return documents.with_columns(
        pl.Series("parent_doc_id", [parent for parent, _ in found], dtype=pl.Int64),
        pl.Series("in_document", [text for _, text in found], dtype=pl.Utf8),
    )


def _empty_concepts() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "rank": pl.Int64,
            "feature_id": pl.Int32,
            "label": pl.Utf8,
            "label_source": pl.Utf8,
            "peak_tokens": pl.Utf8,
            "similarity": pl.Float64,
            "label_similarity": pl.Float64,
            "exemplar_similarity": pl.Float64,
            "score": pl.Float32,
            "weight": pl.Float64,
            "p90": pl.Float64,
            "n_docs": pl.Int64,
        }
    )
