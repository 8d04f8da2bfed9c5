"""The DuckDB store on real database files: schema, idempotent document inserts, transactional batches."""

from __future__ import annotations

import os

import duckdb
import polars as pl
import pyarrow as pa
import pytest

from saeembed.errors import SaeembedError
from saeembed.storage.store import RunSettings, Store, read_sql


def rows(*texts: str) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "external_id": [f"id{i}" for i in range(len(texts))],
            "text": list(texts),
            "meta": [f'{{"topic": "x", "n": {i}}}' for i in range(len(texts))],
            "content_hash": [f"hash-{t}" for t in texts],
        }
    )


def test_schema_creates_the_documented_tables(db_path):
    with Store.open(db_path) as store:
        tables = set(store.query("SELECT table_name FROM information_schema.tables")["table_name"])
    assert {"corpora", "documents", "saes", "embed_runs", "embedded_documents", "doc_features"} <= tables
    assert {"features", "llm_cache", "doc_embeddings"} <= tables
    assert {"runs", "concept_frequency", "label_history"} <= tables


def test_opening_an_older_database_adds_the_new_label_columns(db_path):
    with duckdb.connect(str(db_path)) as con:
        # The features table as the first release with labels made it, before label embeddings were kept.
        con.execute(
            "CREATE TABLE features (label_id BIGINT PRIMARY KEY, sae_id INTEGER NOT NULL, feature_id INTEGER NOT NULL, "
            "method VARCHAR NOT NULL, model VARCHAR NOT NULL, label VARCHAR NOT NULL, description VARCHAR, "
            "run_id INTEGER, auroc FLOAT, detection FLOAT, details JSON, "
            "created_at TIMESTAMP DEFAULT current_timestamp)"
        )
        con.execute(
            "INSERT INTO features (label_id, sae_id, feature_id, method, model, label) "
            "VALUES (1, 1, 7, 'tokens', 'm', 'old label')"
        )
    with Store.open(db_path) as store:
        columns = store.query("DESCRIBE features")["column_name"].to_list()
        assert columns[-2:] == ["embedding", "embedding_model"]
        assert store.query("SELECT label, embedding FROM features").row(0) == ("old label", None)


def test_add_documents_is_idempotent_and_meta_is_queryable(db_path):
    with Store.open(db_path) as store:
        first = store.add_documents("news", rows("a", "b", "c"))
        again = store.add_documents("news", rows("a", "b", "c", "d"))
        assert (first.inserted, first.already_present) == (3, 0)
        assert (again.inserted, again.already_present) == (1, 3)
        found = store.query("SELECT external_id FROM documents WHERE (meta->>'n')::INT = 2")
        assert found["external_id"].to_list() == ["id2"]
        assert store.corpus_names() == ["news"]


def test_unknown_corpus_names_the_known_ones(db_path):
    with Store.open(db_path) as store:
        store.add_documents("news", rows("a"))
        with pytest.raises(SaeembedError, match=r"no corpus named 'nope' .*\(corpora: news\)"):
            store.corpus_id("nope")


def test_read_only_open_of_a_missing_database_is_a_clear_error(tmp_path):
    with pytest.raises(SaeembedError, match="no database at"):
        Store.open(tmp_path / "missing.duckdb", read_only=True)


def test_an_open_store_holds_the_file_only_while_an_operation_runs(db_path):
    # Another process reads and writes while this Store is open; while this one is inside an operation, the
    # other waits for it, and gives up with "database busy" (naming this process) after its own wait.
    import subprocess
    import sys

    script = f"""
import sys
import polars as pl
from saeembed.storage.store import Store
from saeembed.errors import SaeembedError
other = pl.DataFrame({{"external_id": ["x"], "text": ["x"], "meta": ["{{}}"], "content_hash": ["x"]}})
try:
    with Store.open({str(db_path)!r}, wait=float(sys.argv[1])) as store:
        store.add_documents("other", other)
        print(store.corpus_names())
except SaeembedError as error:
    print(error)
"""
    with Store.open(db_path) as store:
        store.add_documents("news", rows("a"))
        free = subprocess.run([sys.executable, "-c", script, "0"], capture_output=True, text=True, timeout=60)
        assert free.stdout.strip() == "['news', 'other']", free.stderr
        with store.writing():
            busy = subprocess.run([sys.executable, "-c", script, "0.3"], capture_output=True, text=True, timeout=60)
        assert "database busy" in busy.stdout and "waited 0.3 s" in busy.stdout
        assert f"process {os.getpid()}" in busy.stdout
        assert store.corpus_names() == ["news", "other"]


def _open_run(store: Store) -> int:
    store.add_documents("news", rows("a", "b", "c"))
    sae_id = store.register_sae(
        name="tiny",
        fingerprint="f" * 40,
        path=None,
        config={"source_format": "saeembed", "arch": "topk", "d_in": 4, "d_sae": 8, "k": 2},
    )
    settings = RunSettings(store.corpus_id("news"), sae_id, "reader", 3, 512, True, "float32")
    return store.open_run(settings, {})


def _batch(doc_ids: list[int]) -> tuple[pa.Table, pa.Table]:
    documents = pa.table(
        {
            "doc_id": doc_ids,
            "n_tokens": [4] * len(doc_ids),
            "n_tokens_total": [4] * len(doc_ids),
            "truncated": [False] * len(doc_ids),
            "n_features": [1] * len(doc_ids),
        }
    )
    features = pa.table(
        {
            "doc_id": doc_ids,
            "feature_id": [7] * len(doc_ids),
            "max_act": [1.5] * len(doc_ids),
            "mean_act": [0.5] * len(doc_ids),
            "n_active_tokens": [2] * len(doc_ids),
            "argmax_pos": [1] * len(doc_ids),
        }
    )
    return documents, features


def test_runs_resume_with_the_same_settings_and_track_pending(db_path):
    with Store.open(db_path) as store:
        run_id = _open_run(store)
        assert _open_run(store) == run_id  # same settings: the same run, resumed
        pending = store.pending_documents(run_id)["doc_id"].to_list()
        assert len(pending) == 3
        store.write_batch(run_id, *_batch(pending[:2]))
        assert store.pending_documents(run_id)["doc_id"].to_list() == pending[2:]
        assert store.finish_run(run_id, {}) == "running"
        store.write_batch(run_id, *_batch(pending[2:]))
        assert store.finish_run(run_id, {}) == "complete"
        frequency = store.query("SELECT feature_id, n_docs, freq FROM concept_frequency").to_dicts()
        assert frequency == [{"feature_id": 7, "n_docs": 3, "freq": 1.0}]


def test_a_failed_batch_leaves_nothing_behind(db_path):
    with Store.open(db_path) as store:
        run_id = _open_run(store)
        pending = store.pending_documents(run_id)["doc_id"].to_list()
        documents, features = _batch(pending)
        broken = features.drop(["argmax_pos"])  # the documents would fit: nothing of the batch may appear
        with pytest.raises(SaeembedError, match="does not fit the store's layout.*argmax_pos"):
            store.write_batch(run_id, documents, broken)
        assert store.query("SELECT count(*) AS n FROM doc_features")["n"][0] == 0
        assert store.query("SELECT count(*) AS n FROM embedded_documents")["n"][0] == 0
        assert list((store.shards / ".staging").iterdir()) == []


def test_sql_files_are_installed():
    assert "CREATE TABLE IF NOT EXISTS documents" in read_sql("schema")
    assert "CREATE OR REPLACE VIEW doc_features" in read_sql("shard_views")
    with pytest.raises(SaeembedError, match=r"no SQL file named nope.sql"):
        read_sql("nope")


def test_a_writer_waits_for_the_other_process_when_asked(db_path):
    import subprocess
    import sys
    import time

    # The other process holds the database for about 2 s; waiting up to 60 s gets it once released.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time\ncon = duckdb.connect({str(db_path)!r})\nprint('held', flush=True)\ntime.sleep(2)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    started = time.monotonic()
    with pytest.raises(SaeembedError, match="database busy"):
        Store.open(db_path, wait=0.2)
    with Store.open(db_path, wait=60) as store:
        assert store.check() == []
    assert time.monotonic() - started > 0.5
    holder.wait(timeout=30)


def test_the_consistency_check_names_damage(tmp_path):
    from tests.support import build_store

    path = build_store(tmp_path / "c.duckdb", {"a": [("x", {}, [1, 2]), ("y", {}, [3])]})
    with Store.open(path) as store:
        assert store.check() == []
        # A shard that repeats document "x" with concept 1 only (as two jobs embedding one run at once would).
        x = store.query("SELECT doc_id FROM documents WHERE text = 'x'")["doc_id"][0]
        documents = pa.table(
            {"doc_id": [x], "n_tokens": [3], "n_tokens_total": [3], "truncated": [False], "n_features": [1]}
        )
        features = pa.table(
            {
                "doc_id": [x],
                "feature_id": [1],
                "max_act": [1.0],
                "mean_act": [0.5],
                "n_active_tokens": [1],
                "argmax_pos": [1],
            }
        )
        store.write_batch(1, documents, features)
        assert store.check() == [
            "documents whose n_features differs from their concept rows: 2",
            "concept rows stored twice: 1",
            "documents embedded twice by a run: 1",
        ]
