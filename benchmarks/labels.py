"""Token labels for every concept, timed, and the distribution of their offline scores against a control.

    saeembed demo                      # once: the demo database (3,000 AG News articles)
    python benchmarks/labels.py [--db saeembed.duckdb] [--corpus demo]

Works on a temporary copy of the database. Labels every concept present in the corpus with the token
method (time includes scoring), then prints the AUROC of each label's sentence embedding at telling
held-out activating from non-activating documents: for all concepts, for the 200 most frequent, and
for a control where each concept is scored with another concept's label (shuffled; ≈ 0.5 expected).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from saeembed.concepts.dense import SentenceEmbedder
from saeembed.concepts.labels import embedding_auroc, held_out_documents, label_concepts
from saeembed.concepts.provenance import current_labels
from saeembed.storage.store import Store, copy_database


def describe(name: str, scores: np.ndarray) -> str:
    scores = scores[np.isfinite(scores)]
    q10, q25, q50, q75, q90 = np.quantile(scores, [0.1, 0.25, 0.5, 0.75, 0.9])
    return (
        f"{name:<28} {scores.size:>6}  {scores.mean():.3f}  {q10:.2f} {q25:.2f} {q50:.2f} {q75:.2f} {q90:.2f}"
        f"  {np.mean(scores >= 0.7):>6.1%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="saeembed.duckdb")
    parser.add_argument("--corpus", default="demo")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not Path(args.db).exists():
        raise SystemExit(f"no database at {args.db}: run `saeembed demo` first (or pass --db)")

    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "labels.duckdb"
        copy_database(args.db, db)
        embedder = SentenceEmbedder.load()
        with Store.open(db) as store:
            started = time.perf_counter()
            summary = label_concepts(store, args.corpus, force=True, embedder=embedder)
            seconds = time.perf_counter() - started
            run = store.latest_run(args.corpus)
            labels = current_labels(store, run.sae_id, store.corpus_id(args.corpus)).filter(
                pl.col("method") == "tokens"
            )
            frequency = store.query(
                "SELECT feature_id, n_docs FROM concept_frequency WHERE run_id = $r", {"r": run.run_id}
            )
            labels = labels.join(frequency, on="feature_id").sort("feature_id")
            held_out = held_out_documents(store, run.run_id, labels["feature_id"].to_list(), seed=args.seed)
            vectors = np.asarray(labels["embedding"].to_list(), dtype=np.float32)
            real = embedding_auroc(store, labels, held_out, embedder, label_vectors=vectors)
            shuffled = np.random.default_rng(args.seed).permutation(len(vectors))
            control = embedding_auroc(store, labels, held_out, embedder, label_vectors=vectors[shuffled])

    frequent = np.argsort(-labels["n_docs"].to_numpy(), kind="stable")[:200]
    print(f"corpus {args.corpus}: {summary.labelled} concepts labelled (tokens) in {seconds:.0f} s, scoring included")
    print(f"{'AUROC':<28} {'labels':>6}  mean   q10  q25  q50  q75  q90  ≥ 0.70")
    print(describe("all concepts", real))
    print(describe("200 most frequent", real[frequent]))
    print(describe("control: shuffled labels", control))
    print(describe("control: 200 most frequent", control[frequent]))


if __name__ == "__main__":
    main()
