"""A run's concept columns: `doc_features` laid out by concept (CSC) in .npy files kept beside the database,
memory-mapped by property retrieval and exemplar vectors (a concept's documents are one slice)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from saeembed.storage.percentiles import concept_p90, run_state
from saeembed.storage.sidecars import Loaded, beside, read_key, write_atomically, write_key
from saeembed.storage.store import Store


class ConceptColumns(NamedTuple):
    """A run's `doc_features` by concept (CSC): concept f's documents are rows[ptr[f]:ptr[f+1]]."""

    doc_ids: np.ndarray
    """doc_id of each document row (int64, ascending)."""
    ptr: np.ndarray
    """[d_sae + 1] offsets of each concept's slice (int64)."""
    rows: np.ndarray
    """Document row of each entry (int32)."""
    max_act: np.ndarray
    """Max activation of each entry (float32)."""
    argmax_pos: np.ndarray
    """Token position of the max (int32)."""
    p90: np.ndarray
    """[d_sae] 90th percentile of each concept's nonzero max_act (NaN where the concept never fires)."""


_COLUMN_FILES = ("doc_ids", "ptr", "rows", "max_act", "argmax_pos", "p90")
# Columns opened in this process: queries after the first skip reading them.
_COLUMNS: Loaded[ConceptColumns] = Loaded()


def columns_path(db_path: Path, run_id: int) -> Path:
    """The folder of run `run_id`'s concept columns, beside the database."""
    return beside(db_path, f"retrieval-run{run_id}")


def concept_columns(store: Store, run_id: int) -> ConceptColumns:
    """The run's concept columns: from this process's memory, else memory-mapped from disk, else built
    (one sorted pass over the run's rows) and saved beside the database."""
    with store.reading():  # the key and the columns from one state of the run, however it grows meanwhile
        key = run_state(store, run_id)
        folder = columns_path(store.path, run_id)
        loaded = _COLUMNS.get(folder, key)
        if loaded is not None:
            return loaded
        if (read_key(folder / "key.json") or {}).get("key") != key:
            _COLUMNS.drop(folder)
            write_atomically(folder, lambda staging: _write_columns(store, run_id, staging, key))
    # Plain ndarray views of the maps: indexing a np.memmap goes through Python-level __getitem__.
    columns = ConceptColumns(*(np.asarray(np.load(folder / f"{name}.npy", mmap_mode="r")) for name in _COLUMN_FILES))
    return _COLUMNS.put(folder, key, columns)


def build_concept_columns(store: Store, run_id: int) -> dict:
    """Build (or confirm) the run's concept columns now; returns their size (for the search-index flow)."""
    columns = concept_columns(store, run_id)
    return {
        "run_id": run_id,
        "documents": len(columns.doc_ids),
        "rows": len(columns.rows),
        "path": str(columns_path(store.path, run_id)),
    }


def _write_columns(store: Store, run_id: int, folder: Path, key: str) -> None:
    """The run's columns as .npy files in a new `folder`, with their key."""
    d_sae = store.run(run_id).d_sae
    doc_ids = store.rows("run_documents", {"run_id": run_id})["doc_id"].to_numpy()
    table = store.arrow("retrieve_concept_rows", {"run_id": run_id})
    feature_id = table.column("feature_id").to_numpy()
    p90 = np.full(d_sae, np.nan, dtype=np.float32)
    percentiles = concept_p90(store, run_id)
    p90[percentiles["feature_id"].to_numpy()] = percentiles["p90"].to_numpy()
    arrays = {
        "doc_ids": doc_ids.astype(np.int64),
        "ptr": np.concatenate([[0], np.cumsum(np.bincount(feature_id, minlength=d_sae))]).astype(np.int64),
        "rows": np.searchsorted(doc_ids, table.column("doc_id").to_numpy()).astype(np.int32),
        "max_act": table.column("max_act").to_numpy().astype(np.float32),
        "argmax_pos": table.column("argmax_pos").to_numpy().astype(np.int32),
        "p90": p90,
    }
    folder.mkdir()
    for name, values in arrays.items():
        np.save(folder / f"{name}.npy", values)
    write_key(folder / "key.json", {"key": key, "rows": len(feature_id)})
