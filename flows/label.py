"""Flow: label a corpus's concepts (token labels, or an LLM) and score the labels."""

from __future__ import annotations

import saeembed_flows  # noqa: F401  (Prefect settings before Prefect is imported)
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from saeembed_flows.progress import stage_bars

from saeembed.concepts.labels import carry_labels, label_concepts, labelling_skipped
from saeembed.concepts.llm import chat_backend
from saeembed.errors import SaeembedError
from saeembed.options import LabelOptions
from saeembed.storage.store import Store


# Not retried: LLM calls retry with backoff inside, and a rerun skips concepts already labelled.
@task(name="label-concepts", cache_policy=NO_CACHE)
def label_task(
    store: Store, corpus: str, method: str, features: str, force: bool, chat: object, concurrency: int, show: bool
) -> dict:
    with stage_bars(f"label {corpus}", enabled=show) as on_progress:
        summary = label_concepts(
            store,
            corpus,
            method=method,
            features=features,
            force=force,
            chat=chat,
            concurrency=concurrency,
            on_progress=on_progress,
        )
    return summary._asdict()


@task(name="carry-labels", cache_policy=NO_CACHE)
def carry_task(store: Store, corpus: str, analysis_id: int, force: bool) -> dict:
    return carry_labels(store, corpus, analysis_id, force=force)._asdict()


@flow(name="label", log_prints=True)
def label_flow(
    corpus: str,
    method: str = "tokens",
    features: str = "all",
    force: bool = False,
    db: str | None = None,
    llm_local: str | None = None,
    llm_base_url: str | None = None,
    llm_model: str | None = None,
    llm_api_key_env: str = "OPENAI_API_KEY",
    llm_timeout: float = 60,
    concurrency: int = 4,
    from_matches: int | None = None,
    show_progress: bool = False,
) -> dict:
    """Label CORPUS's concepts with METHOD (tokens | llm) and score each label.

    The LLM endpoint is checked (one cheap request) before anything heavy loads; `llm_timeout` is the
    seconds each LLM request may take. The result's `failures` counts unlabelled concepts by reason and
    `first_failure` is an example message. With `from_matches` (a concept matching's analysis id) the
    concepts of its run B, which embedded CORPUS, take the labels of their matches instead.
    """
    LabelOptions.pick(locals())  # every parameter checked before the database is opened
    with Store.open(db) as store:
        if from_matches is not None:
            summary = carry_task(store, corpus, from_matches, force)
            create_markdown_artifact(key="label-summary", markdown=_markdown(summary), description=f"label {corpus}")
            return summary
        chat = (
            chat_backend(store, llm_local, llm_base_url, llm_model, llm_api_key_env, timeout=llm_timeout)
            if method == "llm"
            else None
        )
        summary = label_task(store, corpus, method, features, force, chat, concurrency, show_progress)
        if chat is not None:
            summary["llm_calls"], summary["llm_cache_hits"] = chat.calls, chat.cache_hits
    create_markdown_artifact(key="label-summary", markdown=_markdown(summary), description=f"label {corpus}")
    return summary


def _markdown(summary: dict) -> str:
    """The summary as a list, failures as "reason: count" rather than a dict's repr."""
    lines = []
    for name, value in summary.items():
        if name == "failures":
            value = ", ".join(f"{reason}: {count}" for reason, count in value.items()) or "none"
        lines.append(f"- **{name}**: {value}")
    return "\n".join(lines)


def label_brought_in(corpus: str, max_docs: int, db: str | None, show_progress: bool) -> dict:
    """Token labels for a corpus a flow has just brought in and is about to analyse, when it has at most
    `max_docs` documents; otherwise, or when labelling fails, a one-line `warning` (printed, and returned)
    saying where its labels come from instead. Concepts labelled before are skipped, so a rerun is quick."""
    with Store.open(db, read_only=True) as store:
        warning = labelling_skipped(store, corpus, max_docs)
    if warning is None:
        try:
            summary = label_flow(corpus=corpus, method="tokens", db=db, show_progress=show_progress)
        except SaeembedError as error:
            warning = f"corpus '{corpus}' was not labelled ({error}); its concepts go by the SAE's shipped labels"
        else:
            return {"labelled": summary["labelled"], "skipped": summary["skipped"], "warning": None}
    print(f"warning: {warning}")
    return {"labelled": 0, "skipped": 0, "warning": warning}
