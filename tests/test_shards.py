"""Concept rows as Parquet shards beside the database: published whole, read as one state per operation,
one embedding job per run, older databases moved into shards, copies that read their own shards, and
`saeembed sql` that reads and cannot write or reach other files."""

from __future__ import annotations

import json
import shutil

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from saeembed.errors import SaeembedError
from saeembed.storage.shards import ShardWriter
from saeembed.storage.store import Store, copy_database
from saeembed.storage.synthetic import synthetic_corpus, synthetic_sae, write_concept_lists
from saeembed.storage.user_sql import run_query
from tests.support import build_store


def small(tmp_path, name: str = "s.duckdb"):
    return build_store(
        tmp_path / name, {"c": [("alpha", {"k": 1}, [1, 2]), ("beta", {"k": 2}, [2]), ("gamma", {}, [])]}
    )


def documents(ids: list[int], n_features: list[int]) -> pa.Table:
    n = len(ids)
    return pa.table(
        {
            "doc_id": ids,
            "n_tokens": [3] * n,
            "n_tokens_total": [3] * n,
            "truncated": [False] * n,
            "n_features": n_features,
        }
    )


def features(pairs: list[tuple[int, int]]) -> pa.Table:
    n = len(pairs)
    return pa.table(
        {
            "doc_id": pa.array([d for d, _ in pairs], pa.int64()),
            "feature_id": pa.array([f for _, f in pairs], pa.int32()),
            "max_act": [1.0] * n,
            "mean_act": [0.5] * n,
            "n_active_tokens": [1] * n,
            "argmax_pos": [0] * n,
        }
    )


def test_an_operation_sees_the_shards_published_when_it_began(tmp_path):
    path = small(tmp_path)
    with Store.open(path) as reader, Store.open(path) as writer:
        run, doc_ids = synthetic_corpus(writer, "d", ["one", "two"], sae_id=1)
        with reader.reading():
            before = reader.query("SELECT count(*) AS n FROM doc_features")["n"][0]
            write_concept_lists(writer, run, doc_ids, [{5: 1.0}, {6: 1.0, 7: 2.0}])  # another job publishes
            assert reader.query("SELECT count(*) AS n FROM doc_features")["n"][0] == before
            assert reader.check() == []
        assert reader.query("SELECT count(*) AS n FROM doc_features")["n"][0] == before + 3
        assert reader.query("SELECT n_docs FROM runs WHERE run_id = $r", {"r": run})["n_docs"][0] == 2


def test_one_embedding_job_per_run_and_others_wait_or_are_told_who_holds_it(tmp_path):
    path = small(tmp_path)
    with Store.open(path, wait=0.0) as first, Store.open(path, wait=0.0) as second:
        assert not first.run_growing(1)
        with first.run_lease(1, describe="an embedding of corpus 'c'"):
            assert second.run_growing(1)
            busy = r"database busy: run 1 is being embedded by process \d+ \(an emb"
            with pytest.raises(SaeembedError, match=busy), second.run_lease(1, describe="a second one"):
                pass
            with second.run_lease(2, describe="another run"):  # other runs are free
                pass
        assert not second.run_growing(1)
        with second.run_lease(1, describe="now free"):
            pass


def test_a_shard_writer_publishes_whole_shards_when_due_and_what_it_holds_when_flushed(tmp_path):
    path = small(tmp_path)
    with Store.open(path) as store:
        run, doc_ids = synthetic_corpus(store, "d", [f"t{i}" for i in range(5)], sae_id=1)
        writer = ShardWriter(store.shards, run, max_docs=4, max_rows=100, max_seconds=3600)
        ids = [int(d) for d in doc_ids]
        writer.add(documents(ids[:2], [1, 1]), features([(ids[0], 3), (ids[1], 4)]))
        assert store.query("SELECT count(*) AS n FROM embedded_documents WHERE run_id = $r", {"r": run})["n"][0] == 0
        writer.add(documents(ids[2:4], [1, 0]), features([(ids[2], 3)]))  # 4 documents: published
        shards = sorted(p.name for p in (store.shards / f"run_id={run}").iterdir())
        assert len(shards) == 1
        writer.add(documents(ids[4:], [2]), features([(ids[4], 9), (ids[4], 1)]))
        writer.flush()
        rows = store.query(
            "SELECT doc_id, feature_id FROM doc_features WHERE run_id = $r ORDER BY doc_id, feature_id", {"r": run}
        ).rows()
        assert rows == [(ids[0], 3), (ids[1], 4), (ids[2], 3), (ids[4], 1), (ids[4], 9)]
        assert store.check() == []
        assert list((store.shards / ".staging").iterdir()) == []


def test_an_older_database_has_its_rows_moved_into_shards_when_opened_for_writing(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE embedded_documents (run_id INTEGER, doc_id BIGINT, n_tokens INTEGER, "
        "n_tokens_total INTEGER, truncated BOOLEAN, n_features INTEGER)"
    )
    con.execute(
        "CREATE TABLE doc_features (run_id INTEGER, doc_id BIGINT, feature_id INTEGER, max_act FLOAT, "
        "mean_act FLOAT, n_active_tokens INTEGER, argmax_pos INTEGER)"
    )
    con.execute(
        "INSERT INTO embedded_documents VALUES (1, 1, 5, 5, false, 2), (1, 2, 4, 9, true, 1), (2, 1, 5, 5, false, 0)"
    )
    con.execute("INSERT INTO doc_features VALUES (1, 1, 7, 2.5, 0.5, 1, 3), (1, 1, 3, 1.0, 0.2, 2, 0)")
    con.execute("INSERT INTO doc_features VALUES (1, 2, 7, 0.5, 0.1, 1, 1)")
    con.close()
    with Store.open(path, read_only=True) as store:  # read-only: its own tables, as they are
        assert store.query("SELECT count(*) AS n FROM doc_features")["n"][0] == 3
    with Store.open(path) as store:
        rows = store.query("SELECT * FROM doc_features ORDER BY run_id, doc_id, feature_id").rows()
        docs = store.query("SELECT * FROM embedded_documents ORDER BY run_id, doc_id").rows()
        tables = store.query("SELECT table_name FROM duckdb_tables() WHERE table_name IN ('doc_features')").height
    half = 2**-11  # moved into today's layout: activations in half precision
    assert rows == [
        (1, 1, 3, 1.0, pytest.approx(0.2, rel=half), 2, 0),
        (1, 1, 7, 2.5, 0.5, 1, 3),
        (1, 2, 7, 0.5, pytest.approx(0.1, rel=half), 1, 1),
    ]
    assert docs == [(1, 1, 5, 5, False, 2), (1, 2, 4, 9, True, 1), (2, 1, 5, 5, False, 0)]
    assert tables == 0 and (tmp_path / "old.duckdb.shards" / "run_id=1" / "moved" / "features.parquet").exists()


def test_a_copied_database_reads_its_own_shards(tmp_path):
    path = small(tmp_path)
    copy = copy_database(path, tmp_path / "copy.duckdb")
    shutil.rmtree(tmp_path / "s.duckdb.shards")
    path.unlink()
    with Store.open(copy, read_only=True) as store:
        assert store.query("SELECT count(*) AS n FROM doc_features")["n"][0] == 3
        assert store.check() == []


def test_saeembed_sql_reads_the_shards_and_refuses_to_write_or_reach_other_files(tmp_path):
    path = small(tmp_path)
    table = run_query(path, "SELECT feature_id, count(*) AS n FROM doc_features GROUP BY ALL ORDER BY feature_id")
    assert table.to_pylist() == [{"feature_id": 1, "n": 1}, {"feature_id": 2, "n": 2}]
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    for query, message in [
        ("DELETE FROM documents", "only reads: DELETE is refused"),
        (f"COPY (SELECT 1) TO '{tmp_path}/s.duckdb.shards/x.csv'", "only reads: COPY is refused"),
        (f"SELECT * FROM read_csv('{secret}')", "file system operations are disabled"),
        (f"ATTACH '{tmp_path}/other.duckdb' AS other", "only reads: ATTACH is refused"),
        ("SELECT 1; SELECT 2", "one SQL statement at a time, not 2"),
        ("SELECT * FROM nowhere", "the query failed: Catalog Error"),
        ("SET enable_external_access = true", "only reads"),
    ]:
        with pytest.raises(SaeembedError, match=message):
            run_query(path, query)
    assert not (tmp_path / "s.duckdb.shards" / "x.csv").exists() and not (tmp_path / "other.duckdb").exists()


def test_rows_written_by_the_synthetic_builder_match_what_was_asked(tmp_path):
    with Store.open(tmp_path / "b.duckdb") as store:
        run, doc_ids = synthetic_corpus(store, "c", ["a", "b"], [{"x": 1}, {"x": 2}], sae_id=synthetic_sae(store, 8))
        write_concept_lists(store, run, doc_ids, [{3: 1.5, 1: 2.0}, {}], peak={3: 4})
        rows = store.query("SELECT doc_id, feature_id, max_act, argmax_pos FROM doc_features ORDER BY ALL").rows()
        meta = store.query("SELECT meta FROM documents ORDER BY doc_id")["meta"].to_list()
    first = int(doc_ids[0])
    assert rows == [(first, 1, 2.0, 1), (first, 3, 1.5, 4)]
    assert [json.loads(m) for m in meta] == [{"x": 1}, {"x": 2}]
    assert np.asarray(doc_ids).tolist() == [first, first + 1]


def test_activations_are_stored_in_half_precision_unless_one_is_beyond_its_range(tmp_path):
    with Store.open(tmp_path / "h.duckdb") as store:
        run, doc_ids = synthetic_corpus(store, "c", ["a", "b"], [{}, {}], sae_id=synthetic_sae(store, 8))
        write_concept_lists(store, run, doc_ids[:1], [{1: 1.2345678, 2: 3e-5}], mean_share=0.1)
        write_concept_lists(store, run, doc_ids[1:], [{1: 70000.5}], mean_share=0.1)
        rows = store.query("SELECT feature_id, max_act, mean_act, typeof(max_act) AS t FROM doc_features ORDER BY ALL")
        files = sorted(store.shards.rglob("features.parquet"), key=lambda path: path.stat().st_mtime_ns)
    stored = [pq.read_schema(path).field("max_act").type for path in files if pq.read_metadata(path).num_rows]
    assert stored == [pa.float16(), pa.float32()]
    assert rows["t"].unique().to_list() == ["FLOAT"]
    by_concept = {(f, round(a, 1)): (a, m) for f, a, m in rows.select("feature_id", "max_act", "mean_act").rows()}
    half, tiny, large = by_concept[(1, 1.2)], by_concept[(2, 0.0)], by_concept[(1, 70000.5)]
    assert half[0] != 1.2345678 and abs(half[0] - 1.2345678) / 1.2345678 < 2**-11
    assert abs(tiny[0] - 3e-5) / 3e-5 < 0.01  # a subnormal half still holds it to 1%
    assert large == (
        70000.5,
        float(np.float32(70000.5) * np.float32(0.1)),
    )  # beyond half precision's range: the shard keeps float32
