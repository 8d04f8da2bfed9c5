"""How many documents of each group have each concept present (and the sum of a weight over them): one
streaming pass over the concept rows, counted in numpy.

Each concept row needs its document's group and its concept's presence threshold: two array look-ups
and a bincount per batch of rows. Written here rather than in SQL because DuckDB answers the same
question with two hash joins (rows ⋈ documents, rows ⋈ thresholds) and took 20× longer at a million
documents (benchmarks/analysis_speed.py, docs/benchmarks.md)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import polars as pl
import pyarrow as pa

from saeembed.storage.store import RunInfo, Store


class PresenceCounts(NamedTuple):
    """Per group of documents and concept, over the documents of the group where the concept is present."""

    groups: pl.Series
    """The groups' labels, ascending: row i of `n` and `weight_sum` is groups[i]."""
    n: np.ndarray
    """[n_groups, d_sae] how many documents."""
    weight_sum: np.ndarray | None
    """[n_groups, d_sae] the sum of their weights (None when the groups carry no weight)."""


def count_present(
    store: Store,
    run_a: RunInfo,
    run_b: RunInfo,
    groups: pl.DataFrame,
    thresholds: pl.DataFrame,
) -> PresenceCounts:
    """The documents of each group where each concept is present, over the rows of runs `run_a` and
    `run_b` (one SAE; the same run twice for one run).

    groups: doc_id, group (a label: a number or a level's text) and optionally weight (a number per
    document), at most one row per document; documents without a row are left out. The counts' rows follow
    the labels in ascending order (`PresenceCounts.groups`). thresholds: feature_id, min_act — a concept is
    present where its max activation reaches min_act; a concept without a threshold wherever it has a row."""
    d_sae = run_a.d_sae
    labels = groups["group"].unique().sort()
    n_groups = labels.len()
    doc_ids = groups["doc_id"].to_numpy()
    # One bucket per (group, concept), plus one group more for the rows of documents in no group and the
    # rows below their threshold: every row is counted somewhere, so no row needs to be picked out.
    buckets = (n_groups + 1) * d_sae
    n = np.zeros(buckets, dtype=np.int64)
    weight_sum = np.zeros(buckets, dtype=np.float64) if "weight" in groups.columns else None
    if doc_ids.size:
        first, last = int(doc_ids.min()), int(doc_ids.max())
        group_of = np.full(last - first + 1, n_groups, dtype=np.min_scalar_type(n_groups))
        group_of[doc_ids - first] = labels.search_sorted(groups["group"]).to_numpy()
        if weight_sum is not None:
            weight_of = np.zeros(group_of.size, dtype=np.float64)
            weight_of[doc_ids - first] = groups["weight"].to_numpy()
        min_act = np.zeros(d_sae, dtype=np.float64)
        min_act[thresholds["feature_id"].to_numpy()] = thresholds["min_act"].to_numpy()

        def add(batch: pa.RecordBatch) -> None:
            offset = batch.column("doc_id").to_numpy() - first
            feature = batch.column("feature_id").to_numpy()
            group = group_of[offset]
            group = np.where(batch.column("max_act").to_numpy() >= min_act[feature], group, n_groups)
            bucket = group.astype(np.int64) * d_sae + feature
            n[:] += np.bincount(bucket, minlength=buckets)
            if weight_sum is not None:
                weight_sum[:] += np.bincount(bucket, weights=weight_of[offset], minlength=buckets)

        params = {"run_a": run_a.run_id, "run_b": run_b.run_id, "first_doc": first, "last_doc": last}
        store.stream("presence_rows", params, add)
    shape = (n_groups + 1, d_sae)
    return PresenceCounts(
        labels, n.reshape(shape)[:n_groups], None if weight_sum is None else weight_sum.reshape(shape)[:n_groups]
    )
