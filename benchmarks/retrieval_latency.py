"""How fast is property search on a 100,000-document store, after the first query?

    python benchmarks/retrieval_latency.py [--docs 100000] [--concepts 8192] [--queries 30]
                                           [--db ~/.cache/saeembed/bench/latency.duckdb]

Builds (once; reused from --db) a synthetic store: `--docs` documents with 400–600 present concepts each
(≈ 50M rows at 100,000 documents; concept ids drawn with a power-law frequency, as in real SAEs), one
synthetic label per concept with a random unit embedding stored as if made by all-MiniLM-L6-v2 (so concept
search runs as on a real store, without embedding 8,192 labels first), and random unit document embeddings
for the dense index (IVF above 50,000 documents). Queries are embedded by the real all-MiniLM-L6-v2.

Times `search_documents` end to end (query embedding, concept selection, scoring, snippets with the firing
token marked, and the write to `retrieval_results`) for sae and dense mode: the first query (which builds
the per-run concept columns and the dense index, or reads them from disk) and then `--queries` more, with
p50/p95. Target: p50 < 200 ms for both. For comparison, it also times reading the selected concepts' rows
straight from DuckDB's `doc_features` (the alternative to the concept-major cache).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from saeembed.analysis.retrieve import search_documents
from saeembed.concepts.dense import DEFAULT_SENTENCE_MODEL, SentenceEmbedder
from saeembed.storage.store import Store
from saeembed.storage.synthetic import (
    distinct_draws,
    synthetic_corpus,
    synthetic_labels,
    synthetic_sae,
    write_drawn_concepts,
)

BATCH_DOCS = 5_000
DEFAULT_DB = Path.home() / ".cache" / "saeembed" / "bench" / "latency.duckdb"
WORDS = [
    *("sport", "game", "team", "money", "market", "bank", "food", "recipe", "music", "song", "film", "movie"),
    *("science", "space", "law", "court", "war", "peace", "weather", "rain", "health", "doctor", "school"),
    *("student", "code", "program", "love", "anger", "fear", "joy", "travel", "city", "car", "phone"),
]
QUERIES = [
    "negative review",
    "spam message with a prize",
    "sports news",
    "questions about numbers",
    "an essay written by an AI",
    "angry complaint",
    "recipe with chocolate",
    "stock market crash",
    "legal dispute in court",
    "travel plans for the summer",
]


def build(path: Path, docs: int, concepts: int, seed: int, model_id: str, dim: int) -> None:
    rng = np.random.default_rng(seed)
    words = np.asarray(WORDS)
    with Store.open(path) as store:
        sae = synthetic_sae(store, concepts)
        # Texts of 40 words, so snippets have tokens to mark.
        texts = [" ".join(words[rng.integers(0, len(words), 40)]) for _ in range(docs)]
        run, doc_ids = synthetic_corpus(store, "syn", texts, sae_id=sae, layer=15, max_tokens=128)
        for start in range(0, docs, BATCH_DOCS):
            n = min(BATCH_DOCS, docs - start)
            # 620 draws with a power-law over ids, repeats collapsed (≈ 590 distinct), then 0–30% of them
            # dropped per document: 400–600 present concepts per document.
            drawn = np.floor(concepts * rng.random((n, 620)) ** 1.6).astype(np.int32)
            present = distinct_draws(drawn)
            present &= rng.random(drawn.shape) >= rng.uniform(0.0, 0.3, (n, 1))
            write_drawn_concepts(store, run, doc_ids[start : start + n], drawn, present, rng)
        labels = rng.normal(size=(concepts, dim)).astype(np.float32)
        labels /= np.linalg.norm(labels, axis=1, keepdims=True)
        names = [" ".join(words[rng.integers(0, len(words), 3)]) for _ in range(concepts)]
        synthetic_labels(store, sae, run, names, embeddings=labels, embedding_model=model_id)
        for start in range(0, docs, 20_000):
            vectors = rng.normal(size=(min(20_000, docs - start), dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            embeddings = pa.table(
                {
                    "doc_id": doc_ids[start : start + len(vectors)],
                    "embedding": pa.array(list(vectors), pa.list_(pa.float32())),
                }
            )
            store.execute("dense_insert", {"model": model_id}, new_embeddings=embeddings)
        store.finish_run(run, {})


def percentile_line(name: str, seconds: list[float]) -> str:
    ms = np.asarray(seconds) * 1000
    return f"  {name:<6} p50 {np.percentile(ms, 50):7.1f} ms   p95 {np.percentile(ms, 95):7.1f} ms   (n={len(ms)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--concepts", type=int, default=8192)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--db", type=Path, default=DEFAULT_DB)
    args = parser.parse_args()
    embedder = SentenceEmbedder.load(DEFAULT_SENTENCE_MODEL)
    db = args.db.with_name(f"{args.db.stem}-{args.docs}{args.db.suffix}")
    if not db.exists():
        db.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        build(db, args.docs, args.concepts, args.seed, embedder.model_id, embedder.dim)
        print(f"built {db} in {time.perf_counter() - started:.0f} s")
    with Store.open(db) as store:
        rows = store.query("SELECT count(*) AS n FROM doc_features")["n"][0]
        print(f"store: {args.docs:,} documents, {rows:,} concept rows ({rows / args.docs:.0f} per document)")
        for mode in ("sae", "dense"):
            started = time.perf_counter()
            first = search_documents(store, QUERIES[0], corpus="syn", mode=mode, embedder=embedder)
            print(f"{mode}: first query {time.perf_counter() - started:.2f} s (index: {first.index or 'n/a'})")
        times: dict[str, list[float]] = {"sae": [], "dense": [], "fused": []}
        for i in range(args.queries):
            query = QUERIES[i % len(QUERIES)] + ("" if i < len(QUERIES) else f" {i}")
            for mode in times:
                started = time.perf_counter()
                result = search_documents(store, query, corpus="syn", mode=mode, embedder=embedder)
                times[mode].append(time.perf_counter() - started)
                assert result.documents.height == 20
        print(f"after the first query, {args.queries} queries each (target: p50 < 200 ms for sae and dense):")
        for mode, seconds in times.items():
            print(percentile_line(mode, seconds))
        selected = search_documents(store, QUERIES[1], corpus="syn", embedder=embedder)
        feature_ids = selected.concepts["feature_id"].to_list()
        duck = []
        for _ in range(5):
            started = time.perf_counter()
            store.query(
                "SELECT doc_id, feature_id, max_act, argmax_pos FROM doc_features "
                "WHERE run_id = 1 AND feature_id IN (SELECT unnest($f::INTEGER[]))",
                {"f": feature_ids},
            )
            duck.append(time.perf_counter() - started)
        print(
            f"reading the {len(feature_ids)} selected concepts' rows from DuckDB's doc_features instead: "
            f"median {np.median(duck) * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
