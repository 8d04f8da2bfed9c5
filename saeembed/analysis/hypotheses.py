"""Hypotheses from a diff, verified on held-out documents (the LLM step of Jiang et al. 2025's diffing).

A diff's top concepts are many and overlapping; an LLM reads them (labels, frequencies on each side and
one marked example each) and writes at most `MAX_HYPOTHESES` plain-language statements of how A differs
from B. The LLM's word is not the result: each hypothesis is then judged, document by document, on a
random sample of both sides that excludes the examples it was shown, and what is reported is how often
it holds on each side with the diff's own test (score / Fisher, or McNemar for paired sides) and
Benjamini–Hochberg q-values over the hypotheses.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import polars as pl

from saeembed.analysis.diff import (
    ALPHA,
    independent_statistics,
    optional_predicate,
    paired_documents,
    paired_statistics,
    side_documents,
    sides,
)
from saeembed.concepts.llm import (
    ChatBackend,
    MalformedAnswer,
    Message,
    complete_many,
    complete_parsed,
    json_object,
    judge_messages,
    parse_judgement,
)
from saeembed.concepts.provenance import current_labels
from saeembed.errors import SaeembedError
from saeembed.model.tokens import load_tokenizer, mark_context
from saeembed.storage.percentiles import presence_thresholds, recorded_presence
from saeembed.storage.store import RunInfo, Store

MAX_HYPOTHESES = 10
"""At most this many hypotheses per diff, as in the reference toolkit."""
PROMPT_CONCEPTS = 20
"""Top concepts of the diff shown to the LLM."""
JUDGED_PER_SIDE = 40
"""Held-out documents (or pairs) per side on which each hypothesis is judged."""


class HypothesisResult(NamedTuple):
    analysis_id: int
    """The diff the hypotheses explain (its rows are in `diff_hypotheses` under this id)."""
    judged_a: int
    """Held-out documents (pairs, for a paired diff) of side A the hypotheses were judged on."""
    judged_b: int
    """Held-out documents of side B (equal to judged_a for a paired diff)."""
    table: pl.DataFrame
    """One row per hypothesis: hypothesis_id, hypothesis, more_in ('A' or 'B', the LLM's claim), n_a,
    n_b (judged documents where the judge said it holds), size_a, size_b (judgements that parsed),
    freq_a, freq_b, delta, ci_low, ci_high, p_value, q_value, test, confirmed (q < 0.05 and delta on
    the claimed side)."""


def hypothesis_messages(concepts: pl.DataFrame) -> list[Message]:
    """The summarising prompt: the diff's top concepts (label, freq_a, freq_b, example) → JSON
    {"hypotheses": [{"hypothesis": "...", "more_in": "A" | "B"}, …]}."""
    lines = []
    for number, row in enumerate(concepts.iter_rows(named=True), start=1):
        example = " ".join(str(row["example"] or "").split())[:300]
        lines.append(
            f'{number}. "{row["label"] or "unlabelled"}": in {row["freq_a"]:.0%} of A, {row["freq_b"]:.0%} of B. '
            f"Example ({row['side']}): {example}"
        )
    content = "\n\n".join(
        [
            "Two collections of texts, A and B, were compared concept by concept. These concepts differ most "
            "in how often they occur (an example text of each is given from the side where it is more "
            "frequent, with the tokens where it fires marked «like this»):",
            "\n".join(lines),
            f"Summarise the differences between A and B in at most {MAX_HYPOTHESES} hypotheses. Each must be "
            'a property that one can check on a single text (for example "mentions a sports team" or '
            '"is written as a bulleted list"), more common on one side. Merge concepts that describe the '
            "same difference.",
            'Answer with only a JSON object: {"hypotheses": [{"hypothesis": "<a property of a text>", '
            '"more_in": "A" or "B"}, …]}',
        ]
    )
    return [{"role": "user", "content": content}]


def parse_hypotheses(text: str) -> list[tuple[str, str]]:
    """(hypothesis, 'A' | 'B') pairs from an answer to `hypothesis_messages`, at most MAX_HYPOTHESES,
    duplicates dropped; MalformedAnswer when there is none."""
    answer = json_object(text)
    items = answer.get("hypotheses") if answer is not None else None
    if not isinstance(items, list):
        raise MalformedAnswer(f'hypotheses answer has no "hypotheses" list: {" ".join(text.split())[:80]!r}')
    found: dict[str, str] = {}
    for item in items:
        if isinstance(item, str):
            statement, side = item, "A"
        elif isinstance(item, dict) and isinstance(item.get("hypothesis"), str):
            statement, side = item["hypothesis"], str(item.get("more_in", "A")).strip().upper()
        else:
            continue
        statement = " ".join(statement.split())
        if statement and statement.lower() not in {s.lower() for s in found}:
            found[statement] = side if side in ("A", "B") else "A"
    if not found:
        raise MalformedAnswer(f"hypotheses answer lists no hypothesis: {' '.join(text.split())[:80]!r}")
    return list(found.items())[:MAX_HYPOTHESES]


def verify_hypotheses(
    store: Store,
    analysis_id: int,
    chat: ChatBackend,
    *,
    concepts: int = PROMPT_CONCEPTS,
    judged_per_side: int = JUDGED_PER_SIDE,
    concurrency: int = 4,
    seed: int = 0,
) -> HypothesisResult:
    """Hypotheses for diff `analysis_id` (an A-vs-B diff), each judged on held-out documents of both
    sides; rows stored in `diff_hypotheses` (replacing earlier ones for this diff)."""
    started = time.perf_counter()
    if judged_per_side < 2:
        raise SaeembedError(f"judged documents per side must be at least 2, got {judged_per_side}")
    params, inputs = _diff_analysis(store, analysis_id)
    run_a, run_b = store.run(inputs["run_a"]), store.run(inputs["run_b"])
    with_meta = params["paired_on"] is not None
    pred_a = optional_predicate(params["where_a"], "--where-a")
    pred_b = optional_predicate(params["where_b"], "--where-b")
    side_a = side_documents(store, run_a, pred_a, "A", with_meta=with_meta)
    side_b = side_documents(store, run_b, pred_b, "B", with_meta=with_meta)
    top = _top_concepts(store, analysis_id, concepts, run_a.sae_id, store.corpus_id(params["a"]))
    shown = _examples(store, run_a, run_b, side_a, side_b, top, recorded_presence(params))
    hypotheses = complete_parsed(chat, hypothesis_messages(shown), parse_hypotheses, max_tokens=800, temperature=0.0)

    # Held out: never a document the LLM saw as an example.
    seen = set(shown["doc_id"].drop_nulls().to_list())
    rng = np.random.default_rng(seed)
    if params["paired_on"] is not None:
        pairs = paired_documents(side_a, side_b, params["paired_on"])
        pairs = pairs.filter(~pl.col("doc_a").is_in(seen) & ~pl.col("doc_b").is_in(seen))
        picked = pairs[np.sort(rng.permutation(pairs.height)[:judged_per_side]).tolist()]
        docs_a, docs_b = picked["doc_a"].to_list(), picked["doc_b"].to_list()
    else:
        docs_a, docs_b = (
            _sample(side["doc_id"].filter(~side["doc_id"].is_in(seen)), judged_per_side, rng)
            for side in (side_a, side_b)
        )
    if len(docs_a) < 2 or len(docs_b) < 2:
        raise SaeembedError(
            f"too few held-out documents to judge the hypotheses on (A: {len(docs_a)}, B: {len(docs_b)})"
        )
    texts = dict(store.rows("document_texts", {"doc_ids": docs_a + docs_b}).iter_rows())
    requests = [judge_messages(statement, texts[doc_id]) for statement, _ in hypotheses for doc_id in docs_a + docs_b]
    answers = complete_many(
        chat, requests, max_tokens=20, temperature=0.0, concurrency=concurrency, parse=parse_judgement
    )
    verdicts = np.array([_verdict(answer) for answer in answers], dtype=float).reshape(len(hypotheses), -1)
    table = _statistics(
        hypotheses, verdicts[:, : len(docs_a)], verdicts[:, len(docs_a) :], paired=params["paired_on"] is not None
    )
    seconds = round(time.perf_counter() - started, 3)
    store.replace_rows(analysis_id, {"diff_hypotheses": table.with_columns(pl.lit(seconds).alias("seconds"))})
    return HypothesisResult(analysis_id, len(docs_a), len(docs_b), table)


def _diff_analysis(store: Store, analysis_id: int) -> tuple[dict, dict]:
    stored = store.analysis(analysis_id)
    if stored.kind != "diff" or "b" not in stored.params:
        raise SaeembedError(f"analysis {analysis_id} is not an A-vs-B diff ({stored.kind}): hypotheses explain A vs B")
    return stored.params, stored.inputs


def _top_concepts(store: Store, analysis_id: int, concepts: int, sae_id: int, corpus_id: int) -> pl.DataFrame:
    top = store.rows("diff_hypothesis_concepts", {"analysis_id": analysis_id, "top": concepts, "alpha": ALPHA})
    if top.height == 0:
        raise SaeembedError(f"diff {analysis_id} has no concept with q < {ALPHA}: there is no difference to summarise")
    labels = current_labels(store, sae_id, corpus_id).select("feature_id", "label")
    return top.join(labels, on="feature_id", how="left").sort("rank")


def _examples(
    store: Store,
    run_a: RunInfo,
    run_b: RunInfo,
    side_a: pl.DataFrame,
    side_b: pl.DataFrame,
    top: pl.DataFrame,
    presence: float,
) -> pl.DataFrame:
    """top with side ('A' where the concept is more frequent, else 'B'), doc_id and example: that side's
    strongest document for the concept where it counts as present (`presence` as in the diff), its peak
    token marked."""
    with sides(store, side_a, side_b, presence_thresholds(store, run_a.run_id, run_b.run_id, presence)):
        strongest = store.rows(
            "diff_examples",
            {"run_a": run_a.run_id, "run_b": run_b.run_id, "feature_ids": top["feature_id"].to_list()},
        )
    offsets = load_tokenizer(run_a.reader_model).offsets(strongest["text"].to_list())
    strongest = strongest.with_columns(
        pl.Series(
            "example",
            [
                mark_context(t, o, p)
                for t, o, p in zip(strongest["text"], offsets, strongest["argmax_pos"], strict=True)
            ],
            dtype=pl.Utf8,
        ),
        pl.col("side").str.to_uppercase(),
    ).select("feature_id", "side", "doc_id", "example")
    with_side = top.with_columns(pl.when(pl.col("delta") >= 0).then(pl.lit("A")).otherwise(pl.lit("B")).alias("side"))
    return with_side.join(strongest, on=["feature_id", "side"], how="left").sort("rank")


def _sample(doc_ids: pl.Series, n: int, rng: np.random.Generator) -> list[int]:
    values = doc_ids.to_numpy()
    return np.sort(rng.permutation(values)[:n]).tolist()


def _verdict(answer: str | Exception) -> float:
    """1 / 0 for a yes / no judgement, NaN when the request failed or the answer did not parse."""
    if isinstance(answer, Exception):
        return np.nan
    try:
        return float(parse_judgement(answer))
    except MalformedAnswer:
        return np.nan


def _statistics(
    hypotheses: Sequence[tuple[str, str]], on_a: np.ndarray, on_b: np.ndarray, *, paired: bool
) -> pl.DataFrame:
    """Each hypothesis's frequency on both sides with the diff's test, over the judgements that parsed
    (for a paired diff, the pairs where both did); BH q-values over the hypotheses."""
    from statsmodels.stats.multitest import multipletests

    rows = []
    for i, (statement, more_in) in enumerate(hypotheses):
        if paired:
            valid = ~np.isnan(on_a[i]) & ~np.isnan(on_b[i])
            a, b = on_a[i][valid], on_b[i][valid]
            if valid.sum() == 0:
                rows.append(None)
                continue
            counts = pl.DataFrame(
                {"feature_id": [i], "n_a": [int(a.sum())], "n_b": [int(b.sum())], "n_both": [int((a * b).sum())]}
            )
            row = paired_statistics(counts, int(valid.sum())).row(0, named=True)
            size_a = size_b = int(valid.sum())
        else:
            a, b = on_a[i][~np.isnan(on_a[i])], on_b[i][~np.isnan(on_b[i])]
            if a.size == 0 or b.size == 0:
                rows.append(None)
                continue
            counts = pl.DataFrame({"feature_id": [i], "n_a": [int(a.sum())], "n_b": [int(b.sum())]})
            row = independent_statistics(counts, a.size, b.size).row(0, named=True)
            size_a, size_b = a.size, b.size
        rows.append(
            {
                "hypothesis_id": i + 1,
                "hypothesis": statement,
                "more_in": more_in,
                "n_a": row["n_a"],
                "n_b": row["n_b"],
                "size_a": size_a,
                "size_b": size_b,
                **{k: row[k] for k in ("freq_a", "freq_b", "delta", "ci_low", "ci_high", "p_value", "test")},
            }
        )
    judged = [row for row in rows if row is not None]
    if not judged:
        raise SaeembedError("no judgement of any hypothesis could be read: check the LLM backend")
    table = pl.DataFrame(judged)
    q_value = multipletests(table["p_value"].to_numpy(), method="fdr_bh")[1]
    claimed = pl.when(pl.col("more_in") == "A").then(pl.col("delta") > 0).otherwise(pl.col("delta") < 0)
    return table.with_columns(pl.Series("q_value", q_value)).with_columns(
        ((pl.col("q_value") < ALPHA) & claimed).alias("confirmed")
    )
