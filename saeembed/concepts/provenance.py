"""What a listing shows beside a concept: its label, where the label was made, its score, and the tokens the
concept peaks on in the corpus at hand, so a label made elsewhere can be checked at a glance.

Every listing (CLI tables, JSON, pages, Prefect artifacts) joins `concept_labels` onto its rows, so the four
columns mean the same everywhere.
"""

from __future__ import annotations

from collections import Counter

import polars as pl

from saeembed.model.tokens import load_tokenizer, token_at
from saeembed.storage.store import RunInfo, Store

LABEL_COLUMNS = ("label", "label_source", "label_score", "peak_tokens")
"""The columns `concept_labels` gives each concept (besides feature_id)."""

PEAK_DOCUMENTS = 10
"""Strongest documents whose peak token is counted per concept."""

PEAK_TOKENS = 3
"""Distinct peak tokens shown per concept, most common first."""

LABELS_SCHEMA = {
    "feature_id": pl.Int32,
    "label": pl.Utf8,
    "label_source": pl.Utf8,
    "label_score": pl.Float64,
    "peak_tokens": pl.Utf8,
}


def current_labels(store: Store, sae_id: int, corpus_id: int | None) -> pl.DataFrame:
    """One label per concept of the SAE, for an analysis of corpus `corpus_id`: this corpus's, else the
    shipped one, else another corpus's (see sql/current_labels.sql), with its label_source."""
    return store.rows("current_labels", {"sae_id": sae_id, "corpus_id": corpus_id})


def concept_labels(store: Store, run: RunInfo, feature_ids: list[int], *, peaks: bool = True) -> pl.DataFrame:
    """feature_id, label, label_source ('this corpus', 'shipped', 'corpus NAME'; see current_labels.sql),
    label_score (the label's offline AUROC, null if unscored) and peak_tokens (the tokens where the concept
    peaks in its strongest documents of `run`, most common first; left out with `peaks=False`, for callers that
    read them from the concept columns) for each of `feature_ids`."""
    wanted = sorted({int(f) for f in feature_ids})
    frame = pl.DataFrame({"feature_id": wanted}, schema={"feature_id": pl.Int32})
    labels = current_labels(store, run.sae_id, store.corpus_id(run.corpus)).select(
        pl.col("feature_id").cast(pl.Int32), "label", "label_source", pl.col("auroc").alias("label_score")
    )
    frame = frame.join(labels, on="feature_id", how="left")
    if not peaks:
        return frame.cast({k: v for k, v in LABELS_SCHEMA.items() if k != "peak_tokens"})
    return frame.join(peak_tokens(store, run, wanted), on="feature_id", how="left").cast(LABELS_SCHEMA)


def peak_tokens(store: Store, run: RunInfo, feature_ids: list[int], *, shown: int = PEAK_TOKENS) -> pl.DataFrame:
    """feature_id, peak_tokens: the stored argmax token of each concept's PEAK_DOCUMENTS strongest documents
    of `run`, most common first (see `count_peaks`)."""
    strongest = store.rows(
        "concept_argmax_documents",
        {"run_id": run.run_id, "feature_ids": list(feature_ids), "per_feature": PEAK_DOCUMENTS},
    )
    return count_peaks(strongest, run.reader_model, shown=shown)


def count_peaks(strongest: pl.DataFrame, reader_model: str, *, shown: int = PEAK_TOKENS) -> pl.DataFrame:
    """feature_id, peak_tokens: from rows of (feature_id, doc_id, argmax_pos, text), each peak token re-found
    with the reader's tokenizer (offsets only, no model; each document tokenized once, however many concepts
    peak in it), the `shown` most common joined by ', '."""
    counts: dict[int, Counter] = {}
    if strongest.height:
        documents = strongest.unique("doc_id", maintain_order=True)
        offsets = dict(
            zip(
                documents["doc_id"].to_list(),
                load_tokenizer(reader_model).offsets(documents["text"].to_list()),
                strict=True,
            )
        )
        for feature_id, doc_id, position, text in strongest.select(
            "feature_id", "doc_id", "argmax_pos", "text"
        ).iter_rows():
            token = token_at(text, offsets[doc_id], position)
            counts.setdefault(feature_id, Counter())[token.strip() or repr(token)] += 1
    return pl.DataFrame(
        {
            "feature_id": list(counts),
            "peak_tokens": [", ".join(t for t, _ in c.most_common(shown)) for c in counts.values()],
        },
        schema={"feature_id": pl.Int32, "peak_tokens": pl.Utf8},
    )


def with_labels(table: pl.DataFrame, labels: pl.DataFrame, *, on: str = "feature_id", suffix: str = "") -> pl.DataFrame:
    """`table` with `concept_labels` joined on column `on` (its order kept); with `suffix`, the label columns are
    named label_a, label_source_a… (for pairs). Label columns `table` already has are replaced."""
    columns = [c for c in LABEL_COLUMNS if c in labels.columns]
    renamed = labels.select(pl.col("feature_id").alias(on), *(pl.col(c).alias(c + suffix) for c in columns))
    kept = table.drop([c + suffix for c in columns], strict=False)
    return kept.join(renamed.cast({on: kept.schema[on]}), on=on, how="left", maintain_order="left")


def is_scored(score: float | None) -> bool:
    """Whether a label has a score to show: an unscored label's AUROC is null, or NaN (no held-out documents)."""
    return score is not None and score == score


def label_note(row: dict, suffix: str = "") -> str:
    """Where a row's label (columns label_source, label_score, peak_tokens + suffix) comes from and what the
    concept peaks on here, in one line: '[shipped 0.83] here: -, *'; '' where the row says neither."""
    source, score = row.get("label_source" + suffix), row.get("label_score" + suffix)
    peaks = row.get("peak_tokens" + suffix)
    notes = [f"[{source}{f' {score:.2f}' if is_scored(score) else ''}]"] if source else []
    notes += [f"here: {peaks}"] if peaks else []
    return " ".join(notes)


def concept_name(concept: dict) -> str:
    """A concept in a short list (a cluster's top concepts, a result's matched concepts): its label and where
    the label was made, '"-" [shipped]', or its id where it has no label."""
    if not concept.get("label"):
        return str(concept["feature_id"])
    return f"{concept['label']} [{concept['label_source']}]" if concept.get("label_source") else concept["label"]
