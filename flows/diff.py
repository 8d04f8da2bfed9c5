"""Flow: dataset diff — which concepts differ between two corpora (or slices, or paired releases)."""

from __future__ import annotations

from pathlib import Path

import saeembed_flows  # noqa: F401  (Prefect settings before Prefect is imported)
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from saeembed.analysis.diff import DiffResult, diff, diff_by
from saeembed.report import diff_report
from saeembed.store import Store


@task(name="diff", cache_policy=NO_CACHE)
def run_diff(store: Store, a: str, b: str | None, by: str | None, options: dict) -> DiffResult:
    if by is not None:
        return diff_by(store, a, by, **options)
    return diff(store, a, b, **options)


@flow(name="diff", log_prints=True)
def diff_flow(
    a: str,
    b: str | None = None,
    by: str | None = None,
    where_a: str | None = None,
    where_b: str | None = None,
    where: str | None = None,
    paired_on: str | None = None,
    min_delta: float = 0.03,
    top: int = 50,
    rank_by: str = "specific",
    report: str | None = None,
    db: str | None = None,
) -> dict:
    """Concepts whose frequency differs between corpus A and corpus B (or each level of BY vs the rest)."""
    options: dict = {"min_delta": min_delta, "top": top, "rank_by": rank_by}
    if by is None:
        options |= {"where_a": where_a, "where_b": where_b, "paired_on": paired_on}
    else:
        options |= {"where": where}
    with Store.open(db) as store:
        result = run_diff(store, a, b, by, options)
    title = f"saeembed diff {a} vs {b}" if by is None else f"saeembed diff {a} by {by}"
    summary = {"analysis_id": result.analysis_id, "test": result.test, "n_a": result.n_a, "n_b": result.n_b}
    if report is not None:
        Path(report).write_text(diff_report(title, {**summary, **options}, result.table), encoding="utf-8")
    head = result.table.head(10)
    lines = [
        f"| {r['feature_id']} | {r['label'] or ''} | {r['delta']:+.3f} | {r['q_value']:.2g} |" for r in head.to_dicts()
    ]
    create_markdown_artifact(
        key="diff-summary",
        markdown="\n".join(
            [
                f"**{title}** (analysis {result.analysis_id}, {result.test}; report: {report or 'none'})",
                "",
                "| concept | label | Δ | q |",
                "|---|---|---|---|",
                *lines,
            ]
        ),
        description=title,
    )
    return {**summary, "report": report, "rows": result.table.to_dicts()}
