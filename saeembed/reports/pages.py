"""One self-contained HTML page for any stored analysis, made from what the database holds: the page a
flow wrote at the time can be written again later, by id (`saeembed report ANALYSIS_ID --html FILE`)."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

import polars as pl

from saeembed.errors import SaeembedError
from saeembed.storage.store import RunInfo, Store

CORRELATION_COLUMNS = (
    "rank",
    "feature_a",
    "label_a",
    "feature_b",
    "label_b",
    "n_ab",
    "p_b_given_a",
    "p_a_given_b",
    "npmi",
)
MATCH_PAGE_PAIRS = 100
"""Matched pairs shown on a concept matching's page, best first."""
COLUMN_PAGE_ROWS = 50
"""Concepts a column correlation's page lists (its analysis stores every concept it tested)."""
COLUMN_COLUMNS = ("rank", "feature_id", "label", "level", "statistic", "test", "p_value", "q_value")


def analysis_report(store: Store, analysis: int | str) -> tuple[int, str]:
    """(analysis id, page) for `analysis`: an id, or a kind ('diff', …) for the latest of that kind."""
    from saeembed.analysis.history import resolve_analysis

    analysis_id = resolve_analysis(store, analysis)
    stored = store.analysis(analysis_id)
    kind, params, inputs = stored.kind, stored.params, stored.inputs
    title = f"saeembed {kind} — analysis {analysis_id} ({stored.created_at:%Y-%m-%d %H:%M})"
    if kind == "diff":
        from saeembed.analysis.diff import load_diff
        from saeembed.reports.html import diff_report

        result = load_diff(store, analysis_id)
        summary = {"test": result.test, "n_a": result.n_a, "n_b": result.n_b, **params}
        return analysis_id, diff_report(title, summary, result.table)
    if kind == "compare-releases":
        from saeembed.analysis.releases import load_comparison
        from saeembed.reports.releases import releases_report

        return analysis_id, releases_report(title, load_comparison(store, analysis_id))
    if kind in ("correlate", "correlate-column"):
        return analysis_id, _correlation_page(store, title, kind, analysis_id, {**params, **inputs})
    if kind == "cluster":
        return analysis_id, _cluster_page(store, title, analysis_id, params, inputs)
    if kind == "search":
        return analysis_id, _search_page(store, title, analysis_id, params)
    if kind == "concept-match":
        return analysis_id, _match_page(store, title, analysis_id, params)
    raise SaeembedError(
        f"analysis {analysis_id} is a {kind!r}: reports are made for diff, correlate, cluster, search, "
        "compare-releases and concept-match"
    )


def _match_page(store: Store, title: str, analysis_id: int, params: dict) -> str:
    """A concept matching's summary and best matched pairs (`MATCH_PAGE_PAIRS`), side by side."""
    from saeembed.analysis.matching import load_matches
    from saeembed.reports.html import match_report

    result = load_matches(store, analysis_id, top=MATCH_PAGE_PAIRS)
    run_a, run_b = store.run(params["run_a"]), store.run(params["run_b"])
    summary = {
        "run A": f"{run_a.run_id}: {run_a.corpus}, {run_a.reader_model} layer {run_a.layer}",
        "run B": f"{run_b.run_id}: {run_b.corpus}, {run_b.reader_model} layer {run_b.layer}",
        "method": params["method"],
        **{name: _rounded(value) for name, value in result.summary._asdict().items()},
    }
    return match_report(title, summary, result.matches)


def _rounded(value: object) -> object:
    return round(value, 4) if isinstance(value, float) else value


def _cluster_page(store: Store, title: str, analysis_id: int, params: dict, inputs: dict) -> str:
    """The clustering's page from its stored rows (the page the cluster flow writes)."""
    from saeembed.concepts.provenance import concept_labels, with_labels
    from saeembed.reports.html import cluster_report

    run = store.run(inputs["run"])
    assignments = store.rows("reports_cluster_assignments", {"analysis_id": analysis_id})
    stored = store.rows("reports_cluster_summaries", {"analysis_id": analysis_id})
    typical = [json.loads(docs) for docs in stored["typical_docs"]]
    texts = dict(store.rows("document_texts", {"doc_ids": [doc_id for docs in typical for doc_id in docs]}).iter_rows())
    summaries = pl.DataFrame(
        {
            "cluster": stored["cluster"],
            "size": stored["size"],
            "top_concepts": [json.loads(top) for top in stored["top_concepts"]],
            "typical_docs": [[{"doc_id": d, "text": texts.get(d, "")[:300]} for d in docs] for docs in typical],
        }
    ).sort([pl.col("cluster") < 0, pl.col("size")], descending=[False, True])
    clustered = assignments.filter(pl.col("has_concepts"))["doc_id"].to_list()
    frequency = store.rows(
        "reports_concept_counts", {"run_id": run.run_id, "feature_ids": inputs["feature_ids"], "doc_ids": clustered}
    )
    concepts = (
        pl.DataFrame({"feature_id": inputs["feature_ids"]}, schema={"feature_id": pl.Int32})
        .join(frequency.with_columns(pl.col("feature_id").cast(pl.Int32)), on="feature_id", how="left")
        .select(
            "feature_id",
            pl.lit(None, dtype=pl.Float64).alias("similarity"),
            (pl.col("n").fill_null(0) / max(len(clustered), 1)).alias("freq"),
        )
    )
    concepts = with_labels(concepts, concept_labels(store, run, inputs["feature_ids"]))
    summary = {
        "analysis_id": analysis_id,
        "method": params["method"],
        "representation": inputs["representation"],
        "n_docs": inputs["n_docs"],
        "n_without_concepts": assignments.height - len(clustered),
        "n_clusters": int((summaries["cluster"] >= 0).sum()),
        "min_cluster_size": inputs.get("min_cluster_size"),
        **{k: v for k, v in params.items() if k in ("about", "where")},
    }
    return cluster_report(title, summary, concepts, summaries, assignments)


def _search_page(store: Store, title: str, analysis_id: int, params: dict) -> str:
    """The documents a search returned, with the concepts each matched; a unit (`--level unit`) is shown
    marked inside its document."""
    from saeembed.model.tokens import mark_span

    table = store.rows("reports_search_results", {"analysis_id": analysis_id})
    from saeembed.concepts.provenance import concept_name

    matched = ["; ".join(concept_name(c) for c in json.loads(concepts or "[]")[:5]) for concepts in table["concepts"]]
    units = {row["doc_id"]: row for row in store.unit_context(table["doc_id"].to_list()).iter_rows(named=True)}
    shown = [
        mark_span(units[doc]["parent_text"], units[doc]["char_start"], units[doc]["char_end"])
        if doc in units
        else text[:300]
        for doc, text in zip(table["doc_id"], table["text"], strict=True)
    ]
    parents = [units[doc]["parent_doc_id"] if doc in units else None for doc in table["doc_id"]]
    table = table.with_columns(
        pl.Series("matched", matched), pl.Series("parent_doc_id", parents, dtype=pl.Int64), pl.Series("text", shown)
    )
    columns = ("rank", "mode", "doc_id", *(("parent_doc_id",) if units else ()), "score", "matched", "text")
    return table_page(title, params, table, columns, marked_columns=("text",) if units else ())


def _correlation_page(store: Store, title: str, kind: str, analysis_id: int, summary: dict) -> str:
    from saeembed.concepts.provenance import concept_labels, with_labels

    run = store.run(summary["run"])  # both kinds of correlation record the run they read
    if kind == "correlate":
        table = store.rows("reports_correlations", {"analysis_id": analysis_id})
        labels = concept_labels(store, run, table["feature_a"].to_list() + table["feature_b"].to_list())
        table = with_labels(table, labels, on="feature_a", suffix="_a")
        table = with_labels(table, labels, on="feature_b", suffix="_b")
        columns = CORRELATION_COLUMNS
    else:
        stored = store.rows("reports_column_correlations", {"analysis_id": analysis_id})
        # Every tested concept is stored; the page shows the strongest (the rest: `saeembed sql`).
        table = stored.filter(pl.col("rank") <= COLUMN_PAGE_ROWS)
        summary = {**summary, "shown": f"top {table.height} of {stored.height} concepts"}
        table = with_labels(table, concept_labels(store, run, table["feature_id"].to_list()))
        columns = COLUMN_COLUMNS
    return table_page(title, summary, table.sort("rank"), columns)


def table_page(
    title: str, summary: dict, table: pl.DataFrame, columns: tuple[str, ...], *, marked_columns: tuple[str, ...] = ()
) -> str:
    """A page with the parameters and one table; in `marked_columns`, «marked» text is highlighted."""
    from saeembed.reports.html import STYLE, concept_cell, label_cell, marked

    def cell(row: dict, column: str) -> str:
        if column in ("feature_id", "feature_a", "feature_b") and row.get(column) is not None:
            return concept_cell(row[column])
        if column in marked_columns:
            return f"<td class='ex'>{marked(row.get(column))}</td>"
        if column in ("label", "label_a", "label_b"):
            return f"<td>{label_cell(row, column.removeprefix('label'))}</td>"
        return _cell(row.get(column))

    header = "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in summary.items())
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(cell(row, c) for c in columns) + "</tr>" for row in table.to_dicts())
    empty = "" if table.height else "<p class='muted'>No rows.</p>"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1><table>{header}</table>"
        f"<table><tr>{head}</tr>{body}</table>{empty}</body></html>"
    )


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"<td class='num'>{value:.3g}</td>"
    if isinstance(value, int):
        return f"<td class='num'>{value}</td>"
    return f"<td>{escape('' if value is None else str(value))}</td>"


def write_concept_pages(
    store: Store, analysis_id: int, page: str, folder: Path, *, top: int = 10
) -> tuple[str, list[int]]:
    """A page for every concept `page` (the page of analysis `analysis_id`) lists, written into `folder` as
    ID.html (`concepts show ID --html`: the run's reader and SAE load once); returns `page` with each of those
    concepts linked to its page (relative to the folder `folder` sits in), and the concepts."""
    from saeembed.analysis.lookup import concept_profile
    from saeembed.concepts.examples import load_run_models
    from saeembed.reports.concept import concept_report
    from saeembed.reports.html import link_concepts, listed_concepts, write_report

    run = _analysis_run(store, analysis_id)
    listed = listed_concepts(page)
    models = load_run_models(store, run.run_id) if listed else None
    for feature_id in listed:
        profile = concept_profile(store, feature_id, corpus=run.corpus, top=top, models=models)
        write_report(folder / f"{feature_id}.html", concept_report(profile))
    return link_concepts(page, {f: f"{folder.name}/{f}.html" for f in listed}), listed


def _analysis_run(store: Store, analysis_id: int) -> RunInfo:
    """The embedding run whose concepts an analysis lists (side A's, for a diff or a matching)."""
    stored = store.analysis(analysis_id)
    for key in ("run", "run_a", "run_id"):
        if stored.inputs.get(key) is not None:
            return store.run(stored.inputs[key])
    if stored.params.get("run_a") is not None:
        return store.run(stored.params["run_a"])
    return store.latest_run(stored.params["corpus"])
