"""Flow: read a corpus file (or folder of .txt files) into the DuckDB store."""

from __future__ import annotations

import saeembed_flows  # noqa: F401  (Prefect settings before Prefect is imported)
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from saeembed.jobs import store_source
from saeembed.options import IngestOptions
from saeembed.storage.sources import SourceRows, read_source
from saeembed.storage.store import Store


@task(name="read-source", cache_policy=NO_CACHE)
def read(
    path: str, text_col: str, id_col: str | None, table: str | None, on_bad_line: str, on_duplicate_id: str
) -> SourceRows:
    return read_source(
        path, text_col=text_col, id_col=id_col, table=table, on_bad_line=on_bad_line, on_duplicate_id=on_duplicate_id
    )


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
    on_bad_line: str = "error",
    on_duplicate_id: str = "keep",
) -> dict:
    """Ingest PATH into corpus CORPUS; re-ingesting the same rows adds nothing.

    The source is read (and checked) before the database is opened: bad input writes nothing.
    on_bad_line ('error', 'skip') and on_duplicate_id ('keep', 'first', 'last', 'error') are those of
    `saeembed.storage.sources.read_source`; the result is `IngestReport` as a dict.
    """
    IngestOptions.pick(locals())  # every parameter checked before the source is read
    source = read(path, text_col, id_col, table, on_bad_line, on_duplicate_id)
    return store_documents(db, source, corpus, path)
