"""Flow: concept-correlation mining — concept pairs that go together, or concepts that track a column."""

from __future__ import annotations

import polars as pl
import saeembed_flows  # noqa: F401  (Prefect settings before Prefect is imported)
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from saeembed_flows.artifacts import page_link

from saeembed.analysis.correlate import correlate_column, correlate_pairs
from saeembed.concepts.provenance import label_note
from saeembed.options import CorrelateOptions
from saeembed.reports.html import write_report
from saeembed.reports.pages import analysis_report
from saeembed.storage.store import Store


@task(name="correlate", cache_policy=NO_CACHE)
def run_correlate(store: Store, corpus: str, with_column: str | None, options: dict) -> dict:
    if with_column is not None:
        result = correlate_column(store, corpus, with_column, **options)
    else:
        result = correlate_pairs(store, corpus, **options)
    return {k: v.to_dicts() if isinstance(v, pl.DataFrame) else v for k, v in result._asdict().items()}


@flow(name="correlate", log_prints=True)
def correlate_flow(
    corpus: str,
    with_column: str | None = None,
    where: str | None = None,
    min_npmi: float = 0.6,
    max_label_sim: float = 0.2,
    min_count: int = 5,
    max_same_token: float = 0.5,
    top: int = 50,
    report: str | None = None,
    db: str | None = None,
    level: str = "document",
    unit: str | None = None,
) -> dict:
    """Concept pairs of CORPUS with high NPMI and dissimilar labels (or concepts tracking WITH_COLUMN); at
    level 'unit', of its units (sentences, paragraphs, chunks)."""
    checked = CorrelateOptions.pick(locals())  # every parameter checked before the database is opened
    options: dict = {"where": where, "min_count": min_count, "top": top}
    if with_column is None:
        options |= {"min_npmi": min_npmi, "max_label_sim": max_label_sim, "max_same_token": max_same_token}
    with Store.open(db) as store:
        corpus = store.corpus_at_level(corpus, checked.level, checked.unit)
        result = run_correlate(store, corpus, with_column, options)
        if report is not None:
            write_report(report, analysis_report(store, result["analysis_id"])[1])
    title = f"saeembed correlate {corpus}" + (f" --with-column {with_column}" if with_column else "")
    rows = next((v for v in result.values() if isinstance(v, list)), [])
    head = [
        f"| {r['feature_a']} {r.get('label_a') or ''} {label_note(r, '_a')} "
        f"| {r['feature_b']} {r.get('label_b') or ''} {label_note(r, '_b')} | {r['npmi']:.2f} |"
        if with_column is None
        else f"| {r['feature_id']} {r.get('label') or ''} {label_note(r)} | {r.get('level') or ''} "
        f"| {r['q_value']:.2g} |"
        for r in rows[:10]
    ]
    columns = "| concept a | concept b | NPMI |" if with_column is None else "| concept | level | q |"
    create_markdown_artifact(
        key="correlate-summary",
        markdown="\n".join(
            [
                f"**{title}**: analysis {result.get('analysis_id')}, {len(rows)} rows; report: {page_link(report)}",
                "",
                columns,
                "|---|---|---|",
                *head,
            ]
        ),
        description=title,
    )
    return {**result, "report": report}
