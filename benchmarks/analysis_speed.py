"""How fast are diff and correlation mining on a large store, and against a dense-matrix implementation?

    python benchmarks/analysis_speed.py [--docs 1000000] [--concepts 16384] [--per-doc 100]
                                        [--correlate-docs 100000] [--dense-docs 20000]

Builds a synthetic store (DuckDB file in a temporary folder): documents × concepts with about
`--per-doc` present per document, concept ids skewed like real SAE frequencies (a few concepts in most
documents, most in few). Then times, on the same store:

- `diff` of two halves (meta side = 'a' / 'b') of `--docs` documents (target: < 5 s at 1,000,000);
- `correlate_pairs` (NPMI) on the first `--correlate-docs` documents (target: < 60 s at 1,000,000);
- both against the reference toolkit's way — a dense documents × concepts matrix in memory, frequencies
  as column means and co-occurrence as XᵀX — at `--dense-docs` documents, where that matrix fits.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from saeembed.analysis.correlate import correlate_pairs
from saeembed.analysis.diff import diff
from saeembed.store import RunSettings, Store

READER = "HuggingFaceTB/SmolLM2-135M-Instruct"


def build(path: Path, docs: int, concepts: int, per_doc: int, seed: int) -> int:
    """Fill a store with `docs` documents in corpus 'syn'; returns the number of concept rows."""
    with Store.open(path) as store:
        store.con.execute(f"SELECT setseed({seed / 1000})")
        sae = store.register_sae(
            name="synthetic",
            fingerprint="b" * 40,
            path=None,
            config={
                "source_format": "saeembed",
                "arch": "topk",
                "d_in": 4,
                "d_sae": concepts,
                "k": 2,
                "reader_model": READER,
            },
        )
        store.con.execute("INSERT INTO corpora (name) VALUES ('syn')")
        store.con.execute(
            f"""INSERT INTO documents (doc_id, corpus_id, external_id, text, meta, content_hash)
            SELECT range + 1, 1, range::VARCHAR, 'document ' || range,
                   json_object('side', CASE WHEN range % 2 = 0 THEN 'a' ELSE 'b' END), md5(range::VARCHAR)
            FROM range({docs})"""
        )
        run = store.open_run(RunSettings(1, sae, READER, 3, 512, True, "float32"), {})
        store.con.execute(
            f"INSERT INTO embedded_documents SELECT {run}, range + 1, 50, 50, false, 0 FROM range({docs})"
        )
        # random()^2.5 puts most draws on low ids: a long-tailed concept frequency, as in real SAEs.
        store.con.execute(
            f"""INSERT INTO doc_features
            SELECT {run}, doc_id, feature_id, 1.0::FLOAT, 0.1::FLOAT, 1, (hash(doc_id, feature_id) % 50)::INT
            FROM (SELECT DISTINCT d.range + 1 AS doc_id,
                         least({concepts - 1}, floor({concepts} * pow(random(), 2.5)))::INT AS feature_id
                  FROM range({docs}) d, range({per_doc}) k)"""
        )
        return store.query("SELECT count(*) AS n FROM doc_features")["n"][0]


def dense_matrix(store: Store, docs: int, concepts: int) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    rows = store.con.execute(f"SELECT doc_id, feature_id FROM doc_features WHERE doc_id <= {docs}").fetchnumpy()
    matrix = np.zeros((docs, concepts), dtype=np.float32)
    matrix[rows["doc_id"] - 1, rows["feature_id"]] = 1.0
    return matrix, time.perf_counter() - started


def timed(label: str, call: object) -> float:
    started = time.perf_counter()
    call()
    seconds = time.perf_counter() - started
    print(f"  {label:<52} {seconds:8.2f} s")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--concepts", type=int, default=16_384)
    parser.add_argument("--per-doc", type=int, default=100)
    parser.add_argument("--correlate-docs", type=int, default=100_000)
    parser.add_argument("--dense-docs", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "speed.duckdb"
        started = time.perf_counter()
        rows = build(path, args.docs, args.concepts, args.per_doc, args.seed)
        print(
            f"store: {args.docs:,} documents × {args.concepts:,} concepts, {rows:,} concept rows "
            f"({rows / args.docs:.0f} per document), built in {time.perf_counter() - started:.0f} s"
        )
        halves = {"where_a": "meta->>'side' = 'a'", "where_b": "meta->>'side' = 'b'"}
        with Store.open(path) as store:
            print(f"\ndiff of two halves, {args.docs:,} documents (target < 5 s at 1,000,000)")
            timed("saeembed diff", lambda: diff(store, "syn", "syn", **halves))

            print(f"\ncorrelate_pairs (NPMI), first {args.correlate_docs:,} documents (target < 60 s at 1,000,000)")
            subset = f"doc_id <= {args.correlate_docs}"
            timed("saeembed correlate", lambda: correlate_pairs(store, "syn", where=subset))

            n = args.dense_docs
            print(
                f"\nside by side at {n:,} documents (dense matrix {n * args.concepts * 4 / 2**30:.1f} GiB as float32)"
            )
            ours_diff = timed(
                "saeembed diff",
                lambda: diff(
                    store,
                    "syn",
                    "syn",
                    where_a=f"{halves['where_a']} AND doc_id <= {n}",
                    where_b=f"{halves['where_b']} AND doc_id <= {n}",
                ),
            )
            matrix, build_seconds = dense_matrix(store, n, args.concepts)
            side_a = np.arange(n) % 2 == 0
            dense_diff = build_seconds + timed(
                "dense: column means per side",
                lambda: matrix[side_a].mean(axis=0) - matrix[~side_a].mean(axis=0),
            )
            ours_corr = timed("saeembed correlate", lambda: correlate_pairs(store, "syn", where=f"doc_id <= {n}"))
            dense_corr = build_seconds + timed("dense: XᵀX", lambda: matrix.T @ matrix)
            print(f"  dense: building the matrix (added to both dense rows)  {build_seconds:8.2f} s")
            print(f"  speedup: diff {dense_diff / ours_diff:.1f}×, correlate {dense_corr / ours_corr:.1f}×")


if __name__ == "__main__":
    main()
