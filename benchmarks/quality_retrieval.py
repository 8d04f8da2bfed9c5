"""Does property retrieval find the documents that have a property? A mixed corpus of labelled offline data
(sae-probes files), embedded by SmolLM2-135M-Instruct with the default SAE; 18 property queries, each with
the documents that truly have the property as its relevant set; average precision per query and mode.

    python benchmarks/quality_retrieval.py [--db ~/.cache/saeembed/bench/retrieval.duckdb]
                                           [--concepts 60] [--temperature 0.2] [--min-score 0.6]
                                           [--exemplar-weight 0.5] [--show-concepts] [--oracle]
                                           [--sweep-concepts 10 20 40 60 100] [--sweep-exemplar-weights 0 0.5 1]
                                           [--example-sizes 5 20] [--example-seeds 3] [--examples-only]

The corpus (≈ 3,500 documents): Amazon 1★ and 5★ reviews, Yelp reviews (1–5★), SMS spam and ham, AG News
(four topics), human and AI-written student essays, clickbait and factual headlines, emotional tweets
(happiness, sadness, worry, surprise), toxic and harmless prompts, fake (21st Century Wire) and real
(Reuters) political news, Python code. Queries are "topic" properties (what a document is about: sports
news, restaurant reviews, code) or "non-topic" ones (sentiment, spam, style, emotion, toxicity, source).

Everything is embedded once: the store is kept at --db and reused (a rerun only searches: ≈ 2 min). Two label sets are
compared: the labels shipped with the SAE (made from its training data), and token labels made from this
corpus (`label_concepts`, in a copy of the store beside --db, `…-labelled.duckdb`).

Average precision is computed over each mode's whole ranking: dense ranks every document; sae ranks only the
documents with at least one selected concept, so a relevant document without any counts as missed. The
number of concepts per query (60; it was 10, then 20) was chosen on this benchmark (one global setting; T
stays 0.2): `--sweep-concepts` prints the sae MAPs (corpus labels) for other values beside it, and
`--sweep-exemplar-weights` for other mixes of label and exemplar similarity (0: labels only). `--oracle`
prints, per query, the single concept whose activation alone ranks the relevant documents best and how far
down concept search (corpus labels) puts it: what better labels could reach.

Search by example (`search_like`): for each query, --example-seeds random draws of 5 and of 20 of its relevant
documents are the examples; each mode ranks the rest, and AP is over the relevant documents that are not
examples (the text query's ranking is scored the same way, without the examples, so the columns compare).
Besides the mixed corpus, a corpus of film-review sentences (sae-probes 113, Rotten Tomatoes: 500 negative,
500 positive) asks for sentiment where nothing else differs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl
from bench_store import build, labelled_copy

from saeembed.analysis.retrieve import (
    DEFAULT_CONCEPTS,
    DEFAULT_EXEMPLAR_WEIGHT,
    DEFAULT_TEMPERATURE,
    concept_columns,
    search_documents,
    search_like,
)
from saeembed.concepts.dense import DEFAULT_SENTENCE_MODEL, SentenceEmbedder
from saeembed.concepts.search import DEFAULT_MIN_SCORE, search_concepts
from saeembed.storage.corpora import demo_corpus, read_sae_probes
from saeembed.storage.store import Store

CORPUS = "mixed"
FILMS = "films"
MODES = ("sae", "dense", "fused")
DEFAULT_DB = Path.home() / ".cache" / "saeembed" / "bench" / "retrieval.duckdb"
SEED = 0
KINDS = ("non-topic", "topic", None)
"""Query kinds a MAP is averaged over (None: all queries)."""


def _sample(frame: pl.DataFrame, target: str, n: int, source: str, label: str) -> pl.DataFrame:
    rows = frame.filter(pl.col("target") == target).unique("prompt", keep="first", maintain_order=True)
    rows = rows.sample(n=min(n, rows.height), seed=SEED, shuffle=True)
    return rows.select(pl.col("prompt").alias("text"), pl.lit(source).alias("source"), pl.lit(label).alias("label"))


def mixed_corpus() -> pl.DataFrame:
    """The benchmark corpus: text, source, label (see the module docstring), id."""
    parts = [
        _sample(read_sae_probes("157"), "0", 300, "amazon", "1star"),
        _sample(read_sae_probes("157"), "1", 300, "amazon", "5star"),
        *[_sample(read_sae_probes("111"), str(t), 60, "yelp", f"{t + 1}star") for t in range(5)],
        _sample(read_sae_probes("96"), "1", 200, "sms", "spam"),
        _sample(read_sae_probes("96"), "0", 200, "sms", "ham"),
        _sample(read_sae_probes("94"), "1", 150, "essay", "ai"),
        _sample(read_sae_probes("94"), "0", 150, "essay", "human"),
        _sample(read_sae_probes("105"), "clickbait", 150, "headline", "clickbait"),
        _sample(read_sae_probes("105"), "factual", 150, "headline", "factual"),
        *[_sample(read_sae_probes("102"), e, 100, "tweet", e) for e in ("happiness", "sadness", "worry", "surprise")],
        _sample(read_sae_probes("95"), "1", 100, "prompt", "toxic"),
        _sample(read_sae_probes("95"), "0", 100, "prompt", "harmless"),
        _sample(read_sae_probes("100"), "0", 150, "politics", "fake"),
        _sample(read_sae_probes("100"), "1", 150, "politics", "real"),
        _sample(read_sae_probes("159"), "1", 100, "code", "python"),
        demo_corpus(n=600, seed=SEED).select("text", pl.lit("agnews").alias("source"), pl.col("topic").alias("label")),
    ]
    frame = pl.concat(parts).unique("text", keep="first", maintain_order=True)
    return frame.with_columns(pl.format("{}-{}", pl.col("source"), pl.int_range(pl.len())).alias("id"))


def film_corpus() -> pl.DataFrame:
    """Film-review sentences by sentiment (sae-probes 113): text, source 'films', label, id."""
    parts = [
        _sample(read_sae_probes("113"), t, 500, "films", label) for t, label in (("0", "negative"), ("1", "positive"))
    ]
    frame = pl.concat(parts).unique("text", keep="first", maintain_order=True)
    return frame.with_columns(pl.format("{}-{}", pl.col("source"), pl.int_range(pl.len())).alias("id"))


class Query(NamedTuple):
    text: str
    """The property, as a user would type it."""
    kind: str
    """'topic' (what the document is about) or 'non-topic' (sentiment, spam, style, emotion, …)."""
    relevant: pl.Expr
    """Which documents have the property (over columns source and label)."""


def _is(source: str, *labels: str) -> pl.Expr:
    return (pl.col("source") == source) & pl.col("label").is_in(labels)


QUERIES = [
    Query(
        "negative review, disappointed customer", "non-topic", _is("amazon", "1star") | _is("yelp", "1star", "2star")
    ),
    Query("positive review, delighted customer", "non-topic", _is("amazon", "5star") | _is("yelp", "4star", "5star")),
    Query("spam message: you have won a prize, call now", "non-topic", _is("sms", "spam")),
    Query("essay written by an AI language model", "non-topic", _is("essay", "ai")),
    Query("clickbait headline", "non-topic", _is("headline", "clickbait")),
    Query("toxic, offensive or harmful request", "non-topic", _is("prompt", "toxic")),
    Query("fake news, conspiracy and propaganda", "non-topic", _is("politics", "fake")),
    Query("sadness, feeling sad", "non-topic", _is("tweet", "sadness")),
    Query("happiness, feeling happy", "non-topic", _is("tweet", "happiness")),
    Query("worry and anxiety", "non-topic", _is("tweet", "worry")),
    Query("surprise, astonishment", "non-topic", _is("tweet", "surprise")),
    Query("sports news", "topic", _is("agnews", "Sports")),
    Query("business and economy news", "topic", _is("agnews", "Business")),
    Query("science and technology news", "topic", _is("agnews", "Sci/Tech")),
    Query("world news and international politics", "topic", _is("agnews", "World")),
    Query("restaurant review", "topic", pl.col("source") == "yelp"),
    Query("Python source code", "topic", pl.col("source") == "code"),
    Query("product review", "topic", pl.col("source").is_in(["amazon"])),
]


FILM_QUERIES = [
    Query("negative film review", "films", _is("films", "negative")),
    Query("positive film review", "films", _is("films", "positive")),
]
EXAMPLE_KINDS = ("non-topic", "topic", "films")
"""Query kinds the by-example MAPs are averaged over."""


def average_precision(ranked: list[int], relevant: set[int]) -> float:
    """Mean of precision@k over the ranks k of the relevant documents found; relevant documents not in
    `ranked` count as precision 0."""
    if not relevant:
        return float("nan")
    hits = np.isin(np.asarray(ranked, dtype=np.int64), np.fromiter(relevant, dtype=np.int64))
    precision = np.cumsum(hits) / np.arange(1, len(ranked) + 1)
    return float(precision[hits].sum() / len(relevant))


def evaluate(
    db: Path, embedder: SentenceEmbedder, modes: tuple[str, ...], options: dict, show: bool
) -> dict[tuple[str, str], float]:
    """AP of each (query, mode) on the store at `db`."""
    scores: dict[tuple[str, str], float] = {}
    with Store.open(db) as store:
        docs = store.query("SELECT doc_id, meta->>'source' AS source, meta->>'label' AS label FROM documents")
        for query in QUERIES:
            relevant = set(docs.filter(query.relevant)["doc_id"].to_list())
            for mode in modes:
                result = search_documents(
                    store, query.text, corpus=CORPUS, mode=mode, top=docs.height, embedder=embedder, **options
                )
                scores[(query.text, mode)] = average_precision(result.documents["doc_id"].to_list(), relevant)
                if show and mode == "sae":
                    labels = "; ".join(result.concepts["label"].head(3).to_list())
                    print(f"    {query.text[:40]:<40} → {labels[:100]}")
    return scores


def by_example(
    db: Path, embedder: SentenceEmbedder, sizes: list[int], seeds: int
) -> tuple[dict[tuple[str, str], float], list[Query]]:
    """Mean AP (over `seeds` draws of examples) of each (query, column): the text query in each mode and
    search by n examples in each mode ('text sae', '5 sae', …), the examples left out of ranking and
    relevant set alike. Returns the scores and the queries, each with its corpus's relevant count in kind."""
    scores: dict[tuple[str, str], list[float]] = {}
    with Store.open(db) as store:
        for corpus, queries in ((CORPUS, QUERIES), (FILMS, FILM_QUERIES)):
            docs = store.query(
                "SELECT doc_id, meta->>'source' AS source, meta->>'label' AS label FROM documents "
                "WHERE corpus_id = $c ORDER BY doc_id",
                {"c": store.corpus_id(corpus)},
            )
            for query in queries:
                relevant = docs.filter(query.relevant)["doc_id"].to_numpy()
                text = {
                    mode: search_documents(
                        store, query.text, corpus=corpus, mode=mode, top=docs.height, embedder=embedder
                    )
                    .documents["doc_id"]
                    .to_list()
                    for mode in MODES
                }
                for n in sizes:
                    for seed in range(seeds):
                        examples = set(np.random.default_rng(seed).choice(relevant, n, replace=False).tolist())
                        rest = set(relevant.tolist()) - examples
                        for mode in MODES:
                            ranked = [d for d in text[mode] if d not in examples]
                            scores.setdefault((query.text, f"text {mode}"), []).append(average_precision(ranked, rest))
                            found = search_like(
                                store, sorted(examples), corpus=corpus, mode=mode, top=docs.height, embedder=embedder
                            )
                            ap = average_precision(found.documents["doc_id"].to_list(), rest)
                            scores.setdefault((query.text, f"{n} {mode}"), []).append(ap)
                print(f"  by example: {query.text}", flush=True)
    return {key: float(np.mean(values)) for key, values in scores.items()}, [*QUERIES, *FILM_QUERIES]


def print_header(title: str, header: str) -> None:
    """A markdown table's title, header row and rule."""
    print(f"\n{title}\n{header}")
    print("|" + "|".join("-" * len(part) for part in header.split("|")[1:-1]) + "|")


def print_by_example(scores: dict[tuple[str, str], float], queries: list[Query], sizes: list[int]) -> None:
    columns = [f"text {m}" for m in MODES] + [f"{n} {m}" for n in sizes for m in MODES]
    header = f"| {'query':<46} | {'kind':<9} | " + " | ".join(f"{c:>10}" for c in columns) + " |"
    print_header(
        "search by example: mean AP over the draws (text: the query's own ranking; N: N random examples)", header
    )
    for query in queries:
        cells = " | ".join(f"{scores[(query.text, c)]:>10.3f}" for c in columns)
        print(f"| {query.text:<46} | {query.kind:<9} | {cells} |")
    for kind in EXAMPLE_KINDS:
        chosen = [q.text for q in queries if q.kind == kind]
        cells = " | ".join(f"{np.mean([scores[(q, c)] for q in chosen]):>10.3f}" for c in columns)
        name = f"**MAP {kind}** ({len(chosen)} queries)"
        print(f"| {name:<46} | {'':<9} | {cells} |")


def best_single_concepts(db: Path, embedder: SentenceEmbedder, min_score: float) -> None:
    """For each query: the concept whose max activation alone ranks the relevant documents best (AP; only
    concepts present in ≥ 20% of them), and its rank among the concepts concept search returns."""
    with Store.open(db) as store:
        docs = store.query("SELECT doc_id, meta->>'source' AS source, meta->>'label' AS label FROM documents")
        columns = concept_columns(store, store.latest_run(CORPUS).run_id)
        for query in QUERIES:
            relevant = set(docs.filter(query.relevant)["doc_id"].to_list())
            is_relevant = np.isin(columns.doc_ids, np.fromiter(relevant, dtype=np.int64))
            best, best_ap = -1, 0.0
            for feature_id in range(len(columns.ptr) - 1):
                start, end = int(columns.ptr[feature_id]), int(columns.ptr[feature_id + 1])
                rows = columns.rows[start:end]
                if is_relevant[rows].sum() < 0.2 * len(relevant):
                    continue
                ranked = columns.doc_ids[rows[np.argsort(-columns.max_act[start:end], kind="stable")]]
                ap = average_precision(ranked.tolist(), relevant)
                if ap > best_ap:
                    best, best_ap = feature_id, ap
            found = search_concepts(
                store, query.text, corpus=CORPUS, top=100_000, min_score=min_score, embedder=embedder
            )
            ranks = found["feature_id"].to_list()
            where = f"concept search rank {ranks.index(best) + 1}" if best in ranks else "label below --min-score"
            print(f"  {query.text[:46]:<46} best concept {best:>5}: AP {best_ap:.3f} ({where})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, default=DEFAULT_DB)
    parser.add_argument("--concepts", type=int, default=DEFAULT_CONCEPTS)
    parser.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE)
    parser.add_argument("--min-score", type=float, default=DEFAULT_MIN_SCORE)
    parser.add_argument("--exemplar-weight", type=float, default=DEFAULT_EXEMPLAR_WEIGHT)
    parser.add_argument("--show-concepts", action="store_true", help="print each query's top 3 concept labels")
    parser.add_argument("--oracle", action="store_true", help="also: each query's best single concept")
    parser.add_argument(
        "--sweep-concepts", type=int, nargs="*", default=[], help="also: sae MAPs (corpus labels) at these k"
    )
    parser.add_argument(
        "--sweep-exemplar-weights", type=float, nargs="*", default=[], help="also: sae MAPs at these weights"
    )
    parser.add_argument("--example-sizes", type=int, nargs="*", default=[5, 20], help="examples per search")
    parser.add_argument("--example-seeds", type=int, default=3, help="draws of examples per query and size")
    parser.add_argument("--examples-only", action="store_true", help="only the search-by-example table")
    args = parser.parse_args()
    build(args.db, {CORPUS: mixed_corpus(), FILMS: film_corpus()})
    labelled = labelled_copy(args.db, [CORPUS, FILMS])
    embedder = SentenceEmbedder.load(DEFAULT_SENTENCE_MODEL)
    if args.examples_only:
        print_by_example(*by_example(labelled, embedder, args.example_sizes, args.example_seeds), args.example_sizes)
        return
    options = {
        "n_concepts": args.concepts,
        "temperature": args.temperature,
        "min_score": args.min_score,
        "exemplar_weight": args.exemplar_weight,
    }
    print(f"options: {options}")
    shipped = evaluate(args.db, embedder, ("sae", "dense", "fused"), options, args.show_concepts)
    corpus = evaluate(labelled, embedder, ("sae", "fused"), options, args.show_concepts)
    columns = {
        "sae (shipped)": lambda q: shipped[(q, "sae")],
        "sae (corpus)": lambda q: corpus[(q, "sae")],
        "dense": lambda q: shipped[(q, "dense")],
        "fused (shipped)": lambda q: shipped[(q, "fused")],
        "fused (corpus)": lambda q: corpus[(q, "fused")],
    }
    with Store.open(args.db, read_only=True) as store:
        docs = store.query("SELECT meta->>'source' AS source, meta->>'label' AS label FROM documents")
    header = f"| {'query':<46} | {'kind':<9} | rel. | " + " | ".join(f"{c:>15}" for c in columns) + " |"
    print_header(
        "average precision over the whole ranking (labels: shipped with the SAE / token labels from this corpus)",
        header,
    )
    for query in QUERIES:
        cells = " | ".join(f"{columns[c](query.text):>15.3f}" for c in columns)
        print(f"| {query.text:<46} | {query.kind:<9} | {docs.filter(query.relevant).height:>4} | {cells} |")
    for kind in KINDS:
        chosen = [q.text for q in QUERIES if kind is None or q.kind == kind]
        cells = " | ".join(f"{np.mean([columns[c](q) for q in chosen]):>15.3f}" for c in columns)
        name = f"**MAP {kind or 'all'}** ({len(chosen)} queries)"
        print(f"| {name:<46} | {'':<9} | {'':>4} | {cells} |")
    if args.oracle:
        print("\nthe best single concept per query (token labels from this corpus)")
        best_single_concepts(labelled, embedder, args.min_score)
    sweeps = [("n_concepts", "k", k) for k in args.sweep_concepts]
    sweeps += [("exemplar_weight", "exemplar weight", w) for w in args.sweep_exemplar_weights]
    if sweeps:
        print("\nsae with token labels from this corpus (MAP non-topic / topic / all)")
    for option, name, value in sweeps:
        swept = evaluate(labelled, embedder, ("sae",), {**options, option: value}, False)
        maps = [np.mean([swept[(q.text, "sae")] for q in QUERIES if kind is None or q.kind == kind]) for kind in KINDS]
        print(f"  {name} = {value:>4}: " + " / ".join(f"{m:.3f}" for m in maps))
    if args.example_sizes:
        print_by_example(*by_example(labelled, embedder, args.example_sizes, args.example_seeds), args.example_sizes)


if __name__ == "__main__":
    main()
