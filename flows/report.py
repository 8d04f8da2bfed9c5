"""Flow: write the HTML report of a stored analysis (by id, or the latest of a kind) — e.g. every Monday
after the scheduled diff, for someone to read."""

from __future__ import annotations

import saeembed_flows  # noqa: F401  (Prefect settings before Prefect is imported)
from prefect import flow
from prefect.artifacts import create_markdown_artifact
from saeembed_flows.artifacts import page_link

from saeembed.reports.html import write_report
from saeembed.reports.pages import analysis_report
from saeembed.storage.store import Store


@flow(name="report", log_prints=True)
def report_flow(analysis: str, html: str, db: str | None = None) -> dict:
    """Write the report of ANALYSIS (an analysis id, or a kind such as diff for its latest)."""
    with Store.open(db, read_only=True) as store:
        analysis_id, page = analysis_report(store, analysis)
    path = write_report(html, page)
    create_markdown_artifact(
        key="report",
        markdown=f"Report of analysis {analysis_id}: {page_link(path)} ({len(page):,} bytes)",
        description=f"report {analysis_id}",
    )
    return {"analysis_id": analysis_id, "html": str(path), "bytes": len(page)}
