"""Embedding on 1 and on N Dask workers, side by side in one run: tok/s of each, and whether the rows agree.

    python benchmarks/embed_scaling.py [--docs 600] [--workers 2] [--repeats 2] [--shard-docs 64]

Each measurement embeds the same demo articles into a fresh copy of one ingested database through the
embed flow (`saeembed embed`, in this process): once in this process, once on a local Dask cluster of
`--workers` processes (cluster start and each worker's model load included, as a user pays them),
alternately, `--repeats` times, best of each. On a machine with as many cores as workers, expect little
gain: the point of the Dask path is many GPUs or machines; this checks it costs little and changes nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from saeembed_flows.embed import embed_flow

from saeembed.jobs import ingest
from saeembed.storage.corpora import demo_corpus
from saeembed.storage.store import Store, copy_database


def embed_once(source: Path, folder: Path, name: str, workers: int, shard_docs: int) -> float:
    """tok/s of one embedding of a fresh copy of `source` (wall time)."""
    db = copy_database(source, folder / f"{name}.duckdb")
    started = time.perf_counter()
    summary = embed_flow(corpus="scaling", db=str(db), device="cpu", shard_docs=shard_docs, workers=workers)
    return summary["tokens"] / (time.perf_counter() - started)


def rows(db: Path):
    with Store.open(db, read_only=True) as store:
        return store.query("SELECT * FROM doc_features ORDER BY doc_id, feature_id")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=600)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--shard-docs", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        demo_corpus(n=args.docs, seed=4).write_parquet(folder / "docs.parquet")
        source = folder / "source.duckdb"
        with Store.open(source) as store:
            ingest(store, folder / "docs.parquet", corpus="scaling", id_col="id")
        best = {1: 0.0, args.workers: 0.0}
        for repeat in range(args.repeats):
            for workers in best:
                rate = embed_once(source, folder, f"w{workers}-{repeat}", workers, args.shard_docs)
                best[workers] = max(best[workers], rate)
                print(f"repeat {repeat + 1}: {workers} worker(s) {rate:,.0f} tok/s (wall time, start-up included)")
        same = rows(folder / "w1-0.duckdb").equals(rows(folder / f"w{args.workers}-0.duckdb"))
    print(f"1 worker             {best[1]:,.0f} tok/s (best of {args.repeats})")
    print(f"{args.workers} workers            {best[args.workers]:,.0f} tok/s (best of {args.repeats})")
    print(f"{args.workers} workers / 1        {best[args.workers] / best[1]:.2f}x")
    print(f"rows identical       {same}")


if __name__ == "__main__":
    main()
