"""Stores with known concept vectors and no model behind them: an SAE that no file holds, corpora of given
texts, and concept rows written through `Store.write_batch` exactly as an embed run writes them.

The tests, the speed benchmarks and the examples in docs/ build their stores here, so a change to how
concept rows are stored is made in one place (as `sklearn.datasets.make_*` serves scikit-learn's tests).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import numpy as np
import polars as pl
import pyarrow as pa

from saeembed.storage.shards import publish_shard, remove_run
from saeembed.storage.store import RunSettings, Store

SYNTHETIC_READER = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The reader a synthetic SAE claims to read (nothing loads it)."""


def synthetic_sae(store: Store, d_sae: int, *, tag: str = "synthetic") -> int:
    """Key of an SAE of `d_sae` latents that no file holds (the same one for the same width and tag)."""
    return store.register_sae(
        name="synthetic",
        fingerprint=f"{tag}-{d_sae}".ljust(40, "0"),
        path=None,
        config={
            "source_format": "saeembed",
            "arch": "topk",
            "d_in": 4,
            "d_sae": d_sae,
            "k": 2,
            "reader_model": SYNTHETIC_READER,
        },
    )


def synthetic_corpus(
    store: Store,
    corpus: str,
    texts: Sequence[str],
    metas: Sequence[dict | str] | None = None,
    *,
    sae_id: int | None,
    layer: int = 3,
    max_tokens: int = 512,
) -> tuple[int | None, np.ndarray]:
    """Corpus `corpus` with these documents (meta as dicts or JSON text; external ids `{corpus}-{i}`) and,
    with `sae_id`, an open embedding run of it. Returns the run (None without an SAE) and the documents'
    doc_ids in the order of `texts`."""
    metas = metas if metas is not None else [{}] * len(texts)
    ids = [f"{corpus}-{i}" for i in range(len(texts))]
    store.add_documents(
        corpus,
        pl.DataFrame(
            {
                "external_id": ids,
                "text": list(texts),
                "meta": [m if isinstance(m, str) else json.dumps(m) for m in metas],
                "content_hash": ids,
            }
        ),
    )
    doc_ids = store.rows("corpus_documents", {"corpus_id": store.corpus_id(corpus)})["doc_id"].to_numpy()
    doc_ids = doc_ids[len(doc_ids) - len(texts) :]  # the ones just added: doc_ids grow with each insert
    if sae_id is None:
        return None, doc_ids
    settings = RunSettings(store.corpus_id(corpus), sae_id, SYNTHETIC_READER, layer, max_tokens, True, "float32")
    return store.open_run(settings, {}), doc_ids


def write_concepts(
    store: Store,
    run_id: int,
    doc_ids: np.ndarray,
    counts: np.ndarray,
    feature_id: np.ndarray,
    max_act: np.ndarray,
    *,
    mean_act: np.ndarray | float = 0.5,
    argmax_pos: np.ndarray | int = 1,
    n_tokens: int = 3,
) -> int:
    """One batch: document `doc_ids[i]` has the next `counts[i]` of the rows (feature_id, max_act, mean_act,
    argmax_pos; one active token each), ascending feature ids within a document. Returns the rows written."""
    counts = np.asarray(counts, dtype=np.int32)
    total = int(counts.sum())
    store.write_batch(
        run_id,
        pa.table(
            {
                "doc_id": np.asarray(doc_ids, dtype=np.int64),
                "n_tokens": np.full(len(doc_ids), n_tokens, dtype=np.int32),
                "n_tokens_total": np.full(len(doc_ids), n_tokens, dtype=np.int32),
                "truncated": np.zeros(len(doc_ids), dtype=bool),
                "n_features": counts,
            }
        ),
        pa.table(
            {
                "doc_id": np.repeat(np.asarray(doc_ids, dtype=np.int64), counts),
                "feature_id": np.asarray(feature_id, dtype=np.int32),
                "max_act": np.asarray(max_act, dtype=np.float32),
                "mean_act": np.broadcast_to(np.asarray(mean_act, dtype=np.float32), (total,)),
                "n_active_tokens": np.ones(total, dtype=np.int32),
                "argmax_pos": np.broadcast_to(np.asarray(argmax_pos, dtype=np.int32), (total,)),
            }
        ),
    )
    return total


def write_concept_lists(
    store: Store,
    run_id: int,
    doc_ids: np.ndarray,
    concepts: Sequence[dict[int, float]],
    *,
    peak: dict[int, int] | None = None,
    mean_share: float | None = None,
    n_tokens: int = 3,
) -> int:
    """One batch from Python values: document `doc_ids[i]` has the concepts `concepts[i]` ({feature_id:
    max activation}), each peaking at token `peak[feature_id]` (default 1), with mean activation
    `mean_share` × max (default 0.5 flat). Returns the rows written."""
    peak = peak or {}
    rows = [(f, a) for acts in concepts for f, a in sorted(acts.items())]
    max_act = np.asarray([a for _, a in rows], dtype=np.float32)
    return write_concepts(
        store,
        run_id,
        doc_ids,
        np.asarray([len(acts) for acts in concepts]),
        np.asarray([f for f, _ in rows], dtype=np.int32),
        max_act,
        mean_act=0.5 if mean_share is None else max_act * mean_share,
        argmax_pos=np.asarray([peak.get(f, 1) for f, _ in rows], dtype=np.int32),
        n_tokens=n_tokens,
    )


def distinct_draws(drawn: np.ndarray) -> np.ndarray:
    """Sorts each row of concept draws in place and marks the first of each repeated value, so that
    `drawn[mask]` lists each document's distinct concepts in ascending order."""
    drawn.sort(axis=1)
    first = np.ones(drawn.shape, dtype=bool)
    first[:, 1:] = drawn[:, 1:] != drawn[:, :-1]
    return first


def rewrite_run(store: Store, run_id: int, change: Callable[[pl.DataFrame], pl.DataFrame]) -> None:
    """Replace run `run_id`'s concept rows by `change(rows)` (doc_id, feature_id, max_act, mean_act,
    n_active_tokens, argmax_pos, as stored), each document's n_features recounted: a store whose data
    changed between two analyses, for tests of what analyses make of that. Not atomic: tests only."""
    with store.reading():
        documents = store.query(
            "SELECT doc_id, n_tokens, n_tokens_total, truncated FROM embedded_documents WHERE run_id = $run "
            "ORDER BY doc_id",
            {"run": run_id},
        )
        rows = store.query(
            "SELECT doc_id, feature_id, max_act, mean_act, n_active_tokens, argmax_pos FROM doc_features "
            "WHERE run_id = $run ORDER BY doc_id, feature_id",
            {"run": run_id},
        )
    rows = change(rows)
    counts = rows.group_by("doc_id").len("n_features")
    documents = documents.join(counts, on="doc_id", how="left").with_columns(pl.col("n_features").fill_null(0))
    remove_run(store.shards, run_id)
    publish_shard(store.shards, run_id, documents.to_arrow(), rows.to_arrow())


def synthetic_labels(
    store: Store,
    sae_id: int,
    run_id: int,
    labels: Sequence[str],
    *,
    embeddings: np.ndarray | None = None,
    embedding_model: str | None = None,
) -> None:
    """Token labels `labels[f]` for concepts 0 … len(labels) − 1, made from run `run_id`, each scored 0.8,
    with `embeddings` (one unit vector a label, as if `embedding_model` had embedded it) or none."""
    from saeembed.storage.labels import insert_labels

    n = len(labels)
    vectors = (
        pa.nulls(n, pa.list_(pa.float32()))
        if embeddings is None
        else pa.array(list(embeddings.astype(np.float32)), type=pa.list_(pa.float32()))
    )
    table = {
        "feature_id": np.arange(n, dtype=np.int32),
        "label": pa.array(list(labels), type=pa.string()),
        "description": pa.nulls(n, pa.string()),
        "details": pa.nulls(n, pa.string()),
        "auroc": np.full(n, 0.8),
        "detection": pa.nulls(n, pa.float64()),
        "embedding": vectors,
    }
    insert_labels(
        store,
        pa.table(table),
        sae_id=sae_id,
        method="tokens",
        model="synthetic",
        run_id=run_id,
        embedding_model=embedding_model,
    )


def write_drawn_concepts(
    store: Store,
    run_id: int,
    doc_ids: np.ndarray,
    drawn: np.ndarray,
    present: np.ndarray,
    rng: np.random.Generator,
    *,
    n_tokens: int = 40,
) -> int:
    """One batch of documents whose concepts are `drawn[i][present[i]]` (see `distinct_draws`): max
    activations Gamma(2, 1) + 0.01, mean activation 0.1, peaks at a random one of `n_tokens` tokens (the
    speed benchmarks' corpora). Returns the rows written."""
    total = int(present.sum())
    return write_concepts(
        store,
        run_id,
        doc_ids,
        present.sum(axis=1),
        drawn[present],
        rng.gamma(2.0, 1.0, total).astype(np.float32) + 0.01,
        mean_act=0.1,
        argmax_pos=rng.integers(0, n_tokens, total, dtype=np.int32),
        n_tokens=n_tokens,
    )
