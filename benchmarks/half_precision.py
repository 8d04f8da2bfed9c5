"""What half-precision activations in the shards change: bytes a row, and the diff, search and NPMI results
against float32, on the same embedded documents, in one run.

    python benchmarks/half_precision.py [--docs 800]

Embeds a balanced sample of the demo corpus (AG News) once, keeping float32 activations (the layout before
half precision: `compact_activations` is bypassed for this store only), copies the database and rewrites
each shard of the copy the way the store writes it now (`compact_activations`). Each store computes its
own p90s. Printed: bytes a concept row and per column; the largest relative error of max_act; the
rows the diff's presence rule counts differently; and, side by side, the top of a diff
(Sports against the rest), of SAE property search for four queries and of the NPMI pairs of `correlate`:
how many of the top entries agree and the largest change of the statistic they are ranked by.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from saeembed.analysis.correlate import correlate_pairs
from saeembed.analysis.diff import diff
from saeembed.analysis.retrieve import search_documents
from saeembed.jobs import embed, ingest
from saeembed.storage import shards
from saeembed.storage.corpora import demo_corpus
from saeembed.storage.percentiles import presence_thresholds
from saeembed.storage.store import Store

QUERIES = ("sports", "stock markets and company earnings", "space and computer science", "war and elections")
SPORTS = "meta->>'topic' = 'Sports'"


def keep_float32(features):
    """The layout before half precision: activations stay float32 (byte-stream-split before zstd)."""
    return features, shards.FLOAT32_ENCODING


def rewrite_half(root: Path) -> None:
    """Every features.parquet under `root` rewritten as the store writes it now."""
    for path in root.rglob("features.parquet"):
        shards.write_features(pq.read_table(path), path)


def present_rows(store: Store) -> pl.DataFrame:
    """doc_id, feature_id of the rows the diff's rule counts as present."""
    run = store.latest_run("news")
    thresholds = presence_thresholds(store, run.run_id, run.run_id, 0.5)
    rows = store.query("SELECT doc_id, feature_id, max_act FROM doc_features WHERE run_id = ?", [run.run_id])
    return (
        rows.join(thresholds, on="feature_id")
        .filter(pl.col("max_act") >= pl.col("min_act"))
        .select("doc_id", "feature_id")
    )


def agreement(name: str, first: list, second: list, values: tuple[dict, dict], top: int) -> None:
    shared = len(set(first[:top]) & set(second[:top]))
    common = set(values[0]) & set(values[1])
    change = max((abs(values[0][key] - values[1][key]) for key in common), default=0.0)
    same = "same order" if first[:top] == second[:top] else "order differs"
    print(f"{name:<44} top {top}: {shared}/{top} shared, {same}; largest change {change:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=800)
    args = parser.parse_args()
    corpus = demo_corpus(args.docs)
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        corpus.write_parquet(folder / "docs.parquet")
        exact, half = folder / "float32.duckdb", folder / "float16.duckdb"
        with Store.open(exact) as store, mock.patch.object(shards, "compact_activations", keep_float32):
            ingest(store, folder / "docs.parquet", corpus="news")
            embed(store, "news", device="cpu", dtype="float32")
        shutil.copy(exact, half)
        shutil.copytree(f"{exact}.shards", f"{half}.shards")
        rewrite_half(Path(f"{half}.shards"))

        results = {}
        for path in (exact, half):
            with Store.open(path) as store:
                store.execute("concept_percentiles_forget")
                rows = store.query("SELECT doc_id, feature_id, max_act FROM doc_features ORDER BY 1, 2")
                found = diff(store, "news", "news", where_a=SPORTS, where_b=f"NOT ({SPORTS})").table
                searches = [search_documents(store, query, corpus="news", top=20).documents for query in QUERIES]
                pairs = correlate_pairs(store, "news").pairs
                results[path] = rows, present_rows(store), found, searches, pairs
            results[path] += (shards.column_bytes(Path(f"{path}.shards")),)

    (rows32, present32, diff32, search32, pairs32, bytes32) = results[exact]
    (rows16, present16, diff16, search16, pairs16, bytes16) = results[half]
    n = rows32.height
    print(f"documents {args.docs}, concept rows {n:,} ({n / args.docs:,.0f} per document)")
    print(f"{'column':<16}{'float32 B/row':>14}{'float16 B/row':>14}")
    for column in shards.FEATURES_SCHEMA.names:
        print(f"{column:<16}{bytes32[column] / n:>14.2f}{bytes16[column] / n:>14.2f}")
    print(f"{'all':<16}{sum(bytes32.values()) / n:>14.2f}{sum(bytes16.values()) / n:>14.2f}")
    read = ("doc_id", "feature_id", "max_act")
    read32, read16 = (sum(sizes[column] for column in read) / n for sizes in (bytes32, bytes16))
    print(f"{'read by default':<16}{read32:>14.2f}{read16:>14.2f}")
    print("(diff, search and NPMI read doc_id, feature_id and max_act)")
    exact_act, half_act = rows32["max_act"].to_numpy(), rows16["max_act"].to_numpy()
    print(f"largest relative error of max_act   {np.max(np.abs(half_act - exact_act) / exact_act):.2e}")
    flipped = present32.join(present16, on=["doc_id", "feature_id"], how="anti").height
    flipped += present16.join(present32, on=["doc_id", "feature_id"], how="anti").height
    share = flipped / present32.height
    print(f"present rows (diff's rule) that flip   {flipped} of {present32.height:,} ({share:.3%})")
    print()

    def keyed(table: pl.DataFrame, key: list[str], value: str) -> tuple[list, dict]:
        keys = [tuple(row) for row in table.select(key).rows()]
        return keys, dict(zip(keys, table[value].to_list(), strict=True))

    first, values_a = keyed(diff32, ["grp", "feature_id"], "delta")
    second, values_b = keyed(diff16, ["grp", "feature_id"], "delta")
    agreement("diff, Sports vs the rest (delta)", first, second, (values_a, values_b), 20)
    for query, exact_docs, half_docs in zip(QUERIES, search32, search16, strict=True):
        first, values_a = keyed(exact_docs, ["doc_id"], "score")
        second, values_b = keyed(half_docs, ["doc_id"], "score")
        agreement(f"search '{query}' (score)", first, second, (values_a, values_b), 20)
    first, values_a = keyed(pairs32, ["feature_a", "feature_b"], "npmi")
    second, values_b = keyed(pairs16, ["feature_a", "feature_b"], "npmi")
    agreement("correlate, NPMI pairs (npmi)", first, second, (values_a, values_b), min(20, len(first)))


if __name__ == "__main__":
    main()
