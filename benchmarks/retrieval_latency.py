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
from saeembed.storage.store import RunSettings, Store

READER = "HuggingFaceTB/SmolLM2-135M-Instruct"
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
    with Store.open(path) as store:
        sae = store.register_sae(
            name="synthetic",
            fingerprint="l" * 40,
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
        # Texts of 40 words, so snippets have tokens to mark.
        words = np.asarray(WORDS)
        texts = [" ".join(words[rng.integers(0, len(words), 40)]) for _ in range(docs)]
        store.con.register(
            "syn_texts", pa.table({"doc_id": np.arange(1, docs + 1, dtype=np.int64), "text": pa.array(texts)})
        )
        store.con.execute(
            "INSERT INTO documents (doc_id, corpus_id, external_id, text, meta, content_hash) "
            "SELECT doc_id, 1, doc_id::VARCHAR, text, '{}', md5(doc_id::VARCHAR) FROM syn_texts"
        )
        store.con.unregister("syn_texts")
        run = store.open_run(RunSettings(1, sae, READER, 15, 128, True, "float32"), {})
        for start in range(0, docs, BATCH_DOCS):
            n = min(BATCH_DOCS, docs - start)
            # 620 draws with a power-law over ids, repeats collapsed (≈ 590 distinct), then 0–30% of them
            # dropped per document: 400–600 present concepts per document.
            drawn = np.floor(concepts * rng.random((n, 620)) ** 1.6).astype(np.int32)
            drawn.sort(axis=1)
            present = np.ones(drawn.shape, dtype=bool)
            present[:, 1:] = drawn[:, 1:] != drawn[:, :-1]
            present &= rng.random(drawn.shape) >= rng.uniform(0.0, 0.3, (n, 1))
            total = int(present.sum())
            doc_id = np.arange(start + 1, start + n + 1, dtype=np.int64)
            store.write_batch(
                run,
                pa.table(
                    {
                        "doc_id": doc_id,
                        "n_tokens": np.full(n, 40, dtype=np.int32),
                        "n_tokens_total": np.full(n, 40, dtype=np.int32),
                        "truncated": np.zeros(n, dtype=bool),
                        "n_features": present.sum(axis=1).astype(np.int32),
                    }
                ),
                pa.table(
                    {
                        "doc_id": np.repeat(doc_id, present.sum(axis=1)),
                        "feature_id": drawn[present],
                        "max_act": rng.gamma(2.0, 1.0, total).astype(np.float32) + 0.01,
                        "mean_act": np.full(total, 0.1, dtype=np.float32),
                        "n_active_tokens": np.ones(total, dtype=np.int32),
                        "argmax_pos": rng.integers(0, 40, total, dtype=np.int32),
                    }
                ),
            )
        labels = rng.normal(size=(concepts, dim)).astype(np.float32)
        labels /= np.linalg.norm(labels, axis=1, keepdims=True)
        store.con.register(
            "syn_labels",
            pa.table(
                {
                    "feature_id": np.arange(concepts, dtype=np.int32),
                    "label": pa.array([" ".join(words[rng.integers(0, len(words), 3)]) for _ in range(concepts)]),
                    "embedding": pa.array(list(labels), type=pa.list_(pa.float32())),
                }
            ),
        )
        store.con.execute(
            "INSERT INTO features (sae_id, feature_id, method, model, label, run_id, auroc, embedding, "
            "embedding_model) SELECT ?, feature_id, 'tokens', 'synthetic', label, ?, 0.8, embedding, ? FROM syn_labels",
            [sae, run, model_id],
        )
        store.con.unregister("syn_labels")
        for start in range(0, docs, 20_000):
            n = min(20_000, docs - start)
            vectors = rng.normal(size=(n, dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            store.con.register(
                "syn_embeddings",
                pa.table(
                    {
                        "doc_id": np.arange(start + 1, start + n + 1, dtype=np.int64),
                        "embedding": pa.array(list(vectors), type=pa.list_(pa.float32())),
                    }
                ),
            )
            store.con.execute("INSERT INTO doc_embeddings SELECT ?, doc_id, embedding FROM syn_embeddings", [model_id])
            store.con.unregister("syn_embeddings")
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
            store.con.execute(
                "SELECT doc_id, feature_id, max_act, argmax_pos FROM doc_features "
                "WHERE run_id = 1 AND feature_id IN (SELECT unnest($f::INTEGER[]))",
                {"f": feature_ids},
            ).fetchnumpy()
            duck.append(time.perf_counter() - started)
        print(
            f"reading the {len(feature_ids)} selected concepts' rows from DuckDB's doc_features instead: "
            f"median {np.median(duck) * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
