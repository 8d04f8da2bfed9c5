"""Storage layout for concept vectors: long rows vs one row of lists per document, measured side by side.

    python benchmarks/storage_layout.py [--docs 100000] [--concepts 8192] [--per-doc 300]

Writes the same synthetic vectors (Zipf-like concept popularity, like real SAE codes) both ways into
fresh DuckDB files and prints bytes per document and the time of the queries the analyses run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

LONG = """CREATE TABLE doc_features (run_id INTEGER, doc_id BIGINT, feature_id INTEGER, max_act FLOAT,
          mean_act FLOAT, n_active_tokens INTEGER, argmax_pos INTEGER)"""
LISTS = """CREATE TABLE doc_vectors (run_id INTEGER, doc_id BIGINT, feature_ids INTEGER[], max_acts FLOAT[],
           mean_acts FLOAT[], n_active_tokens INTEGER[], argmax_pos INTEGER[])"""

QUERIES = {
    "concept frequency (GROUP BY concept)": (
        "SELECT feature_id, count(*) FROM doc_features WHERE run_id = 1 GROUP BY feature_id",
        "SELECT f, count(*) FROM (SELECT unnest(feature_ids) AS f FROM doc_vectors WHERE run_id = 1) GROUP BY f",
    ),
    "one document's concepts": (
        "SELECT feature_id, max_act FROM doc_features WHERE doc_id = 4242 ORDER BY max_act DESC",
        "SELECT unnest(feature_ids), unnest(max_acts) FROM doc_vectors WHERE doc_id = 4242",
    ),
    "documents with one concept": (
        "SELECT doc_id FROM doc_features WHERE feature_id = 77",
        "SELECT doc_id FROM doc_vectors WHERE list_contains(feature_ids, 77)",
    ),
    "top 20 documents of a concept": (
        "SELECT doc_id, max_act FROM doc_features WHERE feature_id = 77 ORDER BY max_act DESC LIMIT 20",
        "SELECT doc_id, max_acts[list_position(feature_ids, 77)] AS a FROM doc_vectors "
        "WHERE list_contains(feature_ids, 77) ORDER BY a DESC LIMIT 20",
    ),
}


def synthetic(docs: int, concepts: int, per_doc: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, concepts + 1) ** 0.8
    popularity /= popularity.sum()
    doc_ids, feature_ids = [], []
    for doc in range(docs):
        chosen = np.unique(rng.choice(concepts, size=per_doc, p=popularity))
        doc_ids.append(np.full(chosen.size, doc))
        feature_ids.append(chosen)
    doc_id = np.concatenate(doc_ids)
    n = doc_id.size
    return pa.table(
        {
            "run_id": np.ones(n, dtype=np.int32),
            "doc_id": doc_id.astype(np.int64),
            "feature_id": np.concatenate(feature_ids).astype(np.int32),
            "max_act": rng.gamma(2.0, 1.5, n).astype(np.float32),
            "mean_act": rng.gamma(1.0, 0.1, n).astype(np.float32),
            "n_active_tokens": rng.integers(1, 20, n).astype(np.int32),
            "argmax_pos": rng.integers(0, 128, n).astype(np.int32),
        }
    )


def timed(con: duckdb.DuckDBPyConnection, sql: str, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        con.execute(sql).fetchall()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--concepts", type=int, default=8192)
    parser.add_argument("--per-doc", type=int, default=300)
    args = parser.parse_args()
    rows = synthetic(args.docs, args.concepts, args.per_doc)
    print(f"{args.docs:,} documents, {rows.num_rows / args.docs:.0f} concepts per document on average")
    with tempfile.TemporaryDirectory() as folder:
        long_con = duckdb.connect(str(Path(folder) / "long.duckdb"))
        long_con.execute(LONG)
        long_con.register("rows", rows)
        long_con.execute("INSERT INTO doc_features SELECT * FROM rows ORDER BY doc_id, feature_id")
        long_con.execute("CHECKPOINT")
        list_con = duckdb.connect(str(Path(folder) / "lists.duckdb"))
        list_con.execute(LISTS)
        list_con.register("rows", rows)
        list_con.execute(
            "INSERT INTO doc_vectors SELECT any_value(run_id), doc_id, list(feature_id ORDER BY feature_id), "
            "list(max_act ORDER BY feature_id), list(mean_act ORDER BY feature_id), "
            "list(n_active_tokens ORDER BY feature_id), list(argmax_pos ORDER BY feature_id) "
            "FROM rows GROUP BY doc_id ORDER BY doc_id"
        )
        list_con.execute("CHECKPOINT")
        long_bytes = (Path(folder) / "long.duckdb").stat().st_size
        list_bytes = (Path(folder) / "lists.duckdb").stat().st_size
        print(f"{'':40s} {'long rows':>12s} {'list per doc':>14s} {'long/list':>10s}")
        print(
            f"{'bytes per document':40s} {long_bytes / args.docs:12,.0f} {list_bytes / args.docs:14,.0f} "
            f"{long_bytes / list_bytes:10.2f}"
        )
        for name, (long_sql, list_sql) in QUERIES.items():
            long_s, list_s = timed(long_con, long_sql), timed(list_con, list_sql)
            print(f"{name + ' (ms)':40s} {long_s * 1e3:12.1f} {list_s * 1e3:14.1f} {long_s / list_s:10.2f}")


if __name__ == "__main__":
    main()
