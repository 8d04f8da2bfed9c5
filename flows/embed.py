"""Flow: embed every not-yet-embedded document of a corpus with a reader LLM and an SAE, in this process or
on Dask workers (a local cluster of `workers` processes, or the scheduler at `dask_address`)."""

from __future__ import annotations

import os
import time
from dataclasses import replace

import saeembed_flows  # noqa: F401  (Prefect settings before Prefect is imported)
from prefect import flow, task, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from saeembed_flows.label import label_brought_in
from saeembed_flows.progress import progress_bar

from saeembed.jobs import EmbedJob, EmbedSettings, EmbedStats, embed_documents
from saeembed.model.pooling import EmbedOptions
from saeembed.options import LABEL_MAX_DOCS, EmbedJobOptions
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
    unit: str,
) -> EmbedJob:
    return EmbedJob.open(
        store, corpus, sae=sae, reader=reader, layer=layer, device=device, dtype=dtype, options=options, unit=unit
    )


# A share that fails (e.g. a GPU hiccup, a worker lost) is retried; shards already published are not redone.
@task(name="embed-chunk", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def embed_chunk(job: EmbedJob, limit: int, advance: object) -> EmbedStats:
    return job.embed_chunk(limit, on_batch=advance)


@task(name="embed-share", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def embed_share(db: str, run_id: int, doc_ids: list[int], settings: EmbedSettings) -> EmbedStats:
    return embed_documents(db, run_id, doc_ids, settings)


@flow(name="embed-shares", log_prints=True, validate_parameters=False)
def embed_shares(
    db: str, run_id: int, shares: list[list[int]], settings: EmbedSettings, description: str, show_progress: bool
) -> EmbedStats:
    """Each share embedded by a task on the flow's task runner (Dask workers); stats summed as they finish."""
    futures = embed_share.map(unmapped(db), unmapped(run_id), shares, unmapped(settings))
    stats = EmbedStats()
    with progress_bar(description, sum(map(len, shares)), enabled=show_progress) as advance:
        for future in as_completed(futures):
            done = future.result()
            advance(done.documents, done.tokens)
            stats = stats + done
    return stats


def dask_runner(workers: int, dask_address: str | None) -> object:
    """Prefect's Dask task runner: the scheduler at `dask_address`, or a local cluster of `workers` processes,
    each with its share of this machine's cores for torch."""
    from prefect_dask import DaskTaskRunner

    if dask_address is not None:
        return DaskTaskRunner(address=dask_address)
    cluster = {"n_workers": workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None}
    return DaskTaskRunner(cluster_kwargs=cluster)


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
    workers: int = 1,
    dask_address: str | None = None,
    show_progress: bool = False,
    unit: str = "document",
    label: bool = False,
    label_max_docs: int = LABEL_MAX_DOCS,
) -> dict:
    """Embed CORPUS with SAE (default: the SmolLM2-135M-Instruct SAE shipped with saeembed); with UNIT
    (sentence, paragraph, chunk:N) one vector per unit of each document, into corpus 'CORPUS:UNIT'. With
    LABEL, token labels for the embedded corpus when it has at most LABEL_MAX_DOCS documents."""
    checked = EmbedJobOptions.pick(locals())  # every parameter checked before the database is opened or a model loads
    options = EmbedOptions(max_tokens=max_tokens, chat_template=chat_template, batch_size=batch_size)
    distributed = workers > 1 or dask_address is not None
    with Store.open(db) as store:
        job = open_job(store, corpus, sae, reader, layer, device, dtype, options, checked.unit)
        try:
            started = time.perf_counter()
            if distributed:
                threads = None if dask_address else max(1, (os.cpu_count() or 1) // workers)
                settings = job.settings._replace(threads=threads)
                on_dask = embed_shares.with_options(task_runner=dask_runner(workers, dask_address))
                shares = job.pending_shares(shard_docs)
                stats = on_dask(str(store.path), job.run_id, shares, settings, f"embed {job.corpus}", show_progress)
            else:
                stats = EmbedStats()
                with progress_bar(f"embed {job.corpus}", job.pending, enabled=show_progress) as advance:
                    while (chunk := embed_chunk(job, shard_docs, advance)).documents:
                        stats = stats + chunk
            summary = job.finish(replace(stats, seconds=time.perf_counter() - started))  # wall time, not summed
        finally:
            job.close()
    create_markdown_artifact(
        key="embed-summary",
        markdown="\n".join(f"- **{name}**: {value}" for name, value in summary._asdict().items()),
        description=f"embed {job.corpus}",
    )
    labels = label_brought_in(job.corpus, label_max_docs, db, show_progress) if label else None
    return {**summary._asdict(), **({"labels": labels} if label else {})}
