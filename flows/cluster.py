"""Flow: concept-filtered clustering — group a corpus's documents by the concepts about one thing."""

from __future__ import annotations

import saeembed_flows  # noqa: F401  (Prefect settings before Prefect is imported)
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from saeembed_flows.artifacts import page_link

from saeembed.analysis.cluster import DEFAULT_CONCEPTS, ClusterResult, cluster_documents
from saeembed.concepts.llm import chat_backend
from saeembed.concepts.provenance import concept_name
from saeembed.options import ClusterOptions
from saeembed.reports.html import cluster_report, write_report
from saeembed.storage.store import Store


@task(name="cluster", cache_policy=NO_CACHE)
def run_cluster(store: Store, corpus: str, options: dict) -> ClusterResult:
    return cluster_documents(store, corpus, **options)


@flow(name="cluster", log_prints=True)
def cluster_flow(
    corpus: str,
    about: str | None = None,
    concepts: list[int] | None = None,
    method: str = "hdbscan",
    k: int | None = None,
    min_cluster_size: int | None = None,
    n_concepts: int = DEFAULT_CONCEPTS,
    where: str | None = None,
    dense: bool = False,
    report: str | None = None,
    db: str | None = None,
    llm_local: str | None = None,
    llm_base_url: str | None = None,
    llm_model: str | None = None,
    llm_api_key_env: str = "OPENAI_API_KEY",
    llm_timeout: float = 60.0,
    level: str = "document",
    unit: str | None = None,
) -> dict:
    """Cluster CORPUS's documents (at level 'unit', its units: sentences, steps) on the concepts closest to
    ABOUT (or the feature ids in CONCEPTS); with DENSE, on all-MiniLM-L6-v2 embeddings, for comparison."""
    checked = ClusterOptions.pick(locals())  # every parameter checked before the database is opened
    options = {
        "about": about,
        "concepts": concepts,
        "method": method,
        "k": k,
        "min_cluster_size": min_cluster_size,
        "n_concepts": n_concepts,
        "where": where,
        "dense": dense,
    }
    with Store.open(db) as store:
        chat = chat_backend(store, llm_local, llm_base_url, llm_model, llm_api_key_env, timeout=llm_timeout)
        corpus = store.corpus_at_level(corpus, checked.level, checked.unit)
        result = run_cluster(store, corpus, {**options, "chat": chat})
    title = (
        f"saeembed cluster {corpus}"
        + (f" about {about!r}" if about is not None else "")
        + (" (dense)" if dense else "")
    )
    summary = {
        "analysis_id": result.analysis_id,
        "method": result.method,
        "representation": result.representation,
        "n_docs": result.n_docs,
        "n_without_concepts": result.n_without_concepts,
        "n_clusters": result.n_clusters,
        "min_cluster_size": result.min_cluster_size,
        "keyphrases": list(result.keyphrases),
    }
    if report is not None:
        write_report(report, cluster_report(title, summary, result.concepts, result.summaries, result.assignments))
    lines = []
    for r in result.summaries.to_dicts():
        top = "; ".join(concept_name(c) for c in r["top_concepts"][:3])
        lines.append(f"| {r['cluster']} | {r['size']} | {top} |")
    create_markdown_artifact(
        key="cluster-summary",
        markdown="\n".join(
            [
                f"**{title}** (analysis {result.analysis_id}, {result.method} on {result.representation}; "
                f"{result.n_without_concepts} of {result.n_docs} documents without the selected concepts; "
                f"report: {page_link(report)})",
                "",
                "| cluster | size | top concepts |",
                "|---|---|---|",
                *lines,
            ]
        ),
        description=title,
    )
    return {
        **summary,
        "report": report,
        "concepts": result.concepts.to_dicts(),
        "summaries": result.summaries.to_dicts(),
    }
