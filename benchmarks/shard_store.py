"""Where concept rows live: rows in the DuckDB file (the layout before shards) against Parquet shards
beside it (today's), measured side by side in one run.

    python benchmarks/shard_store.py [--docs 100000] [--per-doc 100] [--shard-docs 1024] [--reads 40]
                                     [--only readers|reading]

1. Readers during a long write. A writer process embeds (emulated: it publishes a shard of synthetic
   rows every 50 ms and records an analysis every 10 shards) for as long as the readers run; a reader
   process opens the database, counts `doc_features` and closes it, `--reads` times, giving up after 2 s.
   In the old layout the writer holds the DuckDB file for its whole run (as `saeembed embed` did), so a
   reader could only wait for the end. Printed: reads answered within 2 s, p50 / p95 / max seconds.
2. Reading. The same synthetic rows (`--docs` × about `--per-doc` concepts of 16,384, Zipf-like), as a
   DuckDB table and as shards of `--shard-docs` documents: bytes per document and the queries the
   analyses run, alternately, best of 3.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np

from saeembed.storage.store import Store
from saeembed.storage.synthetic import distinct_draws, synthetic_corpus, synthetic_sae, write_concepts

CONCEPTS = 16_384

WRITER = """
import sys, time
import numpy as np
from saeembed.storage.store import Store
from saeembed.storage.synthetic import distinct_draws, write_concepts
db, layout, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
rng = np.random.default_rng(1)
with Store.open(db) as store:
    run = store.latest_run("syn").run_id
    doc_ids = store.query("SELECT doc_id FROM documents ORDER BY doc_id")["doc_id"].to_numpy()
    hold = store.writing() if layout == "table" else None  # the old layout: the file held for the run
    if hold is not None:
        hold.__enter__()
    print("writing", flush=True)
    end, shard = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        ids = doc_ids[(shard * 32) % len(doc_ids):][:32]
        drawn = np.floor(16384 * rng.random((len(ids), 100)) ** 2.5).astype(np.int32)
        present = distinct_draws(drawn)
        if layout == "shards":
            write_concepts(store, run, ids, present.sum(axis=1), drawn[present], np.ones(int(present.sum())))
        shard += 1
        if shard % 10 == 0:
            store.record_analysis("bench", {}, {}, 0.0)
        time.sleep(0.05)
    if hold is not None:
        hold.__exit__(None, None, None)
"""

READER = """
import json, sys, time
from saeembed.errors import SaeembedError
from saeembed.storage.store import Store
db, reads = sys.argv[1], int(sys.argv[2])
seconds, failed = [], 0
for _ in range(reads):
    started = time.perf_counter()
    try:
        with Store.open(db, read_only=True, wait=2.0) as store:  # a reader gives up after 2 s
            store.query("SELECT count(*) FROM doc_features")
        seconds.append(time.perf_counter() - started)
    except SaeembedError:
        failed += 1
    time.sleep(0.05)
print(json.dumps({"seconds": seconds, "failed": failed}))
"""

QUERIES = {
    "concept frequency (GROUP BY concept)": (
        "SELECT feature_id, count(*) FROM doc_features WHERE run_id = 1 GROUP BY ALL"
    ),
    "one document's concepts": "SELECT feature_id, max_act FROM doc_features WHERE run_id = 1 AND doc_id = 4242",
    "top 20 documents of a concept": (
        "SELECT doc_id, max_act FROM doc_features WHERE run_id = 1 AND feature_id = 77 ORDER BY max_act DESC LIMIT 20"
    ),
    "documents per run (embedded_documents)": "SELECT count(*) FROM embedded_documents WHERE run_id = 1",
}


def build(path: Path, docs: int, per_doc: int, shard_docs: int) -> None:
    """A store of `docs` synthetic documents in shards of `shard_docs`."""
    rng = np.random.default_rng(0)
    with Store.open(path) as store:
        texts = [f"document {i}" for i in range(docs)]
        run, doc_ids = synthetic_corpus(store, "syn", texts, sae_id=synthetic_sae(store, CONCEPTS))
        for start in range(0, docs, shard_docs):
            ids = doc_ids[start : start + shard_docs]
            drawn = np.floor(CONCEPTS * rng.random((len(ids), per_doc)) ** 2.5).astype(np.int32)
            present = distinct_draws(drawn)
            total = int(present.sum())
            write_concepts(
                store,
                run,
                ids,
                present.sum(axis=1),
                drawn[present],
                rng.random(total, dtype=np.float32) + 0.5,
                argmax_pos=rng.integers(0, 50, total, dtype=np.int32),
            )


def as_table(source: Path, target: Path) -> None:
    """The same rows as tables of a plain DuckDB file (the layout before shards)."""
    with Store.open(source, read_only=True) as store, store.reading():
        features = store.query("SELECT * FROM doc_features").to_arrow()
        documents = store.query("SELECT * FROM embedded_documents").to_arrow()
    con = duckdb.connect(str(target))
    con.register("features", features)
    con.register("documents", documents)
    con.execute("CREATE TABLE doc_features AS SELECT * FROM features ORDER BY run_id, doc_id, feature_id")
    con.execute("CREATE TABLE embedded_documents AS SELECT * FROM documents ORDER BY run_id, doc_id")
    con.close()


def readers_during_a_write(folder: Path, docs: int, reads: int) -> None:
    print(f"\n1. {reads} reads (open, count doc_features, close) while a writer embeds")
    for layout in ("table", "shards"):
        db = folder / f"live-{layout}.duckdb"
        build(db, min(docs, 2_000), 20, 256)
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db), layout, "3600"], stdout=subprocess.PIPE, text=True
        )
        assert writer.stdout.readline().strip() == "writing"
        result = subprocess.run([sys.executable, "-c", READER, str(db), str(reads)], capture_output=True, text=True)
        writer.kill()
        writer.wait()
        seconds = json.loads(result.stdout)
        answered = np.asarray(seconds["seconds"])
        name = "rows in the DuckDB file, held by the writer" if layout == "table" else "shards (today)"
        line = f"  {name:<46} answered {len(answered):>3} of {reads}"
        if len(answered):
            p50, p95 = np.percentile(answered, 50), np.percentile(answered, 95)
            line += f"   p50 {p50:.3f} s   p95 {p95:.3f} s   max {answered.max():.3f} s"
        print(line)


def reading(folder: Path, docs: int, per_doc: int, shard_docs: int) -> None:
    shards_db, table_db = folder / "shards.duckdb", folder / "table.duckdb"
    build(shards_db, docs, per_doc, shard_docs)
    as_table(shards_db, table_db)
    with Store.open(shards_db, read_only=True) as store:
        rows = store.query("SELECT count(*) AS n FROM doc_features")["n"][0]
        files = len(list(store.shards.glob("run_id=*/*/features.parquet"))) - 1
    shard_bytes = sum(f.stat().st_size for f in (folder / "shards.duckdb.shards").rglob("*.parquet"))
    print(f"\n2. {docs:,} documents, {rows:,} concept rows ({rows / docs:.0f} per document), {files} shards")
    print(
        f"  bytes per document: DuckDB table {table_db.stat().st_size / docs:,.0f}   "
        f"shards {shard_bytes / docs:,.0f} (+ the catalog file {shards_db.stat().st_size / docs:,.0f})"
    )
    table = duckdb.connect(str(table_db), read_only=True)
    with Store.open(shards_db, read_only=True) as store, store.reading():
        print(f"  {'query':<42} {'table':>9} {'shards':>9} {'shards/table':>13}")
        for name, sql in QUERIES.items():
            best = {"table": float("inf"), "shards": float("inf")}
            for _ in range(3):
                for layout, run in (("table", lambda q: table.execute(q).fetchall()), ("shards", store.query)):
                    started = time.perf_counter()
                    run(sql)
                    best[layout] = min(best[layout], time.perf_counter() - started)
            ratio = best["shards"] / best["table"]
            print(f"  {name:<42} {best['table'] * 1000:7.1f} ms {best['shards'] * 1000:7.1f} ms {ratio:12.2f}x")
    table.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--per-doc", type=int, default=100)
    parser.add_argument("--shard-docs", type=int, default=1024)
    parser.add_argument("--reads", type=int, default=40)
    parser.add_argument("--only", choices=["readers", "reading"], default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        if args.only in (None, "readers"):
            readers_during_a_write(Path(folder), args.docs, args.reads)
        if args.only in (None, "reading"):
            reading(Path(folder), args.docs, args.per_doc, args.shard_docs)


if __name__ == "__main__":
    main()
