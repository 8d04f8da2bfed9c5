"""Dense document index: FAISS over a corpus's sentence embeddings (all-MiniLM-L6-v2 by default), the
dense side of property retrieval.

Persisted beside the database (`<db>.docs-corpus<C>.faiss`, with `.npy` row → doc_id and a JSON sidecar
naming the documents it holds). Exact inner product (flat) below `flat_below` documents; above, an
inverted-file index (IVF, nlist ≈ 4√N, which FAISS's guidelines give as the range 4–16√N) so a query
scans about nprobe/nlist of the vectors. When documents are added to the corpus, their embeddings are
added to the existing index; any other change, or crossing `flat_below`, rebuilds it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from saeembed.concepts.dense import SentenceEmbedder, document_embeddings
from saeembed.errors import SaeembedError
from saeembed.storage.sidecars import Loaded, beside, read_key, write_atomically, write_key
from saeembed.storage.store import Store

FLAT_BELOW = 50_000
"""Corpora with fewer documents get an exact flat index; larger ones an IVF index."""
IVF_PROBE_SHARE = 1 / 16
"""Share of the IVF lists a query scans: recall@20 stays close to exact search at a sixteenth of the work."""


class DocumentIndex(NamedTuple):
    index: object
    """faiss index over unit-norm document embeddings (inner product = cosine)."""
    doc_ids: np.ndarray
    """doc_id of each index row (int64)."""
    kind: str
    """'flat' or 'ivf'."""
    nlist: int | None
    """IVF lists (None for flat)."""
    nprobe: int | None
    """IVF lists scanned per query (None for flat)."""
    action: str
    """What this call did: 'loaded' (from memory or disk), 'built', or 'extended' (new documents added)."""

    def describe(self) -> str:
        """The index kind in words, e.g. 'ivf (nlist 1265, nprobe 80)' or 'flat (exact)'."""
        if self.kind == "flat":
            return f"flat (exact, {len(self.doc_ids):,} documents)"
        return f"ivf (nlist {self.nlist}, nprobe {self.nprobe}, {len(self.doc_ids):,} documents)"


# Indexes read in this process, by file: a query after the first must not re-read 150 MB from disk.
_LOADED: Loaded[DocumentIndex] = Loaded()


def index_paths(db_path: Path, corpus_id: int) -> tuple[Path, Path, Path]:
    """(faiss index, row → doc_id .npy, JSON sidecar) of corpus `corpus_id`'s document index."""
    stem = f"docs-corpus{corpus_id}"
    return beside(db_path, f"{stem}.faiss"), beside(db_path, f"{stem}.doc_ids.npy"), beside(db_path, f"{stem}.json")


def corpus_key(store: Store, corpus_id: int, model_id: str) -> tuple[str, str]:
    """(lineage, key): the key identifies the corpus's documents cheaply (documents are only ever added, with
    rising doc_ids); the lineage (model, the corpus's creation time) tells apart a database made anew at the
    same path, whose index must not be extended."""
    created, count, largest, total = store.rows("doc_index_corpus_state", {"corpus_id": corpus_id}).row(0)
    lineage = f"{model_id}|{created}"
    return lineage, f"{lineage}|{count}|{largest}|{total}"


def ivf_settings(n_docs: int) -> tuple[int, int]:
    """(nlist, nprobe) for an IVF index over `n_docs` documents."""
    nlist = max(1, round(4 * math.sqrt(n_docs)))
    return nlist, max(1, math.ceil(nlist * IVF_PROBE_SHARE))


def document_index(
    store: Store,
    corpus: str,
    embedder: SentenceEmbedder,
    *,
    flat_below: int = FLAT_BELOW,
    on_batch: Callable[[int], None] | None = None,
) -> DocumentIndex:
    """The corpus's dense index, built or extended first if its documents changed (embedding those not in
    `doc_embeddings` yet; `on_batch(n)` reports them)."""
    if flat_below < 1:
        raise SaeembedError(f"flat_below must be at least 1, got {flat_below}")
    corpus_id = store.corpus_id(corpus)
    lineage, key = corpus_key(store, corpus_id, embedder.model_id)
    key = f"{key}|{flat_below}"
    index_path, ids_path, sidecar = index_paths(store.path, corpus_id)
    cached = _LOADED.get(index_path, key)
    if cached is not None:
        return cached._replace(action="loaded")
    saved = (read_key(sidecar) or {}) if index_path.exists() and ids_path.exists() else {}
    if saved.get("key") == key:
        found = _read(index_path, ids_path, saved, "loaded")
    else:
        extendable = saved.get("lineage") == lineage and saved.get("flat_below") == flat_below
        paths = (index_path, ids_path)
        found = _update(store, corpus_id, embedder, flat_below, saved if extendable else {}, paths, on_batch)
        _write(found, (index_path, ids_path, sidecar), {"key": key, "lineage": lineage, "flat_below": flat_below})
    return _LOADED.put(index_path, key, found)


def _read(index_path: Path, ids_path: Path, saved: dict, action: str) -> DocumentIndex:
    import faiss

    index = faiss.read_index(str(index_path))
    if saved["kind"] == "ivf":
        index.nprobe = saved["nprobe"]
    return DocumentIndex(index, np.load(ids_path), saved["kind"], saved.get("nlist"), saved.get("nprobe"), action)


def _update(
    store: Store,
    corpus_id: int,
    embedder: SentenceEmbedder,
    flat_below: int,
    saved: dict,
    paths: tuple[Path, Path],
    on_batch: Callable[[int], None] | None,
) -> DocumentIndex:
    """Add the new documents to the saved index (`saved`: its sidecar, empty when it cannot be extended) when
    that is all that changed; otherwise build anew."""
    doc_ids = store.rows("corpus_documents", {"corpus_id": corpus_id})["doc_id"].to_numpy()
    if doc_ids.size == 0:
        raise SaeembedError("the corpus has no documents to index")
    kind = "flat" if doc_ids.size < flat_below else "ivf"
    if saved.get("kind") == kind:
        old = _read(*paths, saved, "extended")
        if np.isin(old.doc_ids, doc_ids).all():
            new = doc_ids[~np.isin(doc_ids, old.doc_ids)]
            if new.size:
                old.index.add(document_embeddings(store, new.tolist(), embedder, on_batch=on_batch))
            return old._replace(doc_ids=np.concatenate([old.doc_ids, new]))
    return _build(document_embeddings(store, doc_ids.tolist(), embedder, on_batch=on_batch), doc_ids, kind)


def _build(vectors: np.ndarray, doc_ids: np.ndarray, kind: str) -> DocumentIndex:
    import faiss

    if kind == "flat":
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        return DocumentIndex(index, doc_ids, "flat", None, None, "built")
    nlist, nprobe = ivf_settings(len(doc_ids))
    quantizer = faiss.IndexFlatIP(vectors.shape[1])
    index = faiss.IndexIVFFlat(quantizer, vectors.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    index.train(vectors)
    index.add(vectors)
    index.nprobe = nprobe
    return DocumentIndex(index, doc_ids, "ivf", nlist, nprobe, "built")


def _write(found: DocumentIndex, paths: tuple[Path, Path, Path], identity: dict) -> None:
    import faiss

    index_path, ids_path, sidecar = paths
    # A crash between the writes leaves the old key, which no longer matches: the next call rebuilds.
    write_atomically(index_path, lambda staging: faiss.write_index(found.index, str(staging)))
    write_atomically(ids_path, lambda staging: np.save(staging, found.doc_ids))
    details = {"kind": found.kind, "nlist": found.nlist, "nprobe": found.nprobe, "documents": len(found.doc_ids)}
    write_key(sidecar, identity | details)


def search_index(found: DocumentIndex, query_vector: np.ndarray, k: int, allowed: np.ndarray | None = None):
    """(doc_ids, cosines) of the `k` nearest documents, best first; `allowed` (doc_ids) restricts the search."""
    import faiss

    k = min(k, len(found.doc_ids))
    params = None
    if allowed is not None:
        rows = np.flatnonzero(np.isin(found.doc_ids, allowed)).astype(np.int64)
        k = min(k, rows.size)
        selector = faiss.IDSelectorBatch(rows)
        params = (
            faiss.SearchParametersIVF(sel=selector, nprobe=found.nprobe)
            if found.kind == "ivf"
            else faiss.SearchParameters(sel=selector)
        )
    if k == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    scores, rows = found.index.search(query_vector.reshape(1, -1), k, params=params)
    keep = rows[0] >= 0  # IVF may find fewer than k within the lists it scans
    return found.doc_ids[rows[0][keep]], scores[0][keep]
