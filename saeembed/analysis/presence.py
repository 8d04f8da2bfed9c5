"""How many documents of each group have each concept present: one streaming pass over the concept rows,
counted in numpy.

Each concept row needs its document's group and its concept's presence threshold: two array look-ups
and a bincount per batch of rows. Written here rather than in SQL because DuckDB answers the same
question with two hash joins (rows ⋈ documents, rows ⋈ thresholds) and took 20× longer at a million
documents (benchmarks/analysis_speed.py, docs/benchmarks.md)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from saeembed.storage.store import RunInfo, Store


def count_present(
    store: Store,
    run_a: RunInfo,
    run_b: RunInfo,
    groups: pl.DataFrame,
    n_groups: int,
    thresholds: pl.DataFrame,
) -> np.ndarray:
    """counts[g, f]: the documents of group g where concept f is present, over the rows of runs `run_a`
    and `run_b` (one SAE; the same run twice for one run).

    groups: doc_id, group (0 … n_groups - 1), at most one row per document; documents without a row are
    left out. thresholds: feature_id, min_act — a concept is present where its max activation reaches
    min_act; a concept without a threshold wherever it has a row. Shape (n_groups, d_sae)."""
    d_sae = run_a.d_sae
    doc_ids = groups["doc_id"].to_numpy()
    # One bucket per (group, concept), plus one group more for the rows of documents in no group and the
    # rows below their threshold: every row is counted somewhere, so no row needs to be picked out.
    counts = np.zeros((n_groups + 1) * d_sae, dtype=np.int64)
    if doc_ids.size == 0:
        return counts[: n_groups * d_sae].reshape(n_groups, d_sae)
    first = int(doc_ids.min())
    group_of = np.full(int(doc_ids.max()) - first + 1, n_groups, dtype=np.min_scalar_type(n_groups))
    group_of[doc_ids - first] = groups["group"].to_numpy()
    min_act = np.zeros(d_sae, dtype=np.float64)
    min_act[thresholds["feature_id"].to_numpy()] = thresholds["min_act"].to_numpy()

    def add(batch: pa.RecordBatch) -> None:
        offset = batch.column("doc_id").to_numpy() - first
        feature = batch.column("feature_id").to_numpy()
        if offset.min() >= 0 and offset.max() < group_of.size:
            group = group_of[offset]
        else:
            inside = (offset >= 0) & (offset < group_of.size)
            group = np.where(inside, group_of[np.clip(offset, 0, group_of.size - 1)], n_groups)
        group = np.where(batch.column("max_act").to_numpy() >= min_act[feature], group, n_groups)
        counts[:] += np.bincount(group.astype(np.int64) * d_sae + feature, minlength=counts.size)

    store.stream("presence_rows", {"run_a": run_a.run_id, "run_b": run_b.run_id}, add)
    return counts[: n_groups * d_sae].reshape(n_groups, d_sae)
