"""Processes sharing one database: two embed commands started at once (each its own Prefect flow run) on
one run, where the second waits for the first or fails with "database busy" and the store stays
consistent; and readers in another process while an embedding writes, who are answered at once and never
see half a document."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from saeembed.concepts.labels import label_concepts
from saeembed.jobs import embed, ingest
from saeembed.model.pooling import EmbedOptions
from saeembed.storage.corpora import demo_corpus
from saeembed.storage.store import Store
from tests.support import TEXTS, small_sae

BIN = Path(sys.executable).parent


def start_embed(db: Path, sae: Path, env: dict[str, str]) -> subprocess.Popen:
    command = [BIN / "saeembed", "embed", "--corpus", "news", "--sae", sae, "--db", db, "--device", "cpu"]
    return subprocess.Popen(
        [*command, "--max-tokens", "32", "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.slow
def test_two_embeds_at_once_both_finish_or_one_says_busy_and_the_store_stays_consistent(tmp_path):
    db, sae = tmp_path / "shared.duckdb", small_sae(tmp_path / "sae")
    source = tmp_path / "news.csv"
    pl.DataFrame({"text": TEXTS}).write_csv(source)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    env.pop("PREFECT_API_URL", None)
    # The first command also sets up Prefect's database, which two processes must not create at once.
    subprocess.run([BIN / "saeembed", "ingest", source, "--corpus", "news", "--db", db], env=env, check=True)

    first, second = start_embed(db, sae, env), start_embed(db, sae, env)
    results = [(p.wait(timeout=600), p.stdout.read(), p.stderr.read()) for p in (first, second)]
    finished = [out for code, out, _ in results if code == 0]
    refused = [err for code, _, err in results if code != 0]
    assert finished, results
    assert all("database busy" in err for err in refused), refused
    with Store.open(db) as store:
        assert store.check() == []
        assert store.query("SELECT count(*) AS n FROM embedded_documents")["n"][0] == len(TEXTS)

    # Asked to wait (SAEEMBED_DB_WAIT), both finish: the second embeds what the first left, here nothing.
    pl.DataFrame({"text": [f"{t} Again." for t in TEXTS]}).write_csv(source)
    subprocess.run([BIN / "saeembed", "ingest", source, "--corpus", "news", "--db", db], env=env, check=True)
    waiting = {**env, "SAEEMBED_DB_WAIT": "600"}
    first, second = start_embed(db, sae, waiting), start_embed(db, sae, waiting)
    results = [(p.wait(timeout=900), p.stdout.read(), p.stderr.read()) for p in (first, second)]
    assert [code for code, _, _ in results] == [0, 0], results
    embedded = sorted(json.loads(out)["documents"] for _, out, _ in results)
    assert embedded == [0, len(TEXTS)]
    with Store.open(db) as store:
        assert store.check() == []
        assert store.query("SELECT count(*) AS n FROM embedded_documents")["n"][0] == 2 * len(TEXTS)


READER = """
import json, sys, time
from saeembed.analysis.lookup import show_document
from saeembed.analysis.retrieve import search_documents
from saeembed.concepts.dense import DEFAULT_SENTENCE_MODEL, SentenceEmbedder
from saeembed.storage.store import Store

db, doc_id = sys.argv[1], int(sys.argv[2])
embedder = SentenceEmbedder.load(DEFAULT_SENTENCE_MODEL)
with Store.open(db) as store:  # models and tokenizers loaded once, before the timed rounds
    show_document(store, doc_id)
    search_documents(store, "sports", corpus="news", embedder=embedder)
print("ready", flush=True)
for _ in sys.stdin:
    round = {}
    started = time.perf_counter()
    with Store.open(db, read_only=True) as store, store.reading():  # one state of the database
        round["rows"] = int(store.query("SELECT count(*) AS n FROM doc_features")["n"][0])
        round["documents"] = int(store.query("SELECT count(*) AS n FROM embedded_documents")["n"][0])
        round["problems"] = store.check()
    round["sql"] = time.perf_counter() - started
    started = time.perf_counter()
    with Store.open(db, read_only=True) as store:
        round["shown"] = show_document(store, doc_id).concepts.height
    round["docs_show"] = time.perf_counter() - started
    started = time.perf_counter()
    with Store.open(db) as store:  # a search records itself: a write of its own
        round["found"] = search_documents(store, "sports", corpus="news", embedder=embedder).documents.height
    round["search"] = time.perf_counter() - started
    print(json.dumps(round), flush=True)
"""


@pytest.mark.slow
def test_readers_are_answered_at_once_while_an_embedding_writes_and_never_see_half_a_document(tmp_path):
    db, sae = tmp_path / "live.duckdb", small_sae(tmp_path / "sae")
    corpus = demo_corpus(n=340, seed=5)
    first, rest = tmp_path / "first.parquet", tmp_path / "rest.parquet"
    corpus.head(40).write_parquet(first)
    corpus.tail(300).write_parquet(rest)
    options = EmbedOptions(max_tokens=48, batch_size=8)
    with Store.open(db) as store:
        ingest(store, first, corpus="news", id_col="id")
        embed(store, "news", sae=str(sae), device="cpu", options=options)
        label_concepts(store, "news")
        ingest(store, rest, corpus="news", id_col="id")
        shown_doc = int(store.query("SELECT min(doc_id) AS d FROM documents")["d"][0])

    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    env.pop("PREFECT_API_URL", None)
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(db), str(shown_doc)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert reader.stdout.readline().strip() == "ready"
    command = [BIN / "saeembed", "embed", "--corpus", "news", "--sae", sae, "--db", db, "--device", "cpu"]
    command += ["--max-tokens", "48", "--batch-size", "8", "--shard-docs", "8", "--json"]
    writer = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rounds, sql_while_writing = [], None
    try:
        while writer.poll() is None:  # read as long as the embedding runs (Prefect's start included)
            reader.stdin.write("go\n")
            reader.stdin.flush()
            rounds.append(json.loads(reader.stdout.readline()))
            if sql_while_writing is None and rounds[-1]["documents"] > 40:
                sql_while_writing = subprocess.run(
                    [BIN / "saeembed", "sql", "SELECT count(*) AS n FROM documents", "--db", db, "--json"],
                    capture_output=True,
                    text=True,
                    env=env,
                    timeout=60,
                )
        assert writer.wait(timeout=900) == 0, writer.stderr.read()
    finally:
        reader.kill()
        writer.kill()
    summary = json.loads(writer.stdout.read())
    assert summary["documents"] == 300

    print(json.dumps(rounds))  # shown when an assertion fails
    documents = [r["documents"] for r in rounds]
    assert len(rounds) >= 10, documents  # ten reads or more while the embedding ran
    assert sum(40 < n < 340 for n in documents) >= 3, documents  # some of them mid-way
    assert documents == sorted(documents) and [r["rows"] for r in rounds] == sorted(r["rows"] for r in rounds)
    assert all(r["problems"] == [] for r in rounds)  # every document with all its concept rows, or none
    assert all(r["shown"] > 0 and r["found"] > 0 for r in rounds)
    for kind in ("sql", "docs_show", "search"):
        assert np.percentile([r[kind] for r in rounds], 95) < 2.0, (
            kind,
            [(r["documents"], round(r[kind], 2)) for r in rounds],
        )
    assert sql_while_writing is not None and sql_while_writing.returncode == 0, sql_while_writing
    assert json.loads(sql_while_writing.stdout) == [{"n": 340}]
    with Store.open(db, read_only=True) as store:
        assert store.check() == []
        assert store.query("SELECT count(*) AS n FROM embedded_documents")["n"][0] == 340


@pytest.mark.slow
def test_an_embedding_killed_mid_run_then_rerun_embeds_every_document_exactly_once(tmp_path):
    db, sae = tmp_path / "killed.duckdb", small_sae(tmp_path / "sae")
    source = tmp_path / "news.parquet"
    demo_corpus(n=120, seed=7).write_parquet(source)
    with Store.open(db) as store:
        ingest(store, source, corpus="news", id_col="id")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    env.pop("PREFECT_API_URL", None)
    command = [BIN / "saeembed", "embed", "--corpus", "news", "--sae", sae, "--db", db, "--device", "cpu"]
    command += ["--max-tokens", "48", "--batch-size", "4", "--shard-docs", "8", "--json"]
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    shards = tmp_path / "killed.duckdb.shards" / "run_id=1"
    try:
        while first.poll() is None and len(list(shards.glob("*/documents.parquet"))) < 3:
            time.sleep(0.2)
        first.kill()  # SIGKILL: no cleanup of any kind
    finally:
        first.wait(timeout=60)
    with Store.open(db, read_only=True) as store:
        embedded = store.query("SELECT count(*) AS n FROM embedded_documents")["n"][0]
        assert store.check() == []
    assert 0 < embedded < 120
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["documents"] == 120 - embedded
    with Store.open(db, read_only=True) as store:
        per_doc = store.query("SELECT doc_id, count(*) AS n FROM embedded_documents GROUP BY doc_id")
        assert per_doc.height == 120 and per_doc["n"].max() == 1
        assert store.check() == []
        assert store.query("SELECT status FROM embed_runs")["status"].to_list() == ["complete"]


@pytest.mark.slow
def test_two_dask_workers_store_exactly_the_rows_of_one_process(tmp_path):
    sae = small_sae(tmp_path / "sae")
    source = tmp_path / "news.parquet"
    demo_corpus(n=60, seed=3).write_parquet(source)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    env.pop("PREFECT_API_URL", None)
    results = {}
    for name, extra in (("one", []), ("dask", ["--workers", "2"])):
        db = tmp_path / f"{name}.duckdb"
        subprocess.run(
            [BIN / "saeembed", "ingest", source, "--corpus", "news", "--id-col", "id", "--db", db], env=env, check=True
        )
        command = [BIN / "saeembed", "embed", "--corpus", "news", "--sae", sae, "--db", db, "--device", "cpu"]
        command += ["--max-tokens", "48", "--shard-docs", "16", "--json", *extra]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["documents"] == 60
        with Store.open(db, read_only=True) as store:
            assert store.check() == []
            results[name] = (
                store.query("SELECT * FROM doc_features ORDER BY doc_id, feature_id"),
                store.query("SELECT * FROM embedded_documents ORDER BY doc_id"),
            )
    one, dask = results["one"], results["dask"]
    assert one[0].height > 60 * 20 and one[1].height == 60
    assert one[0].equals(dask[0]) and one[1].equals(dask[1])  # every row, max_act included, to the bit
