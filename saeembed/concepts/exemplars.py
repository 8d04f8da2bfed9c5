"""Each concept's exemplar vector: the mean sentence embedding of its strongest documents in a run.

Property retrieval finds a query's concepts by comparing the query with their labels. A token label names two
or three words, so a concept that tracks a property is often far from a query that names it: on
benchmarks/quality_retrieval.py the concept whose activation alone best ranks happy tweets is the 3,767th
closest label to "happiness, feeling happy". Auto-interpretation labels summarise a concept's top-activating
documents (Bills et al. 2023, "Language models can explain neurons in language models"; Jiang et al. 2025);
the exemplar vector summarises the same documents in the query's own embedding space, with no LLM.

The vectors are kept beside the database (`<db>.exemplars-run<R>.npy`, with a JSON sidecar naming the run's
state and the sentence model), and rebuilt once the run gains documents, but not while an embedding job is
still adding to it: a search then uses the vectors of the state they were made for rather than embed the new
documents with the sentence model at every query. Documents are embedded through `doc_embeddings`, so the
dense index and label scoring reuse them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from saeembed.concepts.dense import SentenceEmbedder, document_embeddings
from saeembed.storage.percentiles import run_state
from saeembed.storage.sidecars import Loaded, beside, read_key, write_atomically, write_key
from saeembed.storage.store import Store

if TYPE_CHECKING:
    from saeembed.storage.concept_columns import ConceptColumns

EXEMPLAR_DOCS = 20
"""Strongest documents (by max activation) whose embeddings make a concept's exemplar vector: as many as token
labels are made from (saeembed.concepts.labels)."""

_LOADED: Loaded[np.ndarray] = Loaded()


def exemplars_path(db_path: Path, run_id: int) -> Path:
    return beside(db_path, f"exemplars-run{run_id}.npy")


def strongest_rows(ptr: np.ndarray, rows: np.ndarray, max_act: np.ndarray, n: int = EXEMPLAR_DOCS) -> list[np.ndarray]:
    """For each concept f of a concept-major table (its entries ptr[f]:ptr[f+1]), the document rows of its `n`
    largest activations, strongest first (ties: the earlier entry)."""
    strongest = []
    for feature_id in range(len(ptr) - 1):
        start, end = int(ptr[feature_id]), int(ptr[feature_id + 1])
        order = np.argsort(-max_act[start:end], kind="stable")[:n]
        strongest.append(rows[start:end][order])
    return strongest


def _strongest(columns: ConceptColumns) -> tuple[list[np.ndarray], np.ndarray]:
    """Each concept's strongest document rows, and every row among them once (sorted)."""
    strongest = strongest_rows(columns.ptr, columns.rows, columns.max_act)
    used = np.unique(np.concatenate(strongest)) if strongest else np.zeros(0, dtype=np.int64)
    return strongest, used


def exemplar_documents(columns: ConceptColumns) -> list[int]:
    """doc_ids of the documents the run's exemplar vectors are made from (every concept's strongest), once each."""
    return columns.doc_ids[_strongest(columns)[1]].tolist()


def exemplar_vectors(
    store: Store,
    run_id: int,
    columns: ConceptColumns,
    embedder: SentenceEmbedder,
    *,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """[d_sae, dim] unit-norm float32: row f is the normalised mean embedding of concept f's EXEMPLAR_DOCS
    strongest documents in run `run_id` (zeros where the concept never fires), read from the run's concept
    columns. From this process's memory or the file beside the database when the run is unchanged; else
    computed, embedding the documents not yet in `doc_embeddings` (`on_batch(n)` reports them), and saved."""
    identity = {"run": run_state(store, run_id), "model": embedder.model_id, "docs": EXEMPLAR_DOCS}
    key = json.dumps(identity)
    path = exemplars_path(store.path, run_id)
    sidecar = path.with_suffix(".json")
    loaded = _LOADED.get(path, key)
    if loaded is not None:
        return loaded
    kept = read_key(sidecar) if path.exists() else None
    same_model = kept is not None and all(kept.get(k) == identity[k] for k in ("model", "docs"))
    if kept == identity or (same_model and store.run_growing(run_id)):
        vectors = np.load(path)
    else:
        strongest, used = _strongest(columns)
        embedded = document_embeddings(store, columns.doc_ids[used].tolist(), embedder, on_batch=on_batch)
        position = np.full(len(columns.doc_ids), -1, dtype=np.int64)
        position[used] = np.arange(len(used))
        vectors = np.zeros((len(strongest), embedder.dim), dtype=np.float32)
        for feature_id, top in enumerate(strongest):
            if len(top):
                mean = embedded[position[top]].mean(axis=0)
                vectors[feature_id] = mean / max(float(np.linalg.norm(mean)), 1e-12)
        write_atomically(path, lambda staging: np.save(staging, vectors))
        write_key(sidecar, identity)
    return _LOADED.put(path, key, vectors)
