"""Does the diff find a planted difference, and only when there is one? Real AG News articles, embedded
by SmolLM2-135M-Instruct with the default SAE, in one run.

    python benchmarks/quality_diff.py [--per-side 600] [--splits 200] [--classes Sports,World,Business,Sci/Tech]

(a) planted difference: corpus A has 30% Sports articles, corpus B 5% (other topics fill the rest).
    For the top 5 concepts of a ranking: the share of Sports among the documents (of A and B) where the
    concept is present — its precision for the planted class. Target: ≥ 3 of the top 5 of the default
    ranking at precision ≥ 0.7. Printed for the default presence threshold (a concept is present where it
    fires at ≥ 0.5 × its p90) and for any firing (the paper's definition, --presence-threshold 0), each
    ranked by specificity (the default) and by raw Δ; for the default, precision over every document where
    the concept fires at all is printed too. Then the same for the other AG News topics planted instead.
(b) no difference: random halves of one corpus (200 by default); a split "fails" when any concept has
    q < 0.05. Target: ≥ 95% of 20 splits with no such concept; all 200 estimate the rate better.
(c) planted correlation: two unrelated sentences (a saffron recipe, a violinist) appended together to 2%
    of another 600 articles. Target: a pair of concepts that fire (almost) only in those articles — one
    on each sentence — among the top 20 NPMI pairs of `correlate_pairs`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from saeembed.analysis.correlate import CorrelationResult, correlate_pairs
from saeembed.analysis.diff import diff
from saeembed.concepts.labels import label_concepts
from saeembed.jobs import embed, ingest
from saeembed.model.pooling import EmbedOptions
from saeembed.storage.corpora import demo_corpus
from saeembed.storage.percentiles import DEFAULT_PRESENCE, presence_thresholds
from saeembed.storage.store import Store

PLANTED = "Sports"
INJECTED = (" The recipe calls for a pinch of saffron and cardamom.", " The violinist tuned her cello and violin.")


def planted_corpora(per_side: int, seed: int, planted: str = PLANTED) -> tuple[pl.DataFrame, pl.DataFrame]:
    pool = demo_corpus(n=4 * 1200, seed=seed).sample(fraction=1.0, shuffle=True, seed=seed)
    sports, other = pool.filter(pl.col("topic") == planted), pool.filter(pl.col("topic") != planted)
    a_sports, b_sports = round(0.30 * per_side), round(0.05 * per_side)
    side_a = pl.concat([sports.head(a_sports), other.head(per_side - a_sports)])
    side_b = pl.concat([sports.slice(a_sports, b_sports), other.slice(per_side - a_sports, per_side - b_sports)])
    return side_a, side_b


def precision_at_top(
    store: Store, table: pl.DataFrame, runs: list[int], planted: str, presence: float, n: int = 5
) -> list[float]:
    """For each of the top n concepts: share of `planted` among the documents of A ∪ B (runs `runs`) where it
    is present, i.e. fires at ≥ `presence` × its p90 over both runs (0: fires at all)."""
    thresholds = dict(presence_thresholds(store, runs[0], runs[1], presence).iter_rows())
    shares = []
    for feature_id in table["feature_id"].head(n).to_list():
        topics = store.query(
            "SELECT d.meta->>'topic' AS topic FROM doc_features f JOIN documents d USING (doc_id) "
            "WHERE f.feature_id = $f AND list_contains($runs, f.run_id) AND f.max_act >= $min_act",
            {"f": feature_id, "runs": runs, "min_act": thresholds.get(feature_id, 0.0)},
        )["topic"]
        shares.append(float((topics == planted).mean()))
    return shares


def planted_difference(store: Store, folder: str, per_side: int, seed: int, planted: str, detail: bool) -> None:
    """Embed A (30% `planted`) and B (5%), then print the top-5 precision of each ranking."""
    names = []
    for side, frame in zip(("a", "b"), planted_corpora(per_side, seed, planted), strict=True):
        name = side if planted == PLANTED else f"{side}-{planted.lower().replace('/', '')}"
        path = Path(folder) / f"{name}.parquet"
        frame.write_parquet(path)
        ingest(store, path, corpus=name)
        embed(store, name, options=EmbedOptions(max_tokens=128))
        names.append(name)
    runs = [store.latest_run(name).run_id for name in names]
    print(f"\n(a) planted difference: {planted} is 30% of A and 5% of B ({per_side} articles per side)")
    for presence, rank_by in (
        (DEFAULT_PRESENCE, "specific"),
        (DEFAULT_PRESENCE, "delta"),
        (0.0, "specific"),
        (0.0, "delta"),
    ):
        result = diff(store, names[0], names[1], top=5, rank_by=rank_by, presence_threshold=presence)
        shares = precision_at_top(store, result.table, runs, planted, presence)
        hits = sum(s >= 0.7 for s in shares)
        print(
            f"  presence ≥ {presence:.1f}·p90, ranking {rank_by:<9} top-5 precision: "
            f"{', '.join(f'{s:.2f}' for s in shares):<30} → {hits} of {len(shares)} ≥ 0.7"
        )
        if presence > 0 and rank_by == "specific":
            anywhere = ", ".join(f"{s:.2f}" for s in precision_at_top(store, result.table, runs, planted, 0.0))
            print(f"      the same concepts, over every document where they fire at all: {anywhere}")
        if detail:
            for row in result.table.head(5).select("feature_id", "label", "freq_a", "freq_b", "q_value").rows():
                print(f"      {row[0]:>5}  {str(row[1])[:36]:<36} {row[2]:.3f} vs {row[3]:.3f}  q={row[4]:.1e}")


def planted_correlation(store: Store, folder: str, seed: int) -> None:
    pool = demo_corpus(n=4 * 1200, seed=seed + 1).sample(n=600, seed=seed + 1)
    injected = np.zeros(600, dtype=bool)
    injected[:: 600 // 12] = True  # 12 articles, 2%
    texts = [t + "".join(INJECTED) if hit else t for t, hit in zip(pool["text"], injected, strict=True)]
    frame = pool.with_columns(pl.Series("text", texts), pl.Series("injected", injected))
    path = Path(folder) / "c.parquet"
    frame.write_parquet(path)
    ingest(store, path, corpus="c")
    embed(store, "c", options=EmbedOptions(max_tokens=128))
    print("  with the labels shipped with the SAE:")
    report_planted_pairs(store, correlate_pairs(store, "c", top=20, min_count=5))
    label_concepts(store, "c")
    print("  with token labels made from this corpus:")
    report_planted_pairs(store, correlate_pairs(store, "c", top=20, min_count=5))


def report_planted_pairs(store: Store, result: CorrelationResult) -> None:
    both = store.query(
        """
        SELECT p.rank, count(*) AS n_ab, sum((d.meta->>'injected')::BOOLEAN::INT) AS injected
        FROM top_pairs p
        JOIN doc_features fa ON fa.feature_id = p.feature_a
        JOIN doc_features fb ON fb.feature_id = p.feature_b AND fb.doc_id = fa.doc_id AND fb.run_id = fa.run_id
        JOIN documents d ON d.doc_id = fa.doc_id JOIN corpora c USING (corpus_id)
        WHERE c.name = 'c' GROUP BY p.rank
        """.replace("top_pairs", "(SELECT unnest($a) AS feature_a, unnest($b) AS feature_b, unnest($r) AS rank)"),
        {
            "a": result.pairs["feature_a"].to_list(),
            "b": result.pairs["feature_b"].to_list(),
            "r": result.pairs["rank"].to_list(),
        },
    )
    # Planted: the pair's co-occurrences are (almost) only the injected articles, and cover most of them.
    planted = both.filter((pl.col("injected") >= 10) & (pl.col("injected") >= 0.8 * pl.col("n_ab"))).sort("rank")
    print(
        f"    {result.candidates} candidate pairs; {planted.height} of the top 20 are planted pairs "
        f"(≥ 80% of their co-occurrences injected, ≥ 10 of the 12 injected articles)"
    )
    for rank, n_ab, injected in planted.head(3).rows():
        row = result.pairs.filter(pl.col("rank") == rank).row(0, named=True)
        print(
            f"    rank {rank}: {row['feature_a']} ({row['label_a']}) + {row['feature_b']} ({row['label_b']}), "
            f"NPMI {row['npmi']:.2f}, together in {n_ab} articles, {injected} injected"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-side", type=int, default=600)
    parser.add_argument("--splits", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--classes", default="Sports,World,Business,Sci/Tech", help="AG News topics to plant, one after another"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        with Store.open(Path(folder) / "quality.duckdb") as store:
            planted_difference(store, folder, args.per_side, args.seed, PLANTED, detail=True)
            print(
                f"  (embedding 2 × {args.per_side} articles and the four diffs: {time.perf_counter() - started:.0f} s)"
            )

            print(f"\n(b) no difference: {args.splits} random halves of corpus a")
            smallest = []
            for split in range(args.splits):
                half = f"hash(doc_id + {split * 7919 + args.seed}) % 2 = 0"
                other = f"hash(doc_id + {split * 7919 + args.seed}) % 2 = 1"
                result = diff(store, "a", "a", where_a=half, where_b=other, top=5)
                q = store.query(
                    "SELECT min(q_value) AS q FROM diff_results WHERE analysis_id = $a", {"a": result.analysis_id}
                )["q"][0]
                smallest.append(q)
            for n in sorted({min(20, args.splits), args.splits}):
                clean = sum(q >= 0.05 for q in smallest[:n])
                print(f"  first {n} splits: {clean} of {n} ({clean / n:.1%}) with no concept at q < 0.05")
            print(f"  smallest q per split: median {np.median(smallest):.2f}, min {min(smallest):.3f}")

            print("\n(c) planted correlation: two sentences appended together to 2% of 600 other articles")
            planted_correlation(store, folder, args.seed)

            for planted in args.classes.split(","):
                if planted != PLANTED:
                    planted_difference(store, folder, args.per_side, args.seed, planted, detail=False)


if __name__ == "__main__":
    main()
