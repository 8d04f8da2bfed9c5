"""Flow: concept matching — each concept of one embedding run with its closest concept of another."""

from __future__ import annotations

import saeembed_flows  # noqa: F401  (Prefect settings before Prefect is imported)
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from saeembed_flows.artifacts import page_link

from saeembed.analysis.matching import match_concepts
from saeembed.concepts.provenance import label_note
from saeembed.options import MatchOptions
from saeembed.reports.html import write_report
from saeembed.reports.pages import analysis_report
from saeembed.storage.store import Store


@task(name="concepts-match", cache_policy=NO_CACHE)
def run_match(store: Store, options: MatchOptions) -> dict:
    result = match_concepts(
        store, options.run_a, options.run_b, method=options.method, max_docs=options.max_docs, top=options.top
    )
    summary, matches = result.summary._asdict(), result.matches.to_dicts()
    return {"analysis_id": result.analysis_id, "summary": summary, "matches": matches}


@flow(name="concepts-match", log_prints=True)
def match_flow(
    run_a: int,
    run_b: int,
    method: str = "correlation",
    max_docs: int = 20_000,
    top: int = 20,
    report: str | None = None,
    db: str | None = None,
) -> dict:
    """Match each concept of embedding run RUN_A with its closest concept of RUN_B, and say how universal
    the two concept spaces are."""
    options = MatchOptions.pick(locals())  # every parameter checked before the database is opened
    with Store.open(db) as store:
        result = run_match(store, options)
        if report is not None:
            write_report(report, analysis_report(store, result["analysis_id"])[1])
    result["report"] = report
    summary = result["summary"]
    title = f"saeembed concepts match {run_a} {run_b} --method {method}"
    rows = [
        f"| {r['feature_a']} {r['label_a'] or ''} {label_note(r, '_a')} "
        f"| {r['feature_b']} {r['label_b'] or ''} {label_note(r, '_b')} | {r['score']:.3f} |"
        for r in result["matches"][:10]
    ]
    create_markdown_artifact(
        key="concepts-match-summary",
        markdown="\n".join(
            [
                f"**{title}**: analysis {result['analysis_id']} (report: {page_link(report)}), "
                f"{summary['n_concepts_a']} concepts of run {run_a} "
                f"over {summary['n_docs']} documents; matched (≥ 0.5): {summary['share_matched']:.1%}, "
                f"mean best score {summary['mean_best']:.3f}, SVCCA {_number(summary['svcca'])} "
                f"(shuffled pairs {_number(summary['svcca_reference'])})",
                "",
                "| concept of A | best match in B | score |",
                "|---|---|---|",
                *rows,
            ]
        ),
        description=title,
    )
    return result


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
