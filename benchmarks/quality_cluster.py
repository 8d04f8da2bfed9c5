"""Does concept-filtered clustering group documents along the axis it is aimed at? Two corpora embedded
by SmolLM2-135M-Instruct with the default SAE (max 128 tokens), clustered on the concepts closest to an
`about` text and, for comparison, on all-MiniLM-L6-v2 embeddings of the same documents (`dense=True`).

    python benchmarks/quality_cluster.py [--db ~/.cache/saeembed/bench/cluster.duckdb]

(i)  sentiment (labels that are not the topic): Amazon reviews, 1★ vs 5★ across products (sae-probes
     157_amazon_5star). SAE clustering aimed at sentiment should reach higher NMI with 1★/5★ than dense
     clustering, whose neighbourhoods follow the product.
(ii) topic: AG News (World, Sports, Business, Sci/Tech); SAE clustering aimed at topic should recover the
     topics.

NMI and ARI against the known labels, for HDBSCAN (default min cluster size; noise counts as one more
cluster, documents without any selected concept as another) and for spectral clustering with k = the number
of labels (the fairer comparison: both methods are told how many groups there are). Two label sets: the
labels shipped with the SAE, and token labels made from each corpus (`label_concepts`, in a copy of the
store beside --db, `…-labelled.duckdb`). Everything is embedded once and kept at --db: a rerun takes seconds.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path
from typing import NamedTuple

import polars as pl
from bench_store import build, labelled_copy
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from saeembed.analysis.cluster import DEFAULT_CONCEPTS, ClusterResult, cluster_documents
from saeembed.concepts.dense import DEFAULT_SENTENCE_MODEL, SentenceEmbedder
from saeembed.storage.corpora import demo_corpus, read_sae_probes
from saeembed.storage.store import Store

DEFAULT_DB = Path.home() / ".cache" / "saeembed" / "bench" / "cluster.duckdb"
SEED = 0
PER_STAR = 600
"""Amazon reviews per class (1★, 5★)."""
AG_NEWS = 1200
"""AG News articles (300 per topic)."""


class Task(NamedTuple):
    corpus: str
    """Corpus name in the store."""
    about: str
    """What the SAE clustering is aimed at."""
    label_column: str
    """The meta column holding the known labels."""
    k: int
    """Number of known labels (spectral clustering's k)."""


TASKS = (
    Task("amazon", "negative opinion, complaint, disappointment; positive praise, love it, great", "stars", 2),
    Task("agnews", "sports; business and economy; science and technology; world politics and war", "topic", 4),
)


def corpora() -> dict[str, pl.DataFrame]:
    """The two benchmark corpora: id, text and the label column."""
    reviews = read_sae_probes("157").unique("prompt", keep="first", maintain_order=True)
    amazon = pl.concat(
        reviews.filter(pl.col("target") == target).sample(n=PER_STAR, seed=SEED, shuffle=True) for target in ("0", "1")
    ).select(
        pl.format("amazon-{}", pl.int_range(pl.len())).alias("id"),
        pl.col("prompt").alias("text"),
        pl.when(pl.col("target") == "0").then(pl.lit("1star")).otherwise(pl.lit("5star")).alias("stars"),
    )
    news = demo_corpus(n=AG_NEWS, seed=SEED).select("id", "text", "topic")
    return {"amazon": amazon, "agnews": news}


def scores(store: Store, task: Task, result: ClusterResult) -> tuple[float, float]:
    """NMI and ARI of the clustering against the known labels, over every document of the corpus: noise
    counts as one more cluster, documents without a selected concept as another."""
    truth = store.query(f"SELECT doc_id, meta->>'{task.label_column}' AS label FROM documents")
    joined = result.assignments.join(truth, on="doc_id")
    found = joined["cluster"].fill_null(-2).to_list()
    return (
        normalized_mutual_info_score(joined["label"].to_list(), found),
        adjusted_rand_score(joined["label"].to_list(), found),
    )


def evaluate(db: Path, labels: str, embedder: SentenceEmbedder, concepts: list[int]) -> list[dict]:
    """One row per (task, number of concepts, method, representation) on the store at `db`."""
    rows = []
    with Store.open(db) as store:
        for task, n_concepts, method, dense in itertools.product(
            TASKS, concepts, ("hdbscan", "spectral"), (False, True)
        ):
            started = time.perf_counter()
            result = cluster_documents(
                store,
                task.corpus,
                about=task.about,
                method=method,
                k=task.k if method == "spectral" else None,
                n_concepts=n_concepts,
                dense=dense,
                mapped=False,
                embedder=embedder,
            )
            nmi, ari = scores(store, task, result)
            rows.append(
                {
                    "corpus": task.corpus,
                    "labels": labels,
                    "concepts": n_concepts,
                    "method": method,
                    "clustered on": "MiniLM (dense)" if dense else "SAE concepts",
                    "clusters": result.n_clusters,
                    "noise": result.assignments.filter(pl.col("cluster") == -1).height,
                    "no concept": result.n_without_concepts,
                    "NMI": nmi,
                    "ARI": ari,
                    "seconds": time.perf_counter() - started,
                }
            )
            if method == "spectral" and not dense and n_concepts == concepts[0]:
                _show(task, labels, result)
    return rows


def _show(task: Task, labels: str, result: ClusterResult) -> None:
    names = "; ".join(str(label)[:30] for label in result.concepts["label"].head(8).to_list())
    print(f"  {task.corpus} ({labels} labels) about {task.about!r}: {names} …")
    for row in result.summaries.to_dicts():
        top = "; ".join(f"{str(c['label'])[:28]} {c['delta']:+.2f}" for c in row["top_concepts"][:3])
        print(f"    spectral cluster {row['cluster']} ({row['size']} docs): {top}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, default=DEFAULT_DB)
    parser.add_argument(
        "--concepts", type=int, nargs="+", default=[DEFAULT_CONCEPTS, 60], help="concepts selected per --about"
    )
    args = parser.parse_args()
    build(args.db, corpora())
    labelled = labelled_copy(args.db, list(dict.fromkeys(task.corpus for task in TASKS)))
    embedder = SentenceEmbedder.load(DEFAULT_SENTENCE_MODEL)
    rows = evaluate(args.db, "shipped", embedder, args.concepts) + evaluate(labelled, "corpus", embedder, args.concepts)
    table = pl.DataFrame(rows).sort(
        "corpus", "method", "labels", "concepts", "clustered on", descending=[True, False, True, False, True]
    )
    print("\nNMI / ARI against the known labels (every document counted)")
    print("| corpus | labels | concepts | method | clustered on | clusters | noise | no concept | NMI | ARI | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in table.to_dicts():
        print(
            f"| {r['corpus']} | {r['labels']} | {r['concepts']} | {r['method']} | {r['clustered on']} | "
            f"{r['clusters']} | "
            f"{r['noise']} | {r['no concept']} | {r['NMI']:.3f} | {r['ARI']:.3f} | {r['seconds']:.1f} |"
        )


if __name__ == "__main__":
    main()
