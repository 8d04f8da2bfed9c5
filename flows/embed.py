"""Flow: embed every not-yet-embedded document of a corpus with a reader LLM and an SAE."""

from __future__ import annotations

import saeembed_flows  # noqa: F401  (Prefect settings before Prefect is imported)
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from saeembed_flows.progress import progress_bar

from saeembed.jobs import EmbedJob, EmbedStats
from saeembed.model.pooling import EmbedOptions
from saeembed.options import EmbedJobOptions
from saeembed.storage.shards import DEFAULT_SHARD_DOCS
from saeembed.storage.store import Store


@task(name="open-embed-job", cache_policy=NO_CACHE)
def open_job(
    store: Store,
    corpus: str,
    sae: str,
    reader: str | None,
    layer: int | None,
    device: str,
    dtype: str,
    options: EmbedOptions,
) -> EmbedJob:
    return EmbedJob.open(
        store, corpus, sae=sae, reader=reader, layer=layer, device=device, dtype=dtype, options=options
    )


# A chunk that fails (e.g. a GPU hiccup) is retried; shards already published are not redone.
@task(name="embed-chunk", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def embed_chunk(job: EmbedJob, limit: int, advance: object) -> EmbedStats:
    return job.embed_chunk(limit, on_batch=advance)


@flow(name="embed", log_prints=True)
def embed_flow(
    corpus: str,
    sae: str = "default",
    db: str | None = None,
    reader: str | None = None,
    layer: int | None = None,
    batch_size: int = 32,
    max_tokens: int = 512,
    chat_template: bool = True,
    device: str = "auto",
    dtype: str = "auto",
    shard_docs: int = DEFAULT_SHARD_DOCS,
    show_progress: bool = False,
) -> dict:
    """Embed CORPUS with SAE (default: the SmolLM2-135M-Instruct SAE shipped with saeembed)."""
    EmbedJobOptions.pick(locals())  # every parameter checked before the database is opened or a model loads
    options = EmbedOptions(max_tokens=max_tokens, chat_template=chat_template, batch_size=batch_size)
    with Store.open(db) as store:
        job = open_job(store, corpus, sae, reader, layer, device, dtype, options)
        try:
            stats = EmbedStats()
            with progress_bar(f"embed {corpus}", job.pending, enabled=show_progress) as advance:
                while (chunk := embed_chunk(job, shard_docs, advance)).documents:
                    stats = stats + chunk
            summary = job.finish(stats)
        finally:
            job.close()
    create_markdown_artifact(
        key="embed-summary",
        markdown="\n".join(f"- **{name}**: {value}" for name, value in summary._asdict().items()),
        description=f"embed {corpus}",
    )
    return summary._asdict()
