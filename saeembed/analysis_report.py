"""One self-contained HTML page for any stored analysis, made from what the database holds: the page a
flow wrote at the time can be written again later, by id (`saeembed report ANALYSIS_ID --html FILE`)."""

from __future__ import annotations

import json
from html import escape

import polars as pl

from saeembed.errors import SaeembedError
from saeembed.store import Store, first_row

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
COLUMN_COLUMNS = ("rank", "feature_id", "label", "level", "statistic", "test", "p_value", "q_value")


def analysis_report(store: Store, analysis: int | str) -> tuple[int, str]:
    """(analysis id, page) for `analysis`: an id, or a kind ('diff', …) for the latest of that kind."""
    from saeembed.history import resolve_analysis

    analysis_id = resolve_analysis(store, analysis)
    kind, params, inputs, created_at = first_row(
        store.con.execute("SELECT kind, params, inputs, created_at FROM analyses WHERE analysis_id = ?", [analysis_id])
    )
    params, inputs = json.loads(params), json.loads(inputs or "{}")
    title = f"saeembed {kind} — analysis {analysis_id} ({created_at:%Y-%m-%d %H:%M})"
    if kind == "diff":
        from saeembed.analysis.diff import load_diff
        from saeembed.report import diff_report

        result = load_diff(store, analysis_id)
        summary = {"test": result.test, "n_a": result.n_a, "n_b": result.n_b, **params}
        return analysis_id, diff_report(title, summary, result.table)
    if kind == "compare-releases":
        from saeembed.release_report import releases_report
        from saeembed.releases import load_comparison

        return analysis_id, releases_report(title, load_comparison(store, analysis_id))
    if kind in ("correlate", "correlate-column"):
        return analysis_id, _correlation_page(store, title, kind, analysis_id, {**params, **inputs})
    raise SaeembedError(
        f"analysis {analysis_id} is a {kind!r}: reports are made for diff, correlate and compare-releases"
    )


def _correlation_page(store: Store, title: str, kind: str, analysis_id: int, summary: dict) -> str:
    from saeembed.search import current_labels

    run = store.run(summary["run"]) if "run" in summary else store.latest_run(summary["corpus"])
    labels = current_labels(store, run.sae_id, store.corpus_id(run.corpus)).select("feature_id", "label")
    if kind == "correlate":
        table = store.query("SELECT * FROM correlations WHERE analysis_id = $a ORDER BY rank", {"a": analysis_id})
        table = table.join(labels.rename({"feature_id": "feature_a", "label": "label_a"}), on="feature_a", how="left")
        table = table.join(labels.rename({"feature_id": "feature_b", "label": "label_b"}), on="feature_b", how="left")
        columns = CORRELATION_COLUMNS
    else:
        table = store.query(
            "SELECT * FROM column_correlations WHERE analysis_id = $a ORDER BY rank", {"a": analysis_id}
        )
        table = table.join(labels, on="feature_id", how="left")
        columns = COLUMN_COLUMNS
    return table_page(title, summary, table.sort("rank"), columns)


def table_page(title: str, summary: dict, table: pl.DataFrame, columns: tuple[str, ...]) -> str:
    """A page with the parameters and one table."""
    from saeembed.report import STYLE

    header = "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in summary.items())
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(row.get(c)) for c in columns) + "</tr>" for row in table.to_dicts())
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
