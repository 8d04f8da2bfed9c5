"""Flow: dataset diff — which concepts differ between two corpora (or slices, or paired releases)."""

from __future__ import annotations

import saeembed_flows  # noqa: F401  (Prefect settings before Prefect is imported)
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from saeembed_flows.artifacts import page_link

from saeembed.analysis.diff import DiffResult, diff, diff_by
from saeembed.analysis.hypotheses import HypothesisResult, verify_hypotheses
from saeembed.concepts.llm import chat_backend
from saeembed.concepts.provenance import label_note
from saeembed.options import DiffOptions
from saeembed.reports.html import diff_report, write_report
from saeembed.storage.percentiles import DEFAULT_PRESENCE
from saeembed.storage.store import Store


@task(name="diff", cache_policy=NO_CACHE)
def run_diff(store: Store, a: str, b: str | None, by: str | None, options: dict) -> DiffResult:
    if by is not None:
        return diff_by(store, a, by, **options)
    return diff(store, a, b, **options)


# Not retried: LLM calls retry with backoff inside, and every answer is cached for a rerun.
@task(name="hypotheses", cache_policy=NO_CACHE)
def run_hypotheses(store: Store, analysis_id: int, chat: object, judged_per_side: int) -> HypothesisResult:
    return verify_hypotheses(store, analysis_id, chat, judged_per_side=judged_per_side)


def _hypothesis_lines(hypotheses: HypothesisResult | None) -> list[str]:
    if hypotheses is None:
        return []
    rows = [
        f"| {r['hypothesis']} | {r['freq_a']:.0%} | {r['freq_b']:.0%} | {r['q_value']:.2g} | {r['confirmed']} |"
        for r in hypotheses.table.to_dicts()
    ]
    judged = f"judged on {hypotheses.judged_a} + {hypotheses.judged_b} held-out documents"
    return [
        "",
        f"**Hypotheses** ({judged})",
        "",
        "| hypothesis | A | B | q | confirmed |",
        "|---|---|---|---|---|",
        *rows,
    ]


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
    presence_threshold: float = DEFAULT_PRESENCE,
    report: str | None = None,
    db: str | None = None,
    llm_local: str | None = None,
    llm_base_url: str | None = None,
    llm_model: str | None = None,
    llm_api_key_env: str = "OPENAI_API_KEY",
    llm_timeout: float = 60.0,
    judged_per_side: int = 40,
    level: str = "document",
    unit: str | None = None,
) -> dict:
    """Concepts whose frequency differs between corpus A and corpus B (or each level of BY vs the rest);
    with an LLM (llm_local or llm_base_url), hypotheses drawn from them and verified on held-out documents."""
    checked = DiffOptions.pick(locals())  # every parameter checked before the database is opened
    options: dict = {"min_delta": min_delta, "top": top, "rank_by": rank_by, "presence_threshold": presence_threshold}
    if by is None:
        options |= {"where_a": where_a, "where_b": where_b, "paired_on": paired_on}
    else:
        options |= {"where": where}
    hypotheses = None
    with Store.open(db) as store:
        chat = chat_backend(store, llm_local, llm_base_url, llm_model, llm_api_key_env, timeout=llm_timeout)
        a, b = (None if x is None else store.corpus_at_level(x, checked.level, checked.unit) for x in (a, b))
        result = run_diff(store, a, b, by, options)
        if chat is not None:
            hypotheses = run_hypotheses(store, result.analysis_id, chat, judged_per_side)
    title = f"saeembed diff {a} vs {b}" if by is None else f"saeembed diff {a} by {by}"
    summary = {"analysis_id": result.analysis_id, "test": result.test, "n_a": result.n_a, "n_b": result.n_b}
    if report is not None:
        write_report(report, diff_report(title, {**summary, **options}, result.table))
    head = result.table.head(10)
    lines = [
        f"| {r['feature_id']} | {r['label'] or ''} {label_note(r)} | {r['delta']:+.3f} | {r['q_value']:.2g} |"
        for r in head.to_dicts()
    ]
    create_markdown_artifact(
        key="diff-summary",
        markdown="\n".join(
            [
                f"**{title}** (analysis {result.analysis_id}, {result.test}; report: {page_link(report)})",
                "",
                "| concept | label | Δ | q |",
                "|---|---|---|---|",
                *lines,
                *_hypothesis_lines(hypotheses),
            ]
        ),
        description=title,
    )
    return {
        **summary,
        "report": report,
        "rows": result.table.to_dicts(),
        "hypotheses": hypotheses.table.to_dicts() if hypotheses is not None else None,
    }
