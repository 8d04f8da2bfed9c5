"""How fast are diff and correlation mining on a large store, and against a dense-matrix implementation?

    python benchmarks/analysis_speed.py [--docs 1000000] [--concepts 16384] [--per-doc 100]
                                        [--dense-docs 20000] [--only correlate|diff|all] [--seed 0]

Builds a synthetic store (DuckDB file in a temporary folder): `--docs` documents × `--concepts` concepts
with about `--per-doc` present per document, concept ids drawn with a power-law (Zipf-like) frequency —
a few concepts in most documents, most in few, as in real SAEs — plus one planted pair of rare concepts
that always occur together (in 0.1% of documents). Then times, on the same store:

- `diff` of two halves (meta side = 'a' / 'b') of all documents (target: < 5 s at 1,000,000): once with
  each concept's p90 (for the presence threshold) still to compute — this store is not made by an embed
  run, which would have kept them — then with them kept, and with --presence-threshold 0;
- `correlate_pairs` (NPMI) on all documents (target: < 60 s at 1,000,000), and whether the planted pair
  comes first;
- bytes per document on disk (database and shards), and of the columns diff and NPMI read;
- both against the reference toolkit's way — a dense documents × concepts matrix in memory, frequencies
  as column means and co-occurrence as XᵀX — at `--dense-docs` documents, where that matrix fits.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from saeembed.analysis.correlate import correlate_pairs, npmi
from saeembed.analysis.diff import diff
from saeembed.storage.shards import column_bytes
from saeembed.storage.store import Store
from saeembed.storage.synthetic import distinct_draws, synthetic_corpus, synthetic_sae, write_concepts

BATCH_DOCS = 100_000
PLANTED_SHARE = 0.001


def build(path: Path, docs: int, concepts: int, per_doc: int, seed: int) -> int:
    """Fill a store with `docs` documents in corpus 'syn' (doc_id 1…docs); returns the number of concept rows.

    Concept rows are drawn in numpy and written through Arrow in batches of documents, sorted by document
    as the embedding pipeline writes them. `concepts × u^2.5` for uniform u puts most draws on low ids
    (frequency ∝ id^-0.6); draws that repeat within a document collapse into one row. The last two
    concepts are planted: both present in the same PLANTED_SHARE of documents and nowhere else."""
    rng = np.random.default_rng(seed)
    planted = (concepts - 2, concepts - 1)
    with Store.open(path) as store:
        texts = [f"document {i}" for i in range(docs)]
        metas = [{"side": "a" if i % 2 == 0 else "b"} for i in range(docs)]
        run, doc_ids = synthetic_corpus(store, "syn", texts, metas, sae_id=synthetic_sae(store, concepts))
        rows = 0
        for start in range(0, docs, BATCH_DOCS):
            n = min(BATCH_DOCS, docs - start)
            drawn = np.minimum(concepts - 3, np.floor(concepts * rng.random((n, per_doc)) ** 2.5)).astype(np.int32)
            drawn[rng.random(n) < PLANTED_SHARE, :2] = planted
            present = distinct_draws(drawn)
            total = int(present.sum())
            rows += write_concepts(
                store,
                run,
                doc_ids[start : start + n],
                present.sum(axis=1),
                drawn[present],
                rng.random(total, dtype=np.float32) + 0.5,
                mean_act=0.1,
                argmax_pos=rng.integers(0, 50, total, dtype=np.int32),
                n_tokens=50,
            )
        return rows


def timed(label: str, call: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    value = call()
    seconds = time.perf_counter() - started
    print(f"  {label:<62} {seconds:8.2f} s")
    return seconds, value


def dense_matrix(store: Store, docs: int, concepts: int) -> tuple[np.ndarray, float]:
    """The first `docs` documents as a dense float32 documents × concepts 0/1 matrix, and the seconds it took."""
    started = time.perf_counter()
    rows = store.query("SELECT doc_id, feature_id FROM doc_features WHERE doc_id <= $n", {"n": docs})
    matrix = np.zeros((docs, concepts), dtype=np.float32)
    matrix[rows["doc_id"].to_numpy() - 1, rows["feature_id"].to_numpy()] = 1.0
    return matrix, time.perf_counter() - started


def dense_npmi_pairs(matrix: np.ndarray, min_npmi: float = 0.6, min_count: int = 5) -> int:
    """The reference toolkit's way: XᵀX of the dense matrix, NPMI of every pair; returns the pairs kept."""
    counts = matrix.T @ matrix
    present = np.diag(counts).copy()
    a, b = np.nonzero(np.triu(counts >= min_count, k=1))
    return int((npmi(counts[a, b], present[a], present[b], matrix.shape[0]) >= min_npmi).sum())


def time_diff(store: Store, docs: int, dense: tuple[np.ndarray, float] | None) -> None:
    halves = {"where_a": "meta->>'side' = 'a'", "where_b": "meta->>'side' = 'b'"}
    print(f"\ndiff of two halves, {docs:,} documents (target < 5 s at 1,000,000)")
    store.execute("concept_percentiles_forget")
    timed("saeembed diff, the p90s not kept yet (computes them)", lambda: diff(store, "syn", "syn", **halves))
    timed("saeembed diff, the p90s kept (as an embed run leaves them)", lambda: diff(store, "syn", "syn", **halves))
    timed(
        "saeembed diff --presence-threshold 0 (any firing)",
        lambda: diff(store, "syn", "syn", **halves, presence_threshold=0),
    )
    if dense is None:
        return
    matrix, build_seconds = dense
    n = matrix.shape[0]
    print(f"side by side at {n:,} documents, both counting any firing (what the reference computes)")
    ours, _ = timed(
        "saeembed diff --presence-threshold 0",
        lambda: diff(
            store,
            "syn",
            "syn",
            where_a=f"{halves['where_a']} AND doc_id <= {n}",
            where_b=f"{halves['where_b']} AND doc_id <= {n}",
            presence_threshold=0,
        ),
    )
    side_a = np.arange(n) % 2 == 0
    reference, _ = timed(
        "dense: column means per side", lambda: matrix[side_a].mean(axis=0) - matrix[~side_a].mean(axis=0)
    )
    print(f"  speedup over dense (its matrix build included): {(reference + build_seconds) / ours:.1f}×")


def time_correlate(store: Store, docs: int, concepts: int, dense: tuple[np.ndarray, float] | None) -> None:
    """correlate_pairs on every document of the store, then beside the dense reference at its size."""
    print(f"\ncorrelate_pairs (NPMI ≥ 0.6), {docs:,} documents (target < 60 s at 1,000,000)")
    _, result = timed("saeembed correlate", lambda: correlate_pairs(store, "syn"))
    first = result.pairs.head(1).to_dicts()
    planted = bool(first) and (first[0]["feature_a"], first[0]["feature_b"]) in {
        (concepts - 2, concepts - 1),
        (concepts - 1, concepts - 2),
    }
    print(f"  {result.candidates} candidate pairs; the planted pair comes first: {planted}")
    if dense is None:
        return
    matrix, build_seconds = dense
    n = matrix.shape[0]
    print(f"side by side at {n:,} documents")
    ours, result = timed("saeembed correlate", lambda: correlate_pairs(store, "syn", where=f"doc_id <= {n}"))
    reference, kept = timed("dense: XᵀX and NPMI of every pair", lambda: dense_npmi_pairs(matrix))
    print(f"  pairs with NPMI ≥ 0.6 and ≥ 5 documents: saeembed {result.candidates}, dense {kept}")
    print(f"  speedup over dense (its matrix build included): {(reference + build_seconds) / ours:.1f}×")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--concepts", type=int, default=16_384)
    parser.add_argument("--per-doc", type=int, default=100)
    parser.add_argument("--dense-docs", type=int, default=20_000, help="size of the side-by-side run (0: skip)")
    parser.add_argument("--only", choices=["correlate", "diff", "all"], default="all")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "speed.duckdb"
        started = time.perf_counter()
        rows = build(path, args.docs, args.concepts, args.per_doc, args.seed)
        print(
            f"store: {args.docs:,} documents × {args.concepts:,} concepts, {rows:,} concept rows "
            f"({rows / args.docs:.1f} per document), built in {time.perf_counter() - started:.0f} s"
        )
        on_disk = sum(file.stat().st_size for file in Path(folder).rglob("*") if file.is_file())
        read = column_bytes(Path(f"{path}.shards"))
        analysed = sum(read[column] for column in ("doc_id", "feature_id", "max_act"))
        print(
            f"on disk: {on_disk / args.docs / 1024:.2f} KiB per document ({on_disk / rows:.1f} B per concept row); "
            f"what diff and NPMI read (doc_id, feature_id, max_act): {analysed / args.docs / 1024:.2f} KiB per document"
        )
        with Store.open(path) as store:
            dense = None
            if args.dense_docs:
                n = min(args.dense_docs, args.docs)
                dense = dense_matrix(store, n, args.concepts)
                print(
                    f"dense reference matrix: {n:,} × {args.concepts:,} float32 "
                    f"({dense[0].nbytes / 2**30:.1f} GiB), built in {dense[1]:.2f} s"
                )
            if args.only in ("diff", "all"):
                time_diff(store, args.docs, dense)
            if args.only in ("correlate", "all"):
                time_correlate(store, args.docs, args.concepts, dense)


if __name__ == "__main__":
    main()
