"""Flow: prepare a corpus for property search — the dense document index (embedding the documents not yet
embedded by the sentence model), and the concept-major copy of its latest run and its concepts' exemplar
vectors that sae-mode queries read."""

from __future__ import annotations

import saeembed_flows  # noqa: F401  (Prefect settings before Prefect is imported)
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from saeembed_flows.progress import progress_bar

from saeembed.concepts.dense import SentenceEmbedder, count_unembedded
from saeembed.concepts.doc_index import FLAT_BELOW, document_index
from saeembed.concepts.exemplars import exemplar_documents, exemplar_vectors
from saeembed.errors import SaeembedError
from saeembed.options import SearchIndexOptions
from saeembed.storage.concept_columns import build_concept_columns, concept_columns
from saeembed.storage.store import Store


@task(name="dense-index", cache_policy=NO_CACHE)
def dense_index_task(store: Store, corpus: str, model: str, flat_below: int, show: bool) -> dict:
    embedder = SentenceEmbedder.load(model)
    corpus_id = store.corpus_id(corpus)
    missing = store.rows("search_index_unembedded", {"corpus_id": corpus_id, "model": embedder.model_id})["n"][0]
    with progress_bar(f"embed {corpus} ({embedder.model_id})", missing, enabled=show) as advance:
        found = document_index(store, corpus, embedder, flat_below=flat_below, on_batch=advance)
    return {
        "kind": found.kind,
        "index": found.describe(),
        "action": found.action,
        "documents": len(found.doc_ids),
        "newly_embedded": missing,
    }


@task(name="concept-columns", cache_policy=NO_CACHE)
def concept_columns_task(store: Store, corpus: str, model: str, show: bool) -> dict:
    """The run's concept columns and its concepts' exemplar vectors (embedding their strongest documents)."""
    run_id = store.latest_run(corpus).run_id
    built = build_concept_columns(store, run_id)
    embedder = SentenceEmbedder.load(model)
    columns = concept_columns(store, run_id)
    missing = count_unembedded(store, exemplar_documents(columns), embedder)
    with progress_bar(f"embed {corpus}'s exemplar documents", missing, enabled=show) as advance:
        exemplars = exemplar_vectors(store, run_id, columns, embedder, on_batch=advance)
    return {**built, "exemplars": int((exemplars != 0).any(axis=1).sum())}


@flow(name="search-index", log_prints=True)
def search_index_flow(
    corpus: str,
    db: str | None = None,
    model: str = "all-minilm-l6-v2",
    flat_below: int = FLAT_BELOW,
    dense: bool = True,
    concepts: bool = True,
    show_progress: bool = False,
) -> dict:
    """Build (or bring up to date) what `saeembed search` reads for CORPUS: the dense FAISS index (flat below
    FLAT_BELOW documents, IVF above) and, when the corpus has been embedded, the per-run concept columns."""
    SearchIndexOptions.pick(locals())
    if not (dense or concepts):
        raise SaeembedError("nothing to build: give dense and/or concepts")
    summary: dict = {"corpus": corpus}
    with Store.open(db) as store:
        store.corpus_id(corpus)  # a clear error for an unknown corpus before anything is built
        if dense:
            summary["dense"] = dense_index_task(store, corpus, model, flat_below, show_progress)
        if concepts:
            summary["concepts"] = concept_columns_task(store, corpus, model, show_progress)
    lines = [f"**search index for {corpus}**", ""]
    if dense:
        d = summary["dense"]
        lines.append(f"- dense: {d['index']} ({d['action']}; {d['newly_embedded']} documents newly embedded)")
    if concepts:
        c = summary["concepts"]
        lines.append(
            f"- concepts: run {c['run_id']}, {c['documents']:,} documents, {c['rows']:,} concept rows, "
            f"{c['exemplars']:,} exemplar vectors"
        )
    create_markdown_artifact(
        key="search-index-summary", markdown="\n".join(lines), description=f"search index {corpus}"
    )
    return summary
