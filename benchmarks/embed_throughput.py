"""Embedding throughput: raw reader forward vs the full pipeline, on the same documents, in one run.

    python benchmarks/embed_throughput.py [--docs 600] [--repeats 3] [--device auto] [--dtype auto]

raw forward: the truncated reader alone (same length-sorted batches, same dtype), tokenisation excluded.
pipeline:    `saeembed.jobs.embed` on a fresh DuckDB file — reader, SAE encode, pooling and the
             transactional DuckDB writes (ingest excluded).
Target (issue 2): pipeline ≥ 0.85 × raw forward.

The two are measured alternately, `--repeats` times each, and the best of each is compared (as timeit
does): on a shared 2-core machine the slower runs measure the neighbours, not the code.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from saeembed.jobs import embed, ingest, resolve_sae
from saeembed.model.pooling import EmbedOptions
from saeembed.model.reader import Reader, length_batches
from saeembed.storage.corpora import demo_corpus
from saeembed.storage.store import Store


def raw_forward(reader: Reader, texts: list[str], options: EmbedOptions) -> tuple[int, float]:
    tokenized = reader.tokenize(texts, options.max_tokens)
    prefix = reader.prefix_ids(options.chat_template)
    started = time.perf_counter()
    for batch in length_batches(
        [len(ids) + len(prefix) for ids in tokenized.ids],
        batch_size=options.batch_size,
        max_batch_tokens=options.max_batch_tokens,
    ):
        reader.residuals([tokenized.ids[i] for i in batch], prefix)
    return sum(len(ids) for ids in tokenized.ids), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=600)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    corpus = demo_corpus(n=args.docs, seed=1)
    options = EmbedOptions(batch_size=args.batch_size)
    sae = resolve_sae("default").sae
    reader = Reader.load(layer=sae.cfg.layer, device=args.device, dtype=args.dtype)
    texts = corpus["text"].to_list()
    raw_forward(reader, texts[:64], options)  # warm-up
    raw_rates, pipeline_rates = [], []
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "docs.parquet"
        corpus.write_parquet(source)
        for repeat in range(args.repeats):
            tokens, raw_seconds = raw_forward(reader, texts, options)
            raw_rates.append(tokens / raw_seconds)
            with Store.open(Path(folder) / f"bench{repeat}.duckdb") as store:
                ingest(store, source, corpus="bench")
                summary = embed(store, "bench", device=args.device, dtype=args.dtype, options=options)
            pipeline_rates.append(summary.tokens / summary.seconds)
            print(f"repeat {repeat + 1}: raw {raw_rates[-1]:,.0f} tok/s, pipeline {pipeline_rates[-1]:,.0f} tok/s")
    print(f"documents            {args.docs}")
    print(f"tokens               {tokens}  (pipeline read {summary.tokens})")
    print(f"device / dtype       {reader.device} / {reader.dtype_name}")
    print(f"raw forward          {max(raw_rates):,.0f} tok/s (best of {args.repeats})")
    print(f"pipeline             {max(pipeline_rates):,.0f} tok/s (best of {args.repeats})")
    print(f"pipeline / raw       {max(pipeline_rates) / max(raw_rates):.2f}  (target ≥ 0.85)")


if __name__ == "__main__":
    main()
