"""Each concept's 90th percentile of nonzero max activations (p90) over one or two embedding runs.

Two analyses measure a concept's activations against it: property retrieval divides by it (Jiang et al.
2025), and the diff counts a concept as present in a document only when its max activation reaches a share
of it (`presence_thresholds`). Max pooling keeps every latent that fired on any token, however weakly: with
the default SAE (k = 32 per token) a 52-token news article has ≈ 950 of 8,192 concepts with max_act > 0, and
those weak firings are spread over every topic. Counting a concept only where it fires at ≥ 0.5·p90 kept 59%
of the rows and made the top of a diff specific (benchmarks/quality_diff.py).

Exact percentiles take seconds at scale (docs/benchmarks.md), so they are kept in the
table `concept_percentiles`, keyed by what the runs held: a run only gains documents, and once it has
gained any the entry is recomputed.
"""

from __future__ import annotations

import math
from typing import Any

import polars as pl

from saeembed.errors import SaeembedError
from saeembed.storage.store import Store, first_row

DEFAULT_PRESENCE = 0.5
"""A concept counts as present in a document where it fires at ≥ this share of its p90 (diff, releases)."""


def check_presence(value: Any) -> float:
    """A presence threshold: a share of each concept's p90, 0 (any firing) to 1."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not (math.isfinite(value) and 0 <= value <= 1):
        raise SaeembedError(
            f"--presence-threshold must be between 0 and 1 (a share of each concept's p90), got {value}"
        )
    return float(value)


def run_state(store: Store, run_id: int) -> str:
    """What run `run_id` holds: its creation time (tells apart a database made anew at the same path) and
    its embedded documents (a run only ever gains documents, with their rows)."""
    with store.reading():
        created, count, largest, total = first_row(
            store.con.execute(
                "SELECT (SELECT created_at FROM embed_runs WHERE run_id = $run_id), count(*), "
                "coalesce(max(doc_id), 0), coalesce(sum(doc_id), 0) FROM embedded_documents WHERE run_id = $run_id",
                {"run_id": run_id},
            )
        )
    return f"{run_id}|{created}|{count}|{largest}|{total}"


def concept_p90(store: Store, run_a: int, run_b: int | None = None) -> pl.DataFrame:
    """feature_id, p90, n_docs (documents where the concept is present) for each concept present in run
    `run_a` or in run `run_b`, their rows pooled; from `concept_percentiles` when the runs are unchanged,
    else computed (sql/concept_p90.sql) and, unless the store is read-only, kept there."""
    runs = sorted({run_a, run_a if run_b is None else run_b})
    key = ",".join(map(str, runs))
    with store.reading():
        state = " ".join(run_state(store, run) for run in runs)
        cached = store.rows("concept_percentiles_kept", {"runs": key, "state": state})
    if cached.height:
        return cached
    computed = store.rows("concept_p90", {"run_a": runs[0], "run_b": runs[-1]})
    if not store.read_only and computed.height:
        with store.registered(new_percentiles=computed), store.transaction():
            store.con.execute("DELETE FROM concept_percentiles WHERE runs = ?", [key])
            store.con.execute(
                "INSERT INTO concept_percentiles SELECT ?, ?, feature_id, p90, n_docs FROM new_percentiles",
                [key, state],
            )
    return computed


def recorded_presence(params: dict) -> float:
    """The presence threshold a stored analysis ran with: analyses recorded before it existed counted any
    firing."""
    return params.get("presence_threshold", 0.0)


def presence_thresholds(store: Store, run_a: int, run_b: int, presence: float) -> pl.DataFrame:
    """feature_id, min_act: a concept is present in a document of run `run_a` or `run_b` when its max
    activation is at least min_act = presence × its p90 over both runs (one threshold for both sides, so
    the comparison stays fair). Empty for presence 0: every firing counts."""
    check_presence(presence)
    if presence == 0:
        return pl.DataFrame(schema={"feature_id": pl.Int32, "min_act": pl.Float64})
    p90 = concept_p90(store, run_a, run_b)
    return p90.select("feature_id", (presence * pl.col("p90").cast(pl.Float64)).alias("min_act"))
