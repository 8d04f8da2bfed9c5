"""Stores the quality benchmarks keep between runs (under ~/.cache/saeembed/bench/ by default): corpora
ingested and embedded once (default SAE, 128 tokens) with MiniLM embeddings of every document, and a
copy with token labels made from each corpus, so a rerun only measures."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import polars as pl

from saeembed.concepts.dense import DEFAULT_SENTENCE_MODEL, SentenceEmbedder, document_embeddings
from saeembed.concepts.labels import label_concepts
from saeembed.jobs import embed, ingest
from saeembed.model.pooling import EmbedOptions
from saeembed.storage.store import Store, copy_database


def build(db: Path, corpora: dict[str, pl.DataFrame]) -> None:
    """Ingest (frames with an `id` column) and embed each corpus into `db`, skipping what is done."""
    db.parent.mkdir(parents=True, exist_ok=True)
    with Store.open(db) as store, tempfile.TemporaryDirectory() as folder:
        for name, frame in corpora.items():
            if name not in store.corpus_names():
                path = Path(folder) / f"{name}.parquet"
                frame.write_parquet(path)
                ingest(store, path, corpus=name, id_col="id")
            started = time.perf_counter()
            summary = embed(store, name, options=EmbedOptions(max_tokens=128))
            if summary.documents:
                print(f"embedded {summary.documents} documents of {name} in {time.perf_counter() - started:.0f} s")
        doc_ids = store.query("SELECT doc_id FROM documents ORDER BY doc_id")["doc_id"].to_list()
        document_embeddings(store, doc_ids, SentenceEmbedder.load(DEFAULT_SENTENCE_MODEL))


def labelled_copy(db: Path, corpora: list[str]) -> Path:
    """A copy of `db` with token labels made from each of `corpora` (made once)."""
    target = db.with_name(db.stem + "-labelled.duckdb")
    if not target.exists():
        with tempfile.TemporaryDirectory() as folder:
            staging = copy_database(db, Path(folder) / target.name)
            with Store.open(staging) as store:
                for corpus in corpora:
                    started = time.perf_counter()
                    label_concepts(store, corpus)
                    print(f"token labels made from {corpus} in {time.perf_counter() - started:.0f} s")
            copy_database(staging, target)  # only a finished labelling lands at the target
    return target
