"""Flow: read a corpus file (or folder of .txt files) into the DuckDB store."""

from __future__ import annotations

import saeembed_flows  # noqa: F401  (Prefect settings before Prefect is imported)
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from saeembed.pipeline import IngestReport, ingest
from saeembed.store import Store


@task(name="read-and-store", cache_policy=NO_CACHE)
def read_and_store(db: str | None, path: str, corpus: str, text_col: str, id_col: str | None) -> IngestReport:
    with Store.open(db) as store:
        return ingest(store, path, corpus=corpus, text_col=text_col, id_col=id_col)


@flow(name="ingest", log_prints=True)
def ingest_flow(
    path: str, corpus: str, text_col: str = "text", id_col: str | None = None, db: str | None = None
) -> dict:
    """Ingest PATH into corpus CORPUS; re-ingesting the same rows adds nothing."""
    report = read_and_store(db, path, corpus, text_col, id_col)
    return report._asdict()
