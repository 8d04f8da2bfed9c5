"""Concept labels: cheap token labels for every concept, LLM labels (auto-interp), and their scores.

- `token_labels`: from the tokens where each concept peaks in its top documents and the words that
  set those documents apart from the corpus (class-based TF-IDF, as BERTopic's c-TF-IDF, with the
  concept's top documents as the class). Offline, all concepts of an 8k SAE in about a minute.
- `llm_labels`: the protocol of Jiang et al. (2025): activating examples with the firing tokens
  marked, as many non-activating ones, the most specific property present in the former and absent
  from the latter, as JSON; then a judge's detection score on held-out examples.
- `embedding_auroc`: the offline score of any label: how well the cosine between the label's sentence
  embedding and a document's separates held-out activating from non-activating documents.

Labels are made from each concept's ranks 1..top_docs and scored on the next ranks, which they never saw.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import polars as pl
import pyarrow as pa
from scipy import sparse

from saeembed.dense import SentenceEmbedder, document_embeddings
from saeembed.errors import SaeembedError
from saeembed.examples import absent_documents, documents_text, ranked_documents, reader_model_of_run
from saeembed.store import Store, first_row
from saeembed.tokens import load_tokenizer, token_at

TOP_DOCS = 20
"""Top documents a label is made from (the paper shows the labeller 10–20)."""
HELDOUT_DOCS = 20
"""Held-out activating (ranks after TOP_DOCS) and as many non-activating documents per score."""
BACKGROUND_DOCS = 20_000
"""Documents sampled for the corpus's word frequencies (the IDF of c-TF-IDF)."""
TOKEN_LABEL_WORDS = 3
"""Distinguishing words in a token label."""
DOMINANT_TOKEN_SHARE = 0.4
"""A concept that peaks on one token in this share of its top documents is named after that token."""

# Words: 3+ letters, no digits; English stop words dropped (sklearn's list).
WORD_PATTERN = r"(?u)\b[^\W\d_]{3,}\b"


class TokenLabel(NamedTuple):
    label: str
    """Short name: the dominant peak token, if any, then the most distinguishing words."""
    description: str
    """Where it peaks and what its top documents mention, with counts."""
    details: dict
    """top_tokens [(token, count)], top_words [(word, share of top docs)], n_top_docs."""


def token_labels(
    store: Store,
    run_id: int,
    feature_ids: Sequence[int] | None = None,
    *,
    top_docs: int = TOP_DOCS,
    seed: int = 0,
    on_progress: Callable[[int], None] | None = None,
) -> pl.DataFrame:
    """feature_id, label, description, details (JSON) for the given concepts (None: every concept
    present in the run). `on_progress(n)` reports concepts labelled."""
    from sklearn.feature_extraction.text import CountVectorizer

    ranked = ranked_documents(store, run_id, feature_ids, first_rank=1, last_rank=top_docs)
    if ranked.height == 0:
        return pl.DataFrame(
            schema={"feature_id": pl.Int32, "label": pl.Utf8, "description": pl.Utf8, "details": pl.Utf8}
        )
    texts = documents_text(store, ranked["doc_id"])
    doc_ids = texts["doc_id"].to_list()
    doc_texts = texts["text"].to_list()
    row_of_doc = {doc_id: i for i, doc_id in enumerate(doc_ids)}

    # Peak tokens, from the stored argmax positions (no model needed).
    offsets = load_tokenizer(reader_model_of_run(store, run_id)).offsets(doc_texts)
    peak = [
        token_at(doc_texts[row_of_doc[d]], offsets[row_of_doc[d]], p).strip()
        for d, p in zip(ranked["doc_id"].to_list(), ranked["argmax_pos"].to_list(), strict=True)
    ]

    # Distinguishing words: share s of the concept's top documents containing the word, against its share b
    # among all documents, scored s·log(s/b) (the word's term of the KL divergence between the two): unlike
    # s·IDF it does not reward words every news article has ("said") just because they are in all top docs.
    vectorizer = CountVectorizer(stop_words="english", token_pattern=WORD_PATTERN, binary=True, min_df=2)
    background = _background_texts(store, run_id, seed)
    counts = vectorizer.fit_transform(background)
    background_share = (1 + np.asarray(counts.sum(axis=0)).ravel()) / (1 + counts.shape[0])
    words = vectorizer.get_feature_names_out()
    has_word = vectorizer.transform(doc_texts).tocsr()

    features = ranked["feature_id"].unique(maintain_order=True).to_list()
    column_of_feature = {f: i for i, f in enumerate(features)}
    membership = sparse.csr_matrix(
        (
            np.ones(ranked.height),
            ([column_of_feature[f] for f in ranked["feature_id"].to_list()], [row_of_doc[d] for d in ranked["doc_id"]]),
        ),
        shape=(len(features), len(doc_ids)),
    )
    word_docs = (membership @ has_word).tocsr()  # [concepts, words]: top documents containing each word
    n_top = np.asarray(membership.sum(axis=1)).ravel()

    tokens_by_feature: dict[int, Counter] = {}
    for feature_id, token in zip(ranked["feature_id"].to_list(), peak, strict=True):
        tokens_by_feature.setdefault(feature_id, Counter())[token or "␣"] += 1

    rows = []
    for i, feature_id in enumerate(features):
        start, end = word_docs.indptr[i], word_docs.indptr[i + 1]
        word_ids, in_docs = word_docs.indices[start:end], word_docs.data[start:end]
        # A word must recur: in at least 2 of the top documents (and 20% of them), not one document's quirk.
        keep = in_docs >= max(2, 0.2 * n_top[i])
        word_ids, share = word_ids[keep], in_docs[keep] / n_top[i]
        score = share * np.log(share / background_share[word_ids])
        order = [j for j in np.argsort(-score, kind="stable")[:5] if score[j] > 0]
        top_words = [(str(words[word_ids[j]]), round(float(share[j]), 2)) for j in order]
        labelled = _token_label(tokens_by_feature[feature_id].most_common(5), top_words, int(n_top[i]))
        rows.append((feature_id, labelled.label, labelled.description, json.dumps(labelled.details)))
        if on_progress is not None and (i + 1) % 256 == 0:
            on_progress(256)
    if on_progress is not None and len(features) % 256:
        on_progress(len(features) % 256)
    return pl.DataFrame(
        rows,
        schema={"feature_id": pl.Int32, "label": pl.Utf8, "description": pl.Utf8, "details": pl.Utf8},
        orient="row",
    )


def _token_label(top_tokens: list[tuple[str, int]], top_words: list[tuple[str, float]], n_top: int) -> TokenLabel:
    names = [w for w, _ in top_words[:TOKEN_LABEL_WORDS]]
    token, count = top_tokens[0]
    dominant = count >= DOMINANT_TOKEN_SHARE * n_top and re.search(r"\w", token)
    if dominant and token.lower() not in names:
        names.insert(0, f'"{token}"')
    label = ", ".join(names) if names else f'"{token}"'
    peaks = ", ".join(f"«{t}» ({c}/{n_top})" for t, c in top_tokens[:3])
    mentions = ", ".join(f"{w} ({s:.0%})" for w, s in top_words) or "no recurring word"
    description = f"Peaks on {peaks}; its top documents mention {mentions}."
    return TokenLabel(label, description, {"top_tokens": top_tokens, "top_words": top_words, "n_top_docs": n_top})


def _background_texts(store: Store, run_id: int, seed: int) -> list[str]:
    return store.query(
        """
        SELECT d.text FROM embedded_documents e JOIN documents d USING (doc_id)
        WHERE e.run_id = $run_id ORDER BY hash(e.doc_id + $seed), e.doc_id LIMIT $n
        """,
        {"run_id": run_id, "seed": seed, "n": BACKGROUND_DOCS},
    )["text"].to_list()


class HeldOut(NamedTuple):
    """Held-out documents for scoring labels: per concept, activating ones the label was not made
    from and non-activating ones."""

    positives: pl.DataFrame
    """feature_id, doc_id: ranks top_docs+1 .. top_docs+n of each concept."""
    negatives: pl.DataFrame
    """feature_id, doc_id: random documents where the concept is absent."""


def held_out_documents(
    store: Store,
    run_id: int,
    feature_ids: Sequence[int],
    *,
    top_docs: int = TOP_DOCS,
    n: int = HELDOUT_DOCS,
    seed: int = 0,
) -> HeldOut:
    positives = ranked_documents(store, run_id, feature_ids, first_rank=top_docs + 1, last_rank=top_docs + n)
    negatives = absent_documents(store, run_id, feature_ids, per_feature=n, seed=seed)
    return HeldOut(positives.select("feature_id", "doc_id"), negatives)


def embedding_auroc(
    store: Store,
    labels: pl.DataFrame,
    held_out: HeldOut,
    embedder: SentenceEmbedder,
    *,
    label_vectors: np.ndarray | None = None,
) -> np.ndarray:
    """Per row of `labels` (feature_id, label), the AUROC of label–document cosine for held-out
    activating vs non-activating documents; NaN where a concept has no held-out positives or negatives.

    `label_vectors` replaces the labels' own embeddings (the shuffled-label control uses this).
    """
    from sklearn.metrics import roc_auc_score

    vectors = embedder.encode(labels["label"].to_list()) if label_vectors is None else label_vectors
    both = pl.concat(
        [held_out.positives.with_columns(pl.lit(1).alias("y")), held_out.negatives.with_columns(pl.lit(0).alias("y"))]
    ).with_columns(pl.col("feature_id").cast(pl.Int32))
    doc_ids = both["doc_id"].unique().sort().to_list()
    doc_vectors = document_embeddings(store, doc_ids, embedder)
    row_of_doc = {d: i for i, d in enumerate(doc_ids)}
    row_of_feature = {f: i for i, f in enumerate(labels["feature_id"].to_list())}
    scores = np.full(labels.height, np.nan)
    for (feature_id,), group in both.group_by("feature_id"):
        if feature_id not in row_of_feature:
            continue
        y = group["y"].to_numpy()
        if y.min() == y.max():
            continue
        label_row = row_of_feature[feature_id]
        cosine = doc_vectors[[row_of_doc[d] for d in group["doc_id"].to_list()]] @ vectors[label_row]
        scores[label_row] = roc_auc_score(y, cosine)
    return scores


# -- storage ---------------------------------------------------------------------------------------


def run_sae(store: Store, run_id: int) -> int:
    row = first_row(store.con.execute("SELECT sae_id FROM embed_runs WHERE run_id = ?", [run_id]))
    if row is None:
        raise SaeembedError(f"no embedding run {run_id} in {store.path}")
    return row[0]


def save_labels(store: Store, run_id: int | None, sae_id: int, method: str, model: str, labels: pl.DataFrame) -> int:
    """Append labels (feature_id, label, description, details, auroc, detection) to `features`, one
    transaction; earlier labels stay as history. Returns rows written."""
    frame = labels
    for column, dtype in (
        ("description", pl.Utf8),
        ("details", pl.Utf8),
        ("auroc", pl.Float32),
        ("detection", pl.Float32),
    ):
        if column not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=dtype).alias(column))
    frame = frame.with_columns(pl.col("auroc").fill_nan(None), pl.col("detection").cast(pl.Float32).fill_nan(None))
    table = frame.select("feature_id", "label", "description", "details", "auroc", "detection").to_arrow()
    with store.transaction():
        store.con.register("new_labels", table)
        try:
            store.con.execute(
                """
                INSERT INTO features (sae_id, feature_id, method, model, label, description, run_id, auroc,
                                      detection, details)
                SELECT ?, feature_id, ?, ?, label, description, ?, auroc, detection, details::JSON FROM new_labels
                """,
                [sae_id, method, model, run_id],
            )
        finally:
            store.con.unregister("new_labels")
    return frame.height


def unlabelled_features(store: Store, run_id: int, feature_ids: Sequence[int] | None, method: str) -> list[int]:
    """Of `feature_ids` (None: every concept present in the run), those without a `method` label made
    from this run's corpus with this run's SAE."""
    store.con.register("candidate_features", pa.table({"feature_id": pa.array(feature_ids or [], type=pa.int32())}))
    try:
        return store.query(
            """
            WITH run AS (SELECT sae_id, corpus_id FROM embed_runs WHERE run_id = $run_id),
            wanted AS (
                SELECT DISTINCT feature_id FROM doc_features WHERE run_id = $run_id AND $all_features
                UNION SELECT feature_id FROM candidate_features
            )
            SELECT w.feature_id FROM wanted w
            WHERE NOT EXISTS (
                SELECT 1 FROM features f JOIN embed_runs r USING (run_id), run
                WHERE f.feature_id = w.feature_id AND f.method = $method
                  AND f.sae_id = run.sae_id AND r.corpus_id = run.corpus_id
            )
            ORDER BY w.feature_id
            """,
            {"run_id": run_id, "method": method, "all_features": feature_ids is None},
        )["feature_id"].to_list()
    finally:
        store.con.unregister("candidate_features")
