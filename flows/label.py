"""Flow: label a corpus's concepts (token labels, or an LLM) and score the labels."""

from __future__ import annotations

import saeembed_flows  # noqa: F401  (Prefect settings before Prefect is imported)
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from saeembed_flows.progress import stage_bars

from saeembed.errors import SaeembedError
from saeembed.labels import label_concepts
from saeembed.store import Store


def _chat(
    store: Store, llm_local: str | None, llm_base_url: str | None, llm_model: str | None, api_key_env: str
) -> object | None:
    """The LLM for --method llm, every call cached in the database."""
    from saeembed.llm import CachedChat, LocalTransformers, OpenAICompatible

    if llm_local and llm_base_url:
        raise SaeembedError("give either --llm-local or --llm-base-url, not both")
    if llm_base_url:
        if not llm_model:
            raise SaeembedError("--llm-base-url needs --llm-model (the model name the endpoint serves)")
        return CachedChat(OpenAICompatible(llm_base_url, llm_model, api_key_env=api_key_env), store)
    if llm_local:
        return CachedChat(LocalTransformers(llm_local), store)
    return None


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
    concurrency: int = 4,
    show_progress: bool = False,
) -> dict:
    """Label CORPUS's concepts with METHOD (tokens | llm) and score each label."""
    with Store.open(db) as store:
        chat = _chat(store, llm_local, llm_base_url, llm_model, llm_api_key_env) if method == "llm" else None
        summary = label_task(store, corpus, method, features, force, chat, concurrency, show_progress)
        if chat is not None:
            summary["llm_calls"], summary["llm_cache_hits"] = chat.calls, chat.cache_hits
    create_markdown_artifact(
        key="label-summary",
        markdown="\n".join(f"- **{name}**: {value}" for name, value in summary.items()),
        description=f"label {corpus}",
    )
    return summary
