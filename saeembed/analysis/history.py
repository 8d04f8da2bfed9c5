"""How an analysis's results moved across its runs: a scheduled diff rerun every week, say, shows each
concept's Δ run by run. Runs of one analysis are the `analyses` rows of the same kind with identical
parameters; each run recorded its input sizes and time, so the runs can be compared."""

from __future__ import annotations

from typing import NamedTuple

import polars as pl

from saeembed.errors import SaeembedError
from saeembed.storage.store import Store

KINDS_WITH_HISTORY = ("diff", "correlate", "cluster")


class History(NamedTuple):
    kind: str
    """The analysis kind: 'diff', 'correlate' or 'cluster'."""
    params: dict
    """The parameters every run shares."""
    runs: pl.DataFrame
    """One row per run, oldest first: analysis_id, created_at, seconds, inputs (JSON: input sizes)."""
    series: pl.DataFrame
    """The results being followed, one row per run and item. diff: grp, feature_id, label, freq_a, freq_b,
    delta, ci_low, ci_high, q_value, rank; correlate: feature_a, feature_b, n_ab, npmi, rank; cluster:
    cluster, size, share, top_concept."""


def analysis_history(store: Store, analysis: int | str, *, concepts: list[int] | None = None, top: int = 10) -> History:
    """The runs of `analysis` (an analysis id, or a kind such as 'diff' for the latest analysis of that
    kind) and how its results moved: for a diff, the Δ of `concepts` (default: the latest run's `top`
    concepts) in every run; for correlations, the NPMI of pairs with those concepts; for a clustering,
    every cluster's share."""
    analysis_id = resolve_analysis(store, analysis)
    stored = store.analysis(analysis_id)
    kind, params = stored.kind, stored.params
    if kind not in KINDS_WITH_HISTORY:
        raise SaeembedError(f"analysis {analysis_id} is a {kind!r}; history follows {', '.join(KINDS_WITH_HISTORY)}")
    if top < 1:
        raise SaeembedError(f"--top must be at least 1, got {top}")
    runs = store.rows("history_runs", {"analysis_id": analysis_id})
    ids = runs["analysis_id"].to_list()
    latest = ids[-1]
    if kind == "cluster":
        series = store.rows("history_cluster", {"analysis_ids": ids})
    else:
        followed = concepts or _top_concepts(store, kind, latest, top)
        series = store.rows(f"history_{kind}", {"analysis_ids": ids, "feature_ids": followed})
        if kind == "diff":
            series = series.join(_labels(store, latest), on="feature_id", how="left")
    return History(kind, params, runs, series)


def resolve_analysis(store: Store, analysis: int | str) -> int:
    """The analysis id `analysis` names: an id (checked), or a kind for the latest analysis of it."""
    if isinstance(analysis, int) or str(analysis).isdigit():
        return store.analysis(int(analysis)).analysis_id
    latest = store.rows("history_latest", {"kind": str(analysis)})
    if latest.height == 0:
        raise SaeembedError(f"no {analysis!r} analysis in {store.path}: give an analysis id or a kind that has run")
    return latest["analysis_id"][0]


def _top_concepts(store: Store, kind: str, analysis_id: int, top: int) -> list[int]:
    name = "history_top_diff" if kind == "diff" else "history_top_correlate"
    return store.rows(name, {"analysis_id": analysis_id, "top": top})["feature_id"].to_list()


def _labels(store: Store, analysis_id: int) -> pl.DataFrame:
    from saeembed.concepts.provenance import current_labels

    inputs = store.analysis(analysis_id).inputs
    run = store.run(inputs.get("run_a", inputs.get("run")))
    return current_labels(store, run.sae_id, store.corpus_id(run.corpus)).select("feature_id", "label", "label_source")
