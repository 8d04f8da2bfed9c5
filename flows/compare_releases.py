"""Flow: compare model releases answering the same prompts — ingest new responses, embed them, paired
diffs of each release against the previous one and a baseline, a report."""

from __future__ import annotations

import saeembed_flows  # noqa: F401  (Prefect settings before Prefect is imported)
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from saeembed_flows.artifacts import page_link
from saeembed_flows.embed import embed_flow
from saeembed_flows.label import label_brought_in

from saeembed.analysis.releases import (
    ReleaseComparison,
    compare_releases,
    example_releases,
    ingest_releases,
    read_releases,
)
from saeembed.options import LABEL_MAX_DOCS, CompareReleasesOptions
from saeembed.reports.html import write_report
from saeembed.reports.releases import releases_report
from saeembed.storage.percentiles import DEFAULT_PRESENCE
from saeembed.storage.store import Store

EXAMPLE = "example"
"""`source` value naming the bundled example releases table."""


@task(name="ingest-releases", cache_policy=NO_CACHE)
def ingest_task(source: str, corpus: str, db: str | None) -> dict:
    frame = example_releases() if source == EXAMPLE else read_releases(source)
    with Store.open(db) as store:
        counts = ingest_releases(store, frame, corpus=corpus, source=source)
    return {"rows": frame.height, **counts._asdict()}


@task(name="compare-releases", cache_policy=NO_CACHE)
def compare_task(
    corpus: str, baseline: str | None, min_delta: float, top: int, presence_threshold: float, db: str | None
) -> ReleaseComparison:
    with Store.open(db) as store:
        return compare_releases(
            store, corpus, baseline=baseline, min_delta=min_delta, top=top, presence_threshold=presence_threshold
        )


@flow(name="compare-releases", log_prints=True)
def compare_releases_flow(
    source: str | None = EXAMPLE,
    corpus: str = "releases",
    baseline: str | None = None,
    sae: str = "default",
    reader: str | None = None,
    layer: int | None = None,
    max_tokens: int = 256,
    device: str = "auto",
    dtype: str = "auto",
    min_delta: float = 0.03,
    top: int = 10,
    presence_threshold: float = DEFAULT_PRESENCE,
    report: str | None = None,
    label: bool = True,
    label_max_docs: int = LABEL_MAX_DOCS,
    db: str | None = None,
    show_progress: bool = False,
) -> dict:
    """Releases in SOURCE (a .parquet/.csv/.jsonl table of prompt_id, prompt, model, release, released_at,
    response; 'example' for the bundled one; None to use what CORPUS holds) compared release by release.
    Only new rows are ingested and only new responses embedded, so a schedule picks up a new release
    as soon as its rows appear. With LABEL (the default) the corpus gets token labels of its own when it has
    at most LABEL_MAX_DOCS documents, so the report's labels describe these responses."""
    CompareReleasesOptions.pick(locals())  # every parameter checked before anything is read or written
    ingested = ingest_task(source, corpus, db) if source is not None else None
    embedded = embed_flow(
        corpus=corpus,
        sae=sae,
        db=db,
        reader=reader,
        layer=layer,
        max_tokens=max_tokens,
        device=device,
        dtype=dtype,
        show_progress=show_progress,
    )
    labels = label_brought_in(corpus, label_max_docs, db, show_progress) if label else None
    result = compare_task(corpus, baseline, min_delta, top, presence_threshold, db)
    title = f"saeembed compare-releases {corpus}"
    if report is not None:
        write_report(report, releases_report(title, result))
    steps = result.steps.to_dicts()
    create_markdown_artifact(
        key="compare-releases-summary",
        markdown="\n".join(
            [
                f"**{title}** (analysis {result.analysis_id}; report: {page_link(report)})",
                "",
                "| model | release | against | rising | falling |",
                "|---|---|---|---|---|",
                *(
                    f"| {s['model']} | {s['release']} | {s['against']} ({s['against_kind']}) | {s['rising']} "
                    f"| {s['falling']} |"
                    for s in steps
                ),
            ]
        ),
        description=title,
    )
    return {
        "analysis_id": result.analysis_id,
        "ingested": ingested,
        "embedded": embedded["documents"],
        "labels": labels,
        "report": report,
        "steps": steps,
        "changes": result.changes.to_dicts(),
        "trend": result.trend.to_dicts(),
    }
