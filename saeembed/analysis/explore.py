"""Explore a corpus on a map: every document placed in 2-D by UMAP (McInnes et al. 2018, umap-learn) of its
concepts — all it has, or only those about a text or named — or of its dense embedding, with what a page
needs to colour the points, show a document's strongest concepts, and list the concepts a selection of
documents has more often than the rest (the page computes those shares itself from each document's present
concepts; reports/explore.py).

A concept is present in a document where its max activation reaches half its p90 (the diff's rule). The
points are placed by the Jaccard distance of their present concepts (the clustering's measure), or by the
cosine of the dense embeddings with `dense`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import polars as pl
from scipy import sparse

from saeembed.concepts.dense import DEFAULT_SENTENCE_MODEL, SentenceEmbedder, document_embeddings
from saeembed.concepts.provenance import concept_labels, with_labels
from saeembed.errors import SaeembedError
from saeembed.model.tokens import load_tokenizer, mark_context
from saeembed.storage.concept_columns import ConceptColumns, concept_columns
from saeembed.storage.store import RunInfo, Store

MAX_DOCUMENTS = 20_000
"""Most documents one page maps: the page carries every document's concepts and snippet (≈ 1 KB each)."""
PRESENCE = 0.5
"""A concept is present where its max activation is at least this share of its p90 (the diff's default)."""
TOP_CONCEPTS = 3
"""Strongest concepts shown per document (by activation relative to the concept's p90)."""
PAGE_CONCEPTS = 64
"""Present concepts a page carries per document, strongest first: a news article has ≈ 570 present concepts
of the default SAE's 8,192, which would make a page of 10,000 documents ≈ 40 MB; its 64 strongest keep it
near 10 MB (docs/explore.md)."""
SNIPPET_CHARS = 200
MIN_DOCUMENTS = 5
"""Fewest documents UMAP places (it needs neighbours)."""


class ExploreMap(NamedTuple):
    corpus: str
    """Corpus mapped."""
    run_id: int
    """Its latest embedding run."""
    representation: str
    """What placed the points: 'concepts' (all present ones), 'concepts about …', 'concepts 1, 2, …', or the
    sentence model's id."""
    color_by: str | None
    """What colours the points: a meta column, 'cluster:ID', 'concept:ID', or None."""
    color_kind: str | None
    """'categories' (a column's values, clusters) or 'values' (a concept's activation / p90), or None."""
    points: pl.DataFrame
    """One row per mapped document: doc_id, x, y, color (text or number; null where a document has none),
    text (its start), marked (its strongest concept's peak token «marked» in context), top (its strongest
    concepts' ids), present (its PAGE_CONCEPTS strongest present concepts, strongest first)."""
    concepts: pl.DataFrame
    """feature_id, label, label_source, n_docs (mapped documents whose `present` holds it): every concept in
    some mapped document's `present`."""
    n_unmapped: int
    """Documents left off the map: with none of the concepts about the text (or named)."""


def explore_map(
    store: Store,
    corpus: str,
    *,
    about: str | None = None,
    concepts: Sequence[int] | None = None,
    dense: bool = False,
    color_by: str | None = None,
    embedder: SentenceEmbedder | None = None,
    seed: int = 0,
) -> ExploreMap:
    """The map of `corpus`'s embedded documents (see the module docstring); `color_by` is a meta column,
    'cluster:ANALYSIS_ID' (a stored clustering) or 'concept:ID' (that concept's activation)."""
    if sum(x is not None and x is not False for x in (about, concepts, dense)) > 1:
        raise SaeembedError("give at most one of --about, --concepts and --dense")
    run = store.latest_run(corpus)
    columns = concept_columns(store, run.run_id)
    if len(columns.doc_ids) > MAX_DOCUMENTS:
        raise SaeembedError(
            f"corpus '{corpus}' has {len(columns.doc_ids):,} embedded documents; a map holds at most "
            f"{MAX_DOCUMENTS:,}: explore a sample of it (ingest one as its own corpus)"
        )
    colors, color_kind = _colors(store, run, columns, color_by)  # checked before the slow part
    concept, relative = _relative(columns)
    present = _present(columns, concept, relative)
    embedder = embedder or (SentenceEmbedder.load(DEFAULT_SENTENCE_MODEL) if about is not None or dense else None)
    if dense:
        rows = np.arange(len(columns.doc_ids))
        vectors, metric = document_embeddings(store, columns.doc_ids.tolist(), embedder), "cosine"
        representation = embedder.model_id
    else:
        chosen, representation = _chosen_concepts(store, corpus, run, about, concepts, embedder)
        matrix = present if chosen is None else present[:, chosen]
        rows = np.flatnonzero(np.asarray(matrix.sum(axis=1)).ravel() > 0)
        vectors, metric = matrix[rows], "jaccard"
    if rows.size < MIN_DOCUMENTS:
        raise SaeembedError(f"only {rows.size} documents to map: a map needs at least {MIN_DOCUMENTS}")
    xy = layout(vectors, metric, seed=seed)
    points = _points(store, run, columns, rows, _strongest(columns, rows, concept, relative)).with_columns(
        pl.Series("x", xy[:, 0].astype(np.float64)),
        pl.Series("y", xy[:, 1].astype(np.float64)),
        pl.Series("color", [colors.get(d) for d in columns.doc_ids[rows].tolist()]),
    )
    counts = np.bincount(points["present"].explode().drop_nulls().to_numpy(), minlength=run.d_sae)
    used = np.flatnonzero(counts)
    listed = pl.DataFrame({"feature_id": used.astype(np.int32), "n_docs": counts[used].astype(np.int64)})
    listed = with_labels(listed, concept_labels(store, run, used.tolist(), peaks=False))
    return ExploreMap(
        corpus,
        run.run_id,
        representation,
        color_by,
        color_kind,
        points.select("doc_id", "x", "y", "color", "text", "marked", "top", "present"),
        listed.select("feature_id", "label", "label_source", "n_docs"),
        len(columns.doc_ids) - rows.size,
    )


def layout(vectors: np.ndarray | sparse.csr_matrix, metric: str, *, seed: int = 0) -> np.ndarray:
    """[N, 2] UMAP coordinates (umap-learn; n_neighbors 15, or fewer for a small set; seeded, so the same
    input gives the same map)."""
    import umap

    n = vectors.shape[0]
    model = umap.UMAP(n_neighbors=min(15, n - 1), metric=metric, random_state=seed, init="random")
    with warnings.catch_warnings():
        # umap-learn warns that a seed means one thread, and that jaccard has no inverse transform: both known.
        warnings.filterwarnings("ignore", category=UserWarning, module="umap")
        return model.fit_transform(vectors)


def _relative(columns: ConceptColumns) -> tuple[np.ndarray, np.ndarray]:
    """Per entry of the columns: its concept, and its max activation / the concept's p90."""
    concept = np.repeat(np.arange(len(columns.ptr) - 1), np.diff(columns.ptr))
    return concept, columns.max_act / np.nan_to_num(columns.p90, nan=np.inf)[concept]


def _present(columns: ConceptColumns, concept: np.ndarray, relative: np.ndarray) -> sparse.csr_matrix:
    """[documents, concepts] 0/1: where each concept is present (max activation ≥ PRESENCE × its p90)."""
    keep = relative >= PRESENCE
    data = np.ones(int(keep.sum()), dtype=np.float32)
    shape = (len(columns.doc_ids), len(columns.ptr) - 1)
    return sparse.csr_matrix((data, (columns.rows[keep], concept[keep])), shape=shape)


def _chosen_concepts(
    store: Store,
    corpus: str,
    run: RunInfo,
    about: str | None,
    concepts: Sequence[int] | None,
    embedder: SentenceEmbedder | None,
) -> tuple[np.ndarray | None, str]:
    """The concepts that place the points (None: all) and how the map says so."""
    from saeembed.analysis.cluster import DEFAULT_CONCEPTS, explicit_concepts, select_concepts

    if about is not None:
        chosen = select_concepts(store, corpus, about, DEFAULT_CONCEPTS, embedder)["feature_id"].to_numpy()
        return chosen, f"concepts about {about!r}"
    if concepts is not None:
        chosen = explicit_concepts(run, concepts)["feature_id"].to_numpy()
        return chosen, "concepts " + ", ".join(map(str, chosen.tolist()))
    return None, "concepts"


def _colors(
    store: Store, run: RunInfo, columns: ConceptColumns, color_by: str | None
) -> tuple[dict[int, object], str | None]:
    """doc_id → colour value, and whether the values are categories or numbers."""
    if color_by is None:
        return {}, None
    kind, _, name = color_by.partition(":")
    if kind == "cluster" and name.isdigit():
        stored = store.analysis(int(name))
        if stored.kind != "cluster":
            raise SaeembedError(f"--color-by cluster:{name}: analysis {name} is a {stored.kind!r}, not a clustering")
        assigned = store.rows("reports_cluster_assignments", {"analysis_id": int(name)})
        return {
            d: ("noise" if c < 0 else f"cluster {c}")
            for d, c in assigned.select("doc_id", "cluster").iter_rows()
            if c is not None
        }, "categories"
    if kind == "concept" and name.isdigit():
        feature_id = int(name)
        if feature_id >= run.d_sae:
            raise SaeembedError(f"--color-by concept:{feature_id}: this SAE has concepts 0..{run.d_sae - 1}")
        start, end = int(columns.ptr[feature_id]), int(columns.ptr[feature_id + 1])
        relative = columns.max_act[start:end] / (columns.p90[feature_id] or 1.0)
        values = dict.fromkeys(columns.doc_ids.tolist(), 0.0)
        values.update(zip(columns.doc_ids[columns.rows[start:end]].tolist(), relative.tolist(), strict=True))
        return values, "values"
    found = store.rows("correlate_column_values", {"run_id": run.run_id, "column": color_by})
    if found.height == 0:
        raise SaeembedError(
            f"--color-by {color_by}: no embedded document of corpus '{run.corpus}' has that meta column "
            "(or use cluster:ANALYSIS_ID or concept:ID)"
        )
    return dict(found.select("doc_id", "value").iter_rows()), "categories"


def _points(
    store: Store, run: RunInfo, columns: ConceptColumns, rows: np.ndarray, strongest: list[list[tuple[int, int, float]]]
) -> pl.DataFrame:
    """doc_id, text, marked, top, present for the documents at `rows` of the columns, whose concepts
    `strongest` lists (see `_strongest`)."""
    from saeembed.concepts.examples import documents_text

    doc_ids = columns.doc_ids[rows]
    texts = dict(documents_text(store, doc_ids.tolist()).iter_rows())
    ordered = [texts[d] for d in doc_ids.tolist()]
    offsets = load_tokenizer(run.reader_model).offsets(ordered)
    marked = [
        mark_context(text, offsets[i], concepts[0][1]) if concepts else ""
        for i, (text, concepts) in enumerate(zip(ordered, strongest, strict=True))
    ]
    return pl.DataFrame(
        {
            "doc_id": doc_ids.astype(np.int64),
            "text": [t[:SNIPPET_CHARS] for t in ordered],
            "marked": marked,
            "top": [[f for f, _, _ in concepts[:TOP_CONCEPTS]] for concepts in strongest],
            "present": [[f for f, _, r in concepts if r >= PRESENCE][:PAGE_CONCEPTS] for concepts in strongest],
        },
        schema={
            "doc_id": pl.Int64,
            "text": pl.Utf8,
            "marked": pl.Utf8,
            "top": pl.List(pl.Int32),
            "present": pl.List(pl.Int32),
        },
    )


def _strongest(
    columns: ConceptColumns, rows: np.ndarray, concept: np.ndarray, relative: np.ndarray
) -> list[list[tuple[int, int, float]]]:
    """Per document row: its concepts strongest first by activation / p90, as (feature_id, argmax_pos,
    activation / p90), the first PAGE_CONCEPTS of them."""
    order = np.lexsort((-relative, columns.rows))  # by document row, strongest first
    by_row = columns.rows[order]
    starts = np.searchsorted(by_row, rows)
    ends = np.searchsorted(by_row, rows, side="right")
    return [
        [
            (int(concept[order[j]]), int(columns.argmax_pos[order[j]]), float(relative[order[j]]))
            for j in range(s, min(e, s + PAGE_CONCEPTS))
        ]
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True)
    ]
