"""Flow: the README's main job — ingest the bundled AG News sample and embed it with the defaults."""

from __future__ import annotations

import tempfile
from pathlib import Path

import saeembed_flows  # noqa: F401  (Prefect settings before Prefect is imported)
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from saeembed_flows.embed import embed_flow
from saeembed_flows.ingest import ingest_flow
from saeembed_flows.label import label_flow

from saeembed.options import DemoOptions
from saeembed.storage.corpora import demo_corpus
from saeembed.storage.store import Store, read_sql, sql_file

DEMO_CORPUS = "demo"


@task(name="write-demo-corpus", cache_policy=NO_CACHE)
def write_demo_corpus(folder: str, n_docs: int) -> str:
    path = Path(folder) / "ag_news_demo.parquet"
    demo_corpus(n=n_docs).write_parquet(path)
    return str(path)


@flow(name="demo", log_prints=True)
def demo_flow(db: str | None = None, n_docs: int = 3000, show_progress: bool = False) -> dict:
    """Ingest N_DOCS bundled news articles as corpus 'demo', embed them with the default SAE and label
    its concepts (token labels)."""
    DemoOptions.pick(locals())
    with tempfile.TemporaryDirectory() as folder:
        ingested = ingest_flow(path=write_demo_corpus(folder, n_docs), corpus=DEMO_CORPUS, db=db)
    embedded = embed_flow(corpus=DEMO_CORPUS, db=db, show_progress=show_progress)
    labelled = label_flow(corpus=DEMO_CORPUS, method="tokens", db=db, show_progress=show_progress)
    with Store.open(db, read_only=True) as store:
        documents, concept_rows = store.rows("demo_sizes").row(0)
    return {
        "db": str(store.path),
        "corpus": DEMO_CORPUS,
        "documents": documents,
        "new_documents": ingested["inserted"],
        "embedded_now": embedded["documents"],
        "tokens_per_second": embedded["tokens_per_second"],
        "mean_concepts_per_doc": embedded["mean_concepts_per_doc"],
        "concept_rows": concept_rows,
        "concepts_labelled": labelled["labelled"],
        "mean_label_auroc": labelled["mean_auroc"],
        "example_sql": read_sql("demo_example"),
        "example_sql_file": str(sql_file("demo_example")),
    }
