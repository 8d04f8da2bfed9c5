"""Concept search: which concepts are about X? A FAISS index over the sentence embeddings of the labels.

The index is persisted beside the database (`<db>.concepts-sae<S>-corpus<C>.faiss`, with a JSON
sidecar naming the labels it holds) and rebuilt automatically when the labels change.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl

from saeembed.concepts.dense import DEFAULT_SENTENCE_MODEL, SentenceEmbedder
from saeembed.concepts.provenance import current_labels, peak_tokens
from saeembed.errors import SaeembedError
from saeembed.storage.store import RunInfo, Store

DEFAULT_MIN_SCORE = 0.6
"""Least offline label score (AUROC; 0.5 = chance) a concept needs to be returned by default."""


class ConceptIndex(NamedTuple):
    index: object
    """faiss.IndexFlatIP over unit-norm label embeddings (inner product = cosine)."""
    labels: pl.DataFrame
    """The current labels, row i = vector i (current_labels.sql's columns)."""
    rebuilt: bool
    """Whether this call (re)built the index rather than reading it from disk."""


def index_paths(db_path: Path, sae_id: int, corpus_id: int | None) -> tuple[Path, Path]:
    stem = f"{db_path.name}.concepts-sae{sae_id}-corpus{corpus_id if corpus_id is not None else 'any'}"
    return db_path.with_name(f"{stem}.faiss"), db_path.with_name(f"{stem}.json")


def concept_index(store: Store, sae_id: int, corpus_id: int | None, embedder: SentenceEmbedder) -> ConceptIndex:
    """The label index for (SAE, corpus), rebuilt if the current labels or the sentence model changed."""
    import faiss

    labels = current_labels(store, sae_id, corpus_id)
    if labels.height == 0:
        raise SaeembedError("no concept labels yet: run `saeembed label --corpus NAME` first")
    key = hashlib.sha256(
        json.dumps([embedder.model_id, labels["label_id"].to_list(), labels["label"].to_list()]).encode()
    ).hexdigest()
    index_path, sidecar = index_paths(store.path, sae_id, corpus_id)
    if index_path.exists() and sidecar.exists() and json.loads(sidecar.read_text()).get("key") == key:
        return ConceptIndex(faiss.read_index(str(index_path)), labels, rebuilt=False)
    vectors = _label_vectors(labels, embedder)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    # Write then rename, so a reader never sees half an index and a crash leaves the old one usable.
    staging = index_path.with_name(index_path.name + ".tmp")
    faiss.write_index(index, str(staging))
    staging.replace(index_path)
    sidecar.write_text(json.dumps({"key": key, "model": embedder.model_id, "labels": labels.height}))
    return ConceptIndex(index, labels, rebuilt=True)


def _label_vectors(labels: pl.DataFrame, embedder: SentenceEmbedder) -> np.ndarray:
    """The labels' embeddings: those stored when the label was scored, the others (shipped labels, or
    another sentence model) embedded now."""
    stored = (labels["embedding_model"] == embedder.model_id).fill_null(False)
    vectors = np.zeros((labels.height, embedder.dim), dtype=np.float32)
    if stored.any():
        kept = labels.filter(stored)["embedding"]
        vectors[stored.to_numpy()] = np.asarray(kept.to_list(), dtype=np.float32)
    if not stored.all():
        vectors[~stored.to_numpy()] = embedder.encode(labels.filter(~stored)["label"].to_list())
    return vectors


def search_concepts(
    store: Store,
    query: str,
    *,
    corpus: str | None = None,
    sae_id: int | None = None,
    top: int = 20,
    min_score: float = DEFAULT_MIN_SCORE,
    embedder: SentenceEmbedder | None = None,
) -> pl.DataFrame:
    """The concepts whose labels are closest to `query`: feature_id, label, label_source ('this corpus',
    'shipped' or 'corpus NAME': where the label was made), score (the label's offline
    AUROC), similarity (cosine to the query), freq (share of the corpus's documents where it is
    present; null without a corpus), peak_tokens (what it peaks on in the corpus; null without one), method,
    description.

    With `corpus`, searches the labels of the SAE of its latest embedding run (preferring labels made
    from that corpus, then shipped ones); otherwise `sae_id` names the SAE. Concepts whose label scored
    below `min_score` are left out: a label that does not tell the concept's documents apart would match the query by
    accident. Concepts too rare to score (no held-out documents) count as unscored, kept only with
    `min_score=0`.
    """
    if not query.strip():
        raise SaeembedError("empty query: say what the concepts should be about")
    if top < 1:
        raise SaeembedError(f"--top must be at least 1, got {top}")
    run: RunInfo | None = store.latest_run(corpus) if corpus is not None else None
    if run is not None:
        sae_id = run.sae_id
    if sae_id is None:
        raise SaeembedError("say which concepts to search: give a corpus (or an SAE id)")
    corpus_id = store.corpus_id(corpus) if corpus is not None else None
    embedder = embedder or SentenceEmbedder.load(DEFAULT_SENTENCE_MODEL)
    found = concept_index(store, sae_id, corpus_id, embedder)
    # Exact search over every label (a flat index of ≤ 100k labels answers in milliseconds), then the
    # score filter, so `top` counts only concepts that pass it.
    similarity, rows = found.index.search(embedder.encode([query]), found.labels.height)
    hits = found.labels[rows[0].tolist()].with_columns(pl.Series("similarity", similarity[0].astype(np.float64)))
    if min_score > 0:
        hits = hits.filter(pl.col("auroc") >= min_score)
    hits = hits.head(top)
    if run is not None:
        freq = store.rows("concepts_search_frequency", {"run_id": run.run_id})
        peaks = peak_tokens(store, run, hits["feature_id"].to_list())
        hits = hits.join(freq, on="feature_id", how="left").join(
            peaks.cast({"feature_id": hits.schema["feature_id"]}), on="feature_id", how="left"
        )
    else:
        hits = hits.with_columns(
            pl.lit(None, dtype=pl.Float64).alias("freq"), pl.lit(None, dtype=pl.Utf8).alias("peak_tokens")
        )
    return hits.select(
        "feature_id",
        "label",
        "label_source",
        pl.col("auroc").alias("score"),
        "similarity",
        "freq",
        "peak_tokens",
        "method",
        "description",
    ).sort("similarity", descending=True, maintain_order=True)
