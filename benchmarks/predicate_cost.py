"""What evaluating `--where` in the sandbox costs, against running the same rebuilt expression in the store.

    python benchmarks/predicate_cost.py [--docs 1000000] [--text-chars 500] [--repeats 5]

Builds a store (DuckDB file in a temporary folder) with `--docs` documents of about `--text-chars`
characters and a small meta object, then times, alternately and best of `--repeats`, for a predicate on
meta and one on the text:

- in-store: `SELECT doc_id FROM documents WHERE corpus_id = 1 AND (<rebuilt expression>)` on the store's
  own connection (what saeembed did before predicates moved to the sandbox; run here on the checked,
  rebuilt expression only);
- sandboxed: `Store.documents_matching`, which streams the columns the predicate reads to an in-memory
  DuckDB with external access off, in batches of PREDICATE_BATCH_ROWS.

Both must select the same documents; the script checks that they do.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from saeembed.storage.predicates import parse_predicate
from saeembed.storage.store import Store
from saeembed.storage.synthetic import synthetic_corpus

PREDICATES = {
    "meta": "meta->>'side' = 'a' AND (meta->>'n')::INTEGER % 7 = 0",
    "text": "text ILIKE '%needle%'",
}


def build(path: Path, docs: int, text_chars: int) -> None:
    filler = ("lorem ipsum dolor sit amet " * (text_chars // 27 + 1))[:text_chars]
    texts = [f"document {i}{' holds a needle: ' if i % 100 == 0 else ': '}{filler} {i:08x}" for i in range(docs)]
    metas = [{"side": "a" if i % 2 == 0 else "b", "n": i} for i in range(docs)]
    with Store.open(path) as store:
        synthetic_corpus(store, "syn", texts, metas, sae_id=None)


def timed(call: Callable[[], np.ndarray], times: list[float]) -> np.ndarray:
    started = time.perf_counter()
    result = call()
    times.append(time.perf_counter() - started)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--text-chars", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "predicates.duckdb"
        started = time.perf_counter()
        build(path, args.docs, args.text_chars)
        seconds = time.perf_counter() - started
        print(f"store: {args.docs:,} documents of about {args.text_chars} characters, built in {seconds:.0f} s")
        with Store.open(path, read_only=True) as store:
            for name, text in PREDICATES.items():
                predicate = parse_predicate(text)
                in_store: list[float] = []
                sandboxed: list[float] = []
                sql = f"SELECT doc_id FROM documents WHERE corpus_id = 1 AND ({predicate.sql}) ORDER BY doc_id"
                for _ in range(args.repeats):
                    expected = timed(lambda sql=sql: store.query(sql)["doc_id"].to_numpy(), in_store)
                    got = timed(lambda p=predicate: store.documents_matching(1, p), sandboxed)
                    if not np.array_equal(expected, got):
                        raise SystemExit(f"{name}: the two ways selected different documents")
                print(f"\n{name} predicate: {text}  ({len(got):,} documents match)")
                print(f"  in-store            {min(in_store):.2f} s (best of {args.repeats})")
                print(f"  sandboxed           {min(sandboxed):.2f} s (best of {args.repeats})")
                print(f"  sandboxed / in-store {min(sandboxed) / min(in_store):.2f}")


if __name__ == "__main__":
    main()
