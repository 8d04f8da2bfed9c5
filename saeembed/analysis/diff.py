"""Dataset diffing: which concepts are more frequent in A than in B, with real statistics.

freq_D(i) is the share of D's documents where concept i is present (Jiang et al. 2025). Counting is a
GROUP BY in DuckDB over the long `doc_features` table, so it never builds a documents × concepts matrix.
Present means that the concept's max activation reaches `presence_threshold` (0.5) times its p90 over the
runs compared (saeembed/storage/percentiles.py); 0 counts any firing, the paper's definition. With any firing, the
broad weak firings of max pooling dominate: in benchmarks/quality_diff.py's planted difference, 2 of the
top 5 concepts were specific to the planted class (precision ≥ 0.7), and 5 of 5 at 0.5.
Each concept gets Δ = freq_A − freq_B with a 95% confidence interval, a p-value and a
Benjamini–Hochberg q-value:

- independent sides: the score test for two proportions with Newcombe's interval (statsmodels), and
  Fisher's exact test where an expected cell count is below 5;
- paired sides (`paired_on`: the same prompt answered on both sides, e.g. two model releases):
  McNemar's test on the discordant pairs (exact binomial below 25 of them) with a Wald interval for
  the paired difference;
- one-vs-rest (`diff_by`): each level of a metadata column against all other documents.

Default ranking ("specific"): the lower 95% bound of |log risk ratio| (Katz interval, +0.5 smoothing)
among concepts with q < 0.05 and |Δ| ≥ min_delta. Ranking by raw Δ surfaces concepts present in most
documents of both sides, whose small relative change is large in absolute terms; the risk-ratio bound
prefers concepts that are much more frequent on one side and have the evidence to show it. Δ stays
available (`rank_by="delta"`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Literal, NamedTuple

import numpy as np
import polars as pl
from scipy import stats

from saeembed.analysis.presence import count_present
from saeembed.errors import SaeembedError
from saeembed.model.tokens import load_tokenizer, mark_context
from saeembed.options import DiffOptions
from saeembed.storage.percentiles import DEFAULT_PRESENCE, presence_thresholds, recorded_presence
from saeembed.storage.predicates import Predicate, parse_predicate
from saeembed.storage.store import RunInfo, Store

RankBy = Literal["specific", "delta", "q"]
ALPHA = 0.05
"""q-value below which a difference counts as significant in the default ranking."""
Z95 = stats.norm.ppf(0.975)
EXACT_MCNEMAR_BELOW = 25
"""Discordant pairs below which McNemar's test is the exact binomial one (the chi-square needs more)."""


class DiffResult(NamedTuple):
    analysis_id: int
    """Key of the analysis in `analyses` and `diff_results`."""
    n_a: int
    """Documents (or pairs) on side A."""
    n_b: int
    """Documents (or pairs) on side B."""
    test: str
    """'independent' (score / Fisher), 'paired' (McNemar) or 'one-vs-rest'."""
    table: pl.DataFrame
    """The top rows in ranking order: grp, rank, feature_id, label, label_source, label_score, peak_tokens,
    freq_a, freq_b, delta, ratio, ci_low, ci_high, p_value, q_value, test, n_a, n_b, example_a, example_b
    (firing token «marked»)."""


RESULT_COLUMNS = [
    "grp",
    "feature_id",
    "n_a",
    "n_b",
    "freq_a",
    "freq_b",
    "delta",
    "ratio",
    "ci_low",
    "ci_high",
    "p_value",
    "q_value",
    "test",
    "rank",
]
"""The columns of a diff that `diff_results` keeps."""


def diff(
    store: Store,
    a: str,
    b: str,
    *,
    where_a: str | None = None,
    where_b: str | None = None,
    paired_on: str | None = None,
    min_delta: float = 0.03,
    top: int = 50,
    rank_by: RankBy = "specific",
    presence_threshold: float = DEFAULT_PRESENCE,
) -> DiffResult:
    """Concepts whose frequency differs between corpus `a` (optionally restricted by `where_a`) and
    corpus `b` (by `where_b`), a concept counting as present in a document where its max activation is at
    least `presence_threshold` × its p90; results are stored in `diff_results` under a new analysis id."""
    started = time.perf_counter()
    DiffOptions(
        a=a,
        b=b,
        where_a=where_a,
        where_b=where_b,
        paired_on=paired_on,
        min_delta=min_delta,
        top=top,
        rank_by=rank_by,
        presence_threshold=presence_threshold,
    )
    pred_a, pred_b = optional_predicate(where_a, "--where-a"), optional_predicate(where_b, "--where-b")
    run_a, run_b = store.latest_run(a), store.latest_run(b)
    if run_a.sae_id != run_b.sae_id:
        raise SaeembedError(f"corpora '{a}' and '{b}' were embedded with different SAEs: their concepts differ")
    side_a = side_documents(store, run_a, pred_a, "A", with_meta=paired_on is not None)
    side_b = side_documents(store, run_b, pred_b, "B", with_meta=paired_on is not None)
    params = {
        "a": a,
        "b": b,
        "where_a": None if pred_a is None else pred_a.text,
        "where_b": None if pred_b is None else pred_b.text,
        "paired_on": paired_on,
        "min_delta": min_delta,
        "rank_by": rank_by,
        "presence_threshold": presence_threshold,
    }
    thresholds = presence_thresholds(store, run_a.run_id, run_b.run_id, presence_threshold)
    with sides(store, side_a, side_b, thresholds):
        if paired_on is not None:
            pairs = paired_documents(side_a, side_b, paired_on)
            counts = store.rows("diff_paired_counts", {"run_a": run_a.run_id, "run_b": run_b.run_id}, diff_pairs=pairs)
            table = paired_statistics(counts, pairs.height)
            n_a = n_b = pairs.height
            test = "paired"
        else:
            overlap = store.rows("diff_overlap")["n"][0]
            if overlap:
                raise SaeembedError(
                    f"sides A and B share {overlap} documents: make the predicates exclusive "
                    "(or use --paired-on for answers to the same prompts)"
                )
            groups = pl.concat(
                [side_a.select("doc_id", pl.lit(0).alias("group")), side_b.select("doc_id", pl.lit(1).alias("group"))]
            )
            n_present = count_present(store, run_a, run_b, groups, thresholds).n
            seen = np.flatnonzero(n_present.sum(axis=0))
            counts = pl.DataFrame(
                {"feature_id": seen.astype(np.int32), "n_a": n_present[0, seen], "n_b": n_present[1, seen]}
            )
            table = independent_statistics(counts, side_a.height, side_b.height)
            n_a, n_b, test = side_a.height, side_b.height, "independent"
        table = rank(table.with_columns(pl.lit(None, dtype=pl.Utf8).alias("grp")), min_delta, rank_by)
        inputs = {"n_a": n_a, "n_b": n_b, "run_a": run_a.run_id, "run_b": run_b.run_id}
        analysis_id = store.record(
            "diff", params, inputs, time.perf_counter() - started, {"diff_results": table.select(RESULT_COLUMNS)}
        )
        shown = _with_labels(store, run_a, table.filter(pl.col("passes") & (pl.col("rank") <= top)))
        shown = _with_examples(store, run_a, run_b, shown)
    return DiffResult(analysis_id, n_a, n_b, test, shown)


def diff_by(
    store: Store,
    corpus: str,
    column: str,
    *,
    where: str | None = None,
    min_delta: float = 0.03,
    top: int = 50,
    rank_by: RankBy = "specific",
    presence_threshold: float = DEFAULT_PRESENCE,
) -> DiffResult:
    """One-vs-rest: for each level of metadata column `column`, its documents against all the others
    (`presence_threshold` as in `diff`)."""
    started = time.perf_counter()
    DiffOptions(
        a=corpus,
        by=column,
        where=where,
        min_delta=min_delta,
        top=top,
        rank_by=rank_by,
        presence_threshold=presence_threshold,
    )
    predicate = optional_predicate(where, "--where")
    run = store.latest_run(corpus)
    docs = side_documents(store, run, predicate, "the corpus", with_meta=True)
    levels = _levels(docs, column)
    missing = docs.height - levels.height
    sizes = levels.group_by("level").len().sort("level")
    if sizes.height < 2:
        raise SaeembedError(
            f"--by {column}: needs at least two levels, found {sizes.height} "
            f"({missing} of {docs.height} documents have no '{column}' in meta)"
        )
    total = levels.height
    thresholds = presence_thresholds(store, run.run_id, run.run_id, presence_threshold)
    n_present = count_present(store, run, run, levels.rename({"level": "group"}), thresholds).n  # rows: as `sizes`
    overall = n_present.sum(axis=0)
    seen = np.flatnonzero(overall)
    frames = []
    for group, (level, size) in enumerate(sizes.iter_rows()):
        level_counts = pl.DataFrame(
            {
                "feature_id": seen.astype(np.int32),
                "n_a": n_present[group, seen],
                "n_b": overall[seen] - n_present[group, seen],
            }
        )
        stats_table = independent_statistics(level_counts, size, total - size)
        frames.append(rank(stats_table.with_columns(pl.lit(level).alias("grp")), min_delta, rank_by))
    table = pl.concat(frames)
    params = {
        "corpus": corpus,
        "by": column,
        "where": None if predicate is None else predicate.text,
        "min_delta": min_delta,
        "rank_by": rank_by,
        "presence_threshold": presence_threshold,
    }
    inputs = {"documents": total, "without_level": missing, "levels": dict(sizes.iter_rows()), "run": run.run_id}
    analysis_id = store.record(
        "diff", params, inputs, time.perf_counter() - started, {"diff_results": table.select(RESULT_COLUMNS)}
    )
    shown = _with_labels(store, run, table.filter(pl.col("passes") & (pl.col("rank") <= top)))
    examples = _level_examples(store, run, levels, shown, thresholds)
    return DiffResult(analysis_id, total, total, "one-vs-rest", examples)


def load_diff(store: Store, analysis_id: int, *, top: int = 50) -> DiffResult:
    """A stored diff as `diff` (or `diff_by`) returned it: per group, the first `top` concepts that pass
    its filters, with labels and examples (for reports made later, e.g. `saeembed report`)."""
    stored = store.analysis(analysis_id)
    if stored.kind != "diff":
        raise SaeembedError(f"analysis {analysis_id} is a {stored.kind!r}, not a diff")
    params, inputs = stored.params, stored.inputs
    table = store.rows("diff_stored", {"analysis_id": analysis_id})
    passes = pl.col("delta").abs() >= params["min_delta"]
    if params["rank_by"] == "specific":
        passes = passes & (pl.col("q_value") < ALPHA)
    table = table.filter(passes & (pl.col("rank") <= top))
    presence = recorded_presence(params)
    if "by" in params:
        run = store.run(inputs["run"])
        docs = side_documents(store, run, optional_predicate(params["where"], "--where"), "the corpus", with_meta=True)
        shown = _with_labels(store, run, table)
        thresholds = presence_thresholds(store, run.run_id, run.run_id, presence)
        shown = _level_examples(store, run, _levels(docs, params["by"]), shown, thresholds)
        return DiffResult(analysis_id, inputs["documents"], inputs["documents"], "one-vs-rest", shown)
    run_a, run_b = store.run(inputs["run_a"]), store.run(inputs["run_b"])
    side_a = side_documents(store, run_a, optional_predicate(params["where_a"], "--where-a"), "A", with_meta=False)
    side_b = side_documents(store, run_b, optional_predicate(params["where_b"], "--where-b"), "B", with_meta=False)
    with sides(store, side_a, side_b, presence_thresholds(store, run_a.run_id, run_b.run_id, presence)):
        shown = _with_examples(store, run_a, run_b, _with_labels(store, run_a, table))
    test = "paired" if params["paired_on"] else "independent"
    return DiffResult(analysis_id, inputs["n_a"], inputs["n_b"], test, shown)


def _levels(docs: pl.DataFrame, column: str) -> pl.DataFrame:
    """doc_id, level (meta `column` as text) of the documents that have one."""
    return docs.select("doc_id", pl.col("meta").str.json_path_match(f"$.{column}").alias("level")).drop_nulls("level")


def _level_examples(
    store: Store, run: RunInfo, levels: pl.DataFrame, shown: pl.DataFrame, thresholds: pl.DataFrame
) -> pl.DataFrame:
    """shown with examples: for each group, its level's documents against the rest."""
    parts = []
    for (level,), rows in shown.group_by("grp", maintain_order=True):
        in_level = levels.filter(pl.col("level") == level)
        rest = levels.filter(pl.col("level") != level)
        with sides(store, in_level, rest, thresholds):
            parts.append(_with_examples(store, run, run, rows))
    return pl.concat(parts) if parts else _with_examples(store, run, run, shown)


# -- statistics --------------------------------------------------------------------------------------


def independent_statistics(counts: pl.DataFrame, size_a: int, size_b: int) -> pl.DataFrame:
    """Per concept (feature_id, n_a, n_b present), Δ with Newcombe's 95% interval, the score test's
    p-value (Fisher's exact where an expected cell is below 5) and BH q-values."""
    from statsmodels.stats.multitest import multipletests
    from statsmodels.stats.proportion import confint_proportions_2indep, test_proportions_2indep

    if size_a == 0 or size_b == 0:
        raise SaeembedError(f"a side of the diff has no documents (A: {size_a}, B: {size_b})")
    n_a, n_b = counts["n_a"].to_numpy().astype(np.int64), counts["n_b"].to_numpy().astype(np.int64)
    freq_a, freq_b = n_a / size_a, n_b / size_b
    with np.errstate(divide="ignore", invalid="ignore"):
        p_value = test_proportions_2indep(n_a, size_a, n_b, size_b, method="score", compare="diff").pvalue
        ci_low, ci_high = confint_proportions_2indep(n_a, size_a, n_b, size_b, method="newcomb", compare="diff")
    p_value = np.where(np.isnan(p_value), 1.0, p_value)  # both sides 0 (or all): no evidence of a difference
    pooled = (n_a + n_b) / (size_a + size_b)
    small = np.minimum.reduce([pooled * size_a, pooled * size_b, (1 - pooled) * size_a, (1 - pooled) * size_b]) < 5
    test = np.where(small, "fisher", "two-proportion score")
    for i in np.flatnonzero(small):
        table = [[n_a[i], size_a - n_a[i]], [n_b[i], size_b - n_b[i]]]
        p_value[i] = stats.fisher_exact(table).pvalue
    q_value = multipletests(p_value, method="fdr_bh")[1]
    return counts.with_columns(
        pl.Series("freq_a", freq_a),
        pl.Series("freq_b", freq_b),
        pl.Series("delta", freq_a - freq_b),
        pl.Series("ratio", np.where(n_b > 0, freq_a / np.maximum(freq_b, 1e-300), np.nan)).fill_nan(None),
        pl.Series("ci_low", np.asarray(ci_low, dtype=float)),
        pl.Series("ci_high", np.asarray(ci_high, dtype=float)),
        pl.Series("p_value", p_value),
        pl.Series("q_value", q_value),
        pl.Series("test", test),
        pl.Series("specificity", _log_ratio_lower_bound(n_a, size_a, n_b, size_b)),
    )


def paired_statistics(counts: pl.DataFrame, pairs: int) -> pl.DataFrame:
    """Per concept (feature_id, n_a, n_b, n_both over `pairs` pairs), McNemar's test on the discordant
    pairs, the paired Δ with its Wald interval, and BH q-values."""
    from statsmodels.stats.multitest import multipletests

    if pairs == 0:
        raise SaeembedError("no pairs: no value of the --paired-on column appears on both sides")
    n_a, n_b = counts["n_a"].to_numpy().astype(np.int64), counts["n_b"].to_numpy().astype(np.int64)
    both = counts["n_both"].to_numpy().astype(np.int64)
    only_a, only_b = n_a - both, n_b - both
    discordant = only_a + only_b
    delta = (only_a - only_b) / pairs
    # Exact McNemar: the smaller discordant count under Binomial(b + c, ½), two-sided; chi-square with
    # continuity correction (Edwards) once there are enough discordant pairs.
    exact = np.minimum(1.0, 2 * stats.binom.cdf(np.minimum(only_a, only_b), discordant, 0.5))
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = (np.abs(only_a - only_b) - 1.0) ** 2 / discordant
    p_value = np.where(discordant < EXACT_MCNEMAR_BELOW, exact, stats.chi2.sf(chi2, 1))
    p_value = np.where(discordant == 0, 1.0, p_value)
    se = np.sqrt(np.maximum(discordant - (only_a - only_b) ** 2 / pairs, 0)) / pairs
    q_value = multipletests(p_value, method="fdr_bh")[1]
    return counts.drop("n_both").with_columns(
        pl.Series("freq_a", n_a / pairs),
        pl.Series("freq_b", n_b / pairs),
        pl.Series("delta", delta),
        pl.Series("ratio", np.where(n_b > 0, n_a / np.maximum(n_b, 1), np.nan)).fill_nan(None),
        pl.Series("ci_low", delta - Z95 * se),
        pl.Series("ci_high", delta + Z95 * se),
        pl.Series("p_value", p_value),
        pl.Series("q_value", q_value),
        pl.Series("test", np.where(discordant < EXACT_MCNEMAR_BELOW, "mcnemar exact", "mcnemar")),
        pl.Series("specificity", _log_ratio_lower_bound(n_a, pairs, n_b, pairs)),
    )


def _log_ratio_lower_bound(n_a: np.ndarray, size_a: int, n_b: np.ndarray, size_b: int) -> np.ndarray:
    """Lower 95% bound of |log(freq_a / freq_b)| (Katz log interval with 0.5 added to every count);
    0 when the interval contains 0."""
    a, b = n_a + 0.5, n_b + 0.5
    log_ratio = np.log(a / (size_a + 0.5)) - np.log(b / (size_b + 0.5))
    se = np.sqrt(1 / a - 1 / (size_a + 0.5) + 1 / b - 1 / (size_b + 0.5))
    return np.maximum(np.abs(log_ratio) - Z95 * se, 0.0)


def rank(table: pl.DataFrame, min_delta: float, rank_by: RankBy) -> pl.DataFrame:
    """Add `rank` (1 = first) and `passes`: concepts passing the filters (q < ALPHA and |Δ| ≥ min_delta
    for the default ranking; |Δ| ≥ min_delta otherwise) first, in the chosen order, then all others."""
    passes = pl.col("delta").abs() >= min_delta
    if rank_by == "specific":
        passes = passes & (pl.col("q_value") < ALPHA)
        order = [pl.col("specificity"), pl.col("delta").abs()]
    elif rank_by == "delta":
        order = [pl.col("delta").abs(), -pl.col("q_value")]
    else:
        order = [-pl.col("q_value"), pl.col("delta").abs()]
    ranked = table.with_columns(passes.alias("passes")).sort(
        [pl.col("passes"), *order, -pl.col("feature_id")], descending=True
    )
    return ranked.with_columns(pl.int_range(1, pl.len() + 1).alias("rank"))


# -- plumbing ----------------------------------------------------------------------------------------


def optional_predicate(predicate: str | None, option: str) -> Predicate | None:
    """`predicate` parsed and checked (see saeembed.storage.predicates), or None."""
    return None if predicate is None else parse_predicate(predicate, option)


def side_documents(
    store: Store, run: RunInfo, predicate: Predicate | None, side: str, *, with_meta: bool
) -> pl.DataFrame:
    """doc_id (and meta, with `with_meta`) of the run's documents satisfying `predicate`."""
    docs = store.rows("diff_side_documents", {"run_id": run.run_id, "with_meta": with_meta})
    if predicate is not None:
        docs = docs.filter(store.predicate_mask(docs["doc_id"].to_numpy(), run, predicate))
    if docs.height == 0:
        raise SaeembedError(f"side {side} has no documents: corpus '{run.corpus}' with that predicate is empty")
    return docs


def paired_documents(side_a: pl.DataFrame, side_b: pl.DataFrame, column: str) -> pl.DataFrame:
    """doc_a, doc_b: A's and B's documents with one value of meta `column` (each value once per side)."""
    keyed = []
    for side, docs in (("A", side_a), ("B", side_b)):
        keys = docs.select("doc_id", pl.col("meta").str.json_path_match(f"$.{column}").alias("key")).drop_nulls()
        duplicated = keys.filter(pl.col("key").is_duplicated())
        if duplicated.height:
            example = duplicated["key"][0]
            raise SaeembedError(
                f"--paired-on {column}: side {side} has {duplicated.height} documents sharing a value "
                f"(e.g. {example!r}); each value must appear once per side"
            )
        keyed.append(keys)
    return (
        keyed[0]
        .join(keyed[1], on="key", suffix="_b")
        .select(pl.col("doc_id").alias("doc_a"), pl.col("doc_id_b").alias("doc_b"))
        .sort("doc_a")
    )


def sides(
    store: Store, side_a: pl.DataFrame, side_b: pl.DataFrame, thresholds: pl.DataFrame
) -> AbstractContextManager[None]:
    """The tables the diff's SQL reads while the block runs: each side's doc_ids, and the concepts'
    presence thresholds."""
    return store.registered(
        diff_side_a=side_a.select("doc_id"), diff_side_b=side_b.select("doc_id"), presence_thresholds=thresholds
    )


def _with_labels(store: Store, run: RunInfo, table: pl.DataFrame) -> pl.DataFrame:
    """The rows with each concept's label, its source and score, and its peak tokens in side A's run."""
    from saeembed.concepts.provenance import concept_labels, with_labels

    labels = concept_labels(store, run, table["feature_id"].to_list())
    return with_labels(table, labels).sort(["grp", "rank"], nulls_last=False)


def _with_examples(store: Store, run_a: RunInfo, run_b: RunInfo, table: pl.DataFrame) -> pl.DataFrame:
    """One example per side for each shown concept: its strongest document there, the peak «marked»."""
    feature_ids: Sequence[int] = table["feature_id"].to_list()
    if not feature_ids:
        return table.with_columns(
            pl.lit(None, dtype=pl.Utf8).alias("example_a"), pl.lit(None, dtype=pl.Utf8).alias("example_b")
        )
    examples = store.rows(
        "diff_examples", {"run_a": run_a.run_id, "run_b": run_b.run_id, "feature_ids": list(feature_ids)}
    )
    offsets = load_tokenizer(run_a.reader_model).offsets(examples["text"].to_list())
    marked = [
        mark_context(text, doc_offsets, position)
        for text, position, doc_offsets in zip(examples["text"], examples["argmax_pos"], offsets, strict=True)
    ]
    examples = examples.with_columns(pl.Series("example", marked, dtype=pl.Utf8))
    wide = examples.pivot(on="side", index="feature_id", values="example")
    for side in ("a", "b"):
        if side not in wide.columns:
            wide = wide.with_columns(pl.lit(None, dtype=pl.Utf8).alias(side))
    wide = wide.select("feature_id", pl.col("a").alias("example_a"), pl.col("b").alias("example_b"))
    return table.join(wide, on="feature_id", how="left").sort(["grp", "rank"], nulls_last=False)
