"""Flow: read a corpus file (or folder of .txt files) into the DuckDB store."""

from __future__ import annotations

import saeembed_flows  # noqa: F401  (Prefect settings before Prefect is imported)
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from saeembed.pipeline import store_source
from saeembed.sources import SourceRows, read_source
from saeembed.store import Store


@task(name="read-source", cache_policy=NO_CACHE)
def read(path: str, text_col: str, id_col: str | None, table: str | None) -> SourceRows:
    return read_source(path, text_col=text_col, id_col=id_col, table=table)


@task(name="store-documents", cache_policy=NO_CACHE)
def store_documents(db: str | None, source: SourceRows, corpus: str, path: str) -> dict:
    with Store.open(db) as store:
        return store_source(store, source, corpus=corpus, path=path)._asdict()


@flow(name="ingest", log_prints=True)
def ingest_flow(
    path: str,
    corpus: str,
    text_col: str = "text",
    id_col: str | None = None,
    db: str | None = None,
    table: str | None = None,
) -> dict:
    """Ingest PATH into corpus CORPUS; re-ingesting the same rows adds nothing.

    The source is read (and checked) before the database is opened: bad input writes nothing.
    """
    source = read(path, text_col, id_col, table)
    return store_documents(db, source, corpus, path)
