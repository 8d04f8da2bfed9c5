"""What bf16 does to which concepts fire, against fp32, on the same documents, in one run.

    python benchmarks/dtype_effect.py [--docs 300] [--products-only]

First times one SAE-encoder-sized product ([256, 576] × [576, 8192]) in float32 and in bfloat16 on this
CPU, and says whether oneDNN computes bf16 natively here (what `--dtype auto` goes by on the CPU).
Embeds the same demo documents with the default reader + SAE in float32 and in bfloat16 (autocast on
CPU) and prints the speed ratio and how far the concept vectors agree: Jaccard overlap of the present
concepts per document, agreement of each document's top-10 concepts, and the correlation of max_act
on concepts present in both.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from saeembed.jobs import embed, ingest
from saeembed.model.reader import cpu_has_fast_bfloat16
from saeembed.storage.corpora import demo_corpus
from saeembed.storage.store import Store


def product_seconds(dtype: torch.dtype) -> float:
    """Best of 3 (after a warm-up) for one [256, 576] × [576, 8192] product in `dtype` on the CPU."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(256, 576, generator=generator).to(dtype)
    w = torch.randn(576, 8192, generator=generator).to(dtype)
    x @ w
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        x @ w
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--products-only", action="store_true", help="Only the product timing.")
    args = parser.parse_args()
    fp32, bf16 = product_seconds(torch.float32), product_seconds(torch.bfloat16)
    print(f"CPU capability                     {torch.backends.cpu.get_cpu_capability()}")
    print(
        f"native bf16 (oneDNN)               {cpu_has_fast_bfloat16()} (--dtype auto: "
        f"{'bfloat16' if cpu_has_fast_bfloat16() else 'float32'})"
    )
    print(f"[256,576]x[576,8192] fp32 / bf16   {fp32 * 1000:,.1f} ms / {bf16 * 1000:,.1f} ms ({bf16 / fp32:,.1f}x)")
    if args.products_only:
        return
    corpus = demo_corpus(n=args.docs, seed=2)
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "docs.parquet"
        corpus.write_parquet(source)
        with Store.open(Path(folder) / "dtype.duckdb") as store:
            ingest(store, source, corpus="dtype")
            summaries = {dtype: embed(store, "dtype", device="cpu", dtype=dtype) for dtype in ("float32", "bfloat16")}
            vectors = store.query(
                "SELECT r.dtype, f.doc_id, f.feature_id, f.max_act FROM doc_features f JOIN embed_runs r USING (run_id)"
            )
    fp32 = vectors.filter(pl.col("dtype") == "float32").drop("dtype")
    bf16 = vectors.filter(pl.col("dtype") == "bfloat16").drop("dtype")
    both = fp32.join(bf16, on=["doc_id", "feature_id"], how="inner", suffix="_bf16")
    union = fp32.join(bf16, on=["doc_id", "feature_id"], how="full", coalesce=True)
    per_doc = (
        union.group_by("doc_id")
        .len("union")
        .join(both.group_by("doc_id").len("shared"), on="doc_id", how="left")
        .fill_null(0)
    )
    jaccard = (per_doc["shared"] / per_doc["union"]).to_numpy()

    def top10(frame: pl.DataFrame) -> dict[int, set[int]]:
        ranked = frame.sort("max_act", descending=True).group_by("doc_id").head(10)
        return {d: set(f) for d, f in ranked.group_by("doc_id").agg("feature_id").iter_rows()}

    top_fp32, top_bf16 = top10(fp32), top10(bf16)
    top_overlap = np.mean([len(top_fp32[d] & top_bf16.get(d, set())) / 10 for d in top_fp32])
    correlation = np.corrcoef(both["max_act"].to_numpy(), both["max_act_bf16"].to_numpy())[0, 1]
    speed = summaries["bfloat16"].tokens_per_second / summaries["float32"].tokens_per_second
    print(f"documents                          {args.docs}")
    print(f"float32 pipeline                   {summaries['float32'].tokens_per_second:,.0f} tok/s")
    print(f"bfloat16 pipeline                  {summaries['bfloat16'].tokens_per_second:,.0f} tok/s")
    print(f"bf16 / fp32 speed                  {speed:.2f}x")
    print(f"concepts per doc fp32 / bf16       {fp32.height / args.docs:.1f} / {bf16.height / args.docs:.1f}")
    print(
        f"Jaccard of present concepts        mean {jaccard.mean():.3f}, 5th percentile {np.quantile(jaccard, 0.05):.3f}"
    )
    print(f"top-10 concepts shared             {top_overlap:.3f}")
    print(f"max_act correlation (shared)       {correlation:.4f}")


if __name__ == "__main__":
    main()
