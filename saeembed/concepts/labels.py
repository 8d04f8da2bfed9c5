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
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import polars as pl
import pyarrow as pa
from scipy import sparse

from saeembed.concepts.dense import SentenceEmbedder, count_unembedded, document_embeddings
from saeembed.concepts.examples import (
    absent_documents,
    concept_examples,
    documents_text,
    load_run_models,
    ranked_documents,
    reader_model_of_run,
)
from saeembed.concepts.provenance import current_labels
from saeembed.errors import SaeembedError
from saeembed.model.tokens import load_tokenizer, token_at
from saeembed.storage.labels import insert_labels, set_detection
from saeembed.storage.store import Store

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
LABEL_BATCH = 512
"""Token labels made, scored and committed per transaction: a killed run loses at most one batch, while
8k concepts still take only 16 transactions and embedder calls."""

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
    present in the run), in feature_id order. `on_progress(n)` reports concepts labelled."""
    ranked = ranked_documents(store, run_id, feature_ids, first_rank=1, last_rank=top_docs)
    if ranked.height == 0:
        return pl.DataFrame(schema=_TOKEN_LABEL_SCHEMA)
    labeller = _TokenLabeller(store, run_id, seed=seed)
    features = ranked["feature_id"].unique(maintain_order=True).to_list()
    frames = []
    for start in range(0, len(features), LABEL_BATCH):
        batch = features[start : start + LABEL_BATCH]
        frames.append(labeller.label(ranked.filter(pl.col("feature_id").is_in(batch))))
        if on_progress is not None:
            on_progress(len(batch))
    return pl.concat(frames)


_TOKEN_LABEL_SCHEMA = {"feature_id": pl.Int32, "label": pl.Utf8, "description": pl.Utf8, "details": pl.Utf8}


class _TokenLabeller:
    """What the token labels of one run share, whichever concepts are labelled: the reader's tokenizer and
    the corpus's word frequencies, fitted once, so labels made batch by batch are those made all at once."""

    def __init__(self, store: Store, run_id: int, *, seed: int) -> None:
        from sklearn.feature_extraction.text import CountVectorizer

        self.store = store
        self.tokenizer = load_tokenizer(reader_model_of_run(store, run_id))
        # Distinguishing words: share s of the concept's top documents containing the word, against its
        # share b among all documents, scored s·log(s/b) (the word's term of the KL divergence between the
        # two): unlike s·IDF it does not reward words every news article has ("said") just because they
        # are in all top docs.
        background = _background_texts(store, run_id, seed)
        # Words seen once in the corpus cannot recur in top documents; tiny corpora keep them all.
        self.vectorizer: CountVectorizer | None = CountVectorizer(
            stop_words="english", token_pattern=WORD_PATTERN, binary=True, min_df=2 if len(background) >= 50 else 1
        )
        try:
            counts = self.vectorizer.fit_transform(background)
        except ValueError:  # no word at all (e.g. only numbers or stop words): labels from peak tokens alone
            self.vectorizer = None
            self.background_share, self.words = np.ones(0), np.array([], dtype=object)
        else:
            self.background_share = (1 + np.asarray(counts.sum(axis=0)).ravel()) / (1 + counts.shape[0])
            self.words = self.vectorizer.get_feature_names_out()

    def label(self, ranked: pl.DataFrame) -> pl.DataFrame:
        """Token labels of the concepts in `ranked` (feature_id, doc_id, argmax_pos of their top documents)."""
        texts = documents_text(self.store, ranked["doc_id"])
        doc_ids = texts["doc_id"].to_list()
        doc_texts = texts["text"].to_list()
        row_of_doc = {doc_id: i for i, doc_id in enumerate(doc_ids)}

        # Peak tokens, from the stored argmax positions (no model needed).
        offsets = self.tokenizer.offsets(doc_texts)
        peak = [
            token_at(doc_texts[row_of_doc[d]], offsets[row_of_doc[d]], p).strip()
            for d, p in zip(ranked["doc_id"].to_list(), ranked["argmax_pos"].to_list(), strict=True)
        ]
        if self.vectorizer is not None:
            has_word = self.vectorizer.transform(doc_texts).tocsr()
        else:
            has_word = sparse.csr_matrix((len(doc_texts), 0))

        features = ranked["feature_id"].unique(maintain_order=True).to_list()
        column_of_feature = {f: i for i, f in enumerate(features)}
        membership = sparse.csr_matrix(
            (
                np.ones(ranked.height),
                (
                    [column_of_feature[f] for f in ranked["feature_id"].to_list()],
                    [row_of_doc[d] for d in ranked["doc_id"]],
                ),
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
            score = share * np.log(share / self.background_share[word_ids])
            order = [j for j in np.argsort(-score, kind="stable")[:5] if score[j] > 0]
            top_words = [(str(self.words[word_ids[j]]), round(float(share[j]), 2)) for j in order]
            labelled = _token_label(tokens_by_feature[feature_id].most_common(5), top_words, int(n_top[i]))
            rows.append((feature_id, labelled.label, labelled.description, json.dumps(labelled.details)))
        return pl.DataFrame(rows, schema=_TOKEN_LABEL_SCHEMA, orient="row")


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
    sample = {"run_id": run_id, "seed": seed, "n": BACKGROUND_DOCS}
    return store.rows("labels_background_texts", sample)["text"].to_list()


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

    `label_vectors` are the labels' embeddings when already computed (or, in the shuffled-label control,
    other labels' embeddings).
    """
    vectors = embedder.encode(labels["label"].to_list()) if label_vectors is None else label_vectors
    doc_ids = pl.concat([held_out.positives["doc_id"], held_out.negatives["doc_id"]]).unique().sort().to_list()
    doc_vectors = document_embeddings(store, doc_ids, embedder)
    row_of_doc = {d: i for i, d in enumerate(doc_ids)}
    row_of_feature = {f: i for i, f in enumerate(labels["feature_id"].to_list())}
    positive = _cosines(held_out.positives, row_of_feature, row_of_doc, vectors, doc_vectors, labels.height)
    negative = _cosines(held_out.negatives, row_of_feature, row_of_doc, vectors, doc_vectors, labels.height)
    # AUROC = P(positive cosine > negative cosine) + ½·P(tie), the Mann–Whitney U over all pairs, in one
    # vectorised pass over [labels, positives, negatives] rather than a scikit-learn call per label.
    greater = (positive[:, :, None] > negative[:, None, :]).sum(axis=(1, 2))
    ties = (positive[:, :, None] == negative[:, None, :]).sum(axis=(1, 2))
    pairs = np.isfinite(positive).sum(axis=1) * np.isfinite(negative).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, (greater + 0.5 * ties) / pairs, np.nan)


def _cosines(
    pairs: pl.DataFrame,
    row_of_feature: dict[int, int],
    row_of_doc: dict[int, int],
    label_vectors: np.ndarray,
    doc_vectors: np.ndarray,
    n_labels: int,
) -> np.ndarray:
    """[labels, max documents per label] cosines, NaN-padded (NaN never compares greater or equal)."""
    pairs = pairs.filter(pl.col("feature_id").is_in(list(row_of_feature)))
    label_rows = np.array([row_of_feature[f] for f in pairs["feature_id"].to_list()], dtype=np.int64)
    doc_rows = np.array([row_of_doc[d] for d in pairs["doc_id"].to_list()], dtype=np.int64)
    slot = pairs.select(pl.int_range(pl.len()).over("feature_id")).to_series().to_numpy()
    width = int(slot.max()) + 1 if slot.size else 1
    out = np.full((n_labels, width), np.nan, dtype=np.float32)
    out[label_rows, slot] = np.einsum("ij,ij->i", label_vectors[label_rows], doc_vectors[doc_rows])
    return out


# -- storage ---------------------------------------------------------------------------------------


def run_sae(store: Store, run_id: int) -> int:
    return store.run(run_id).sae_id


def save_labels(
    store: Store,
    run_id: int | None,
    sae_id: int,
    method: str,
    model: str,
    labels: pl.DataFrame,
    *,
    vectors: np.ndarray | None = None,
    embedding_model: str | None = None,
) -> int:
    """Append labels (feature_id, label, description, details, auroc, detection) to `features`, one
    transaction; earlier labels stay as history. `vectors` are the labels' sentence embeddings by
    `embedding_model`, kept for concept search. Returns the largest label_id written."""
    frame = labels
    for column, dtype in (
        ("description", pl.Utf8),
        ("details", pl.Utf8),
        ("auroc", pl.Float32),
        ("detection", pl.Float32),
    ):
        if column not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=dtype).alias(column))
    frame = frame.with_columns(
        pl.col("auroc").cast(pl.Float32).fill_nan(None), pl.col("detection").cast(pl.Float32).fill_nan(None)
    )
    table = frame.select("feature_id", "label", "description", "details", "auroc", "detection").to_arrow()
    embedding = (
        pa.array(list(vectors.astype(np.float32)), type=pa.list_(pa.float32()))
        if vectors is not None
        else pa.nulls(frame.height, type=pa.list_(pa.float32()))
    )
    table = table.append_column("embedding", embedding)
    label_ids = insert_labels(
        store,
        table,
        sae_id=sae_id,
        method=method,
        model=model,
        run_id=run_id,
        embedding_model=embedding_model if vectors is not None else None,
    )
    return max(label_ids)


MATCHED_SCORE = 0.5
"""A concept matching's pair counts as the same concept from this score on (Lan et al. 2024 read
activation correlations above 0.5 as shared features): `concepts match`'s share_matched, and the pairs
`label --from-matches` carries labels across."""


def carry_labels(store: Store, corpus: str, analysis_id: int, *, force: bool = False) -> LabelSummary:
    """Label the concepts of run B of concept matching `analysis_id` (which must have embedded `corpus`)
    with the current labels of their matches in run A, for pairs that score at least MATCHED_SCORE.

    A carried label has method 'matched', model 'concept-match ID', no score (it was never tested on B's
    documents) and, in details, the concept, label and score it came from; where several concepts of A
    match one of B, the best match gives the label. `requested` counts B's concepts whose match has a label;
    those that already have a carried label from this corpus are skipped unless `force`."""
    started = time.perf_counter()
    analysis = store.analysis(analysis_id)
    if analysis.kind != "concept-match":
        raise SaeembedError(
            f"--from-matches {analysis_id} is a {analysis.kind} analysis, not a concept matching "
            "(run `saeembed concepts match RUN_A RUN_B` first)"
        )
    run_a, run_b = store.run(analysis.params["run_a"]), store.run(analysis.params["run_b"])
    if run_b.corpus != corpus:
        raise SaeembedError(
            f"concept matching {analysis_id} matched run {run_b.run_id} of corpus '{run_b.corpus}', not of "
            f"'{corpus}': give --corpus {run_b.corpus}"
        )
    matches = store.rows("labels_matched", {"analysis_id": analysis_id, "min_score": MATCHED_SCORE})
    with store.reading():
        corpus_a = store.corpus_id(run_a.corpus)
    sources = current_labels(store, run_a.sae_id, corpus_a).select(
        pl.col("feature_id").alias("feature_a"), "label_id", "method", "label", "description"
    )
    candidates = matches.join(sources, on="feature_a").unique("feature_b", keep="first", maintain_order=True)
    if candidates.height == 0:
        why = "no pair scores" if matches.height == 0 else "no concept of run A that matched has a label"
        raise SaeembedError(
            f"nothing to carry from concept matching {analysis_id}: {why} ≥ {MATCHED_SCORE}"
            + (f" (label corpus '{run_a.corpus}' first)" if matches.height else "")
        )
    carried = candidates
    if not force:
        wanted = unlabelled_features(store, run_b.run_id, carried["feature_b"].to_list(), "matched")
        carried = carried.filter(pl.col("feature_b").is_in(wanted))
    model = f"concept-match {analysis_id}"
    if carried.height:
        details = [
            json.dumps({"from_sae": run_a.sae_id, "from_feature": a, "from_label_id": i, "from_method": m, "score": s})
            for a, i, m, s in carried.select("feature_a", "label_id", "method", "score").iter_rows()
        ]
        frame = carried.select(pl.col("feature_b").alias("feature_id"), "label", "description").with_columns(
            details=pl.Series(details, dtype=pl.Utf8)
        )
        save_labels(store, run_b.run_id, run_b.sae_id, "matched", model, frame)
    return LabelSummary(
        corpus=corpus,
        run_id=run_b.run_id,
        method="matched",
        model=model,
        requested=candidates.height,
        labelled=carried.height,
        skipped=candidates.height - carried.height,
        failed=0,
        failures={},
        first_failure=None,
        mean_auroc=None,
        mean_detection=None,
        seconds=round(time.perf_counter() - started, 2),
    )


def unlabelled_features(store: Store, run_id: int, feature_ids: Sequence[int] | None, method: str) -> list[int]:
    """Of `feature_ids` (None: every concept present in the run), those without a `method` label made
    from this run's corpus with this run's SAE."""
    candidates = pa.table({"feature_id": pa.array(feature_ids or [], type=pa.int32())})
    return store.rows(
        "labels_unlabelled",
        {"run_id": run_id, "method": method, "all_features": feature_ids is None},
        candidate_features=candidates,
    )["feature_id"].to_list()


# -- labelling a corpus's concepts -------------------------------------------------------------------

Method = Literal["tokens", "llm"]
LLM_TOP_DOCS = 15
"""Activating (and as many non-activating) examples shown to the LLM labeller (the paper: 10–20)."""
JUDGE_DOCS = 5
"""Held-out positives and negatives the judge sees per label for the detection score."""


def select_features(store: Store, run_id: int, spec: str) -> list[int] | None:
    """`all` (None: every concept present), `top:N` (the N most frequent in the run) or `ID,ID,…`."""
    spec = spec.strip()
    if spec == "all":
        return None
    if spec.startswith("top:"):
        try:
            n = int(spec.removeprefix("top:"))
        except ValueError:
            n = 0
        if n < 1:
            raise SaeembedError(f"--features {spec}: top:N needs a positive whole number N")
        return store.rows("labels_most_frequent", {"run_id": run_id, "n": n})["feature_id"].to_list()
    try:
        ids = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        raise SaeembedError(f"--features {spec}: use all, top:N or a comma-separated list of concept ids") from None
    if not ids:
        raise SaeembedError("--features is empty: use all, top:N or a comma-separated list of concept ids")
    d_sae = store.run(run_id).d_sae
    bad = [i for i in ids if not 0 <= i < d_sae]
    if bad:
        raise SaeembedError(f"--features: concept ids {bad[:5]} are outside this SAE's 0..{d_sae - 1}")
    return ids


class LabelSummary(NamedTuple):
    corpus: str
    """Corpus whose documents the labels were made from."""
    run_id: int
    """Its embedding run (the SAE is the run's)."""
    method: str
    """'tokens' or 'llm'."""
    model: str
    """What made the labels."""
    requested: int
    """Concepts asked for."""
    labelled: int
    """Labels written by this call."""
    skipped: int
    """Concepts that already had a label of this method from this corpus (relabel with force)."""
    failed: int
    """Concepts left unlabelled (an unusable LLM answer, a rejected request, never active in the corpus);
    the others are kept, and a rerun tries these again."""
    failures: dict[str, int]
    """The failed concepts counted by reason, e.g. {"not JSON": 3, "request rejected (400)": 1}; empty
    when none failed."""
    first_failure: str | None
    """The message of the first failure (in concept order), an example of what went wrong; None when
    none failed."""
    mean_auroc: float | None
    """Mean offline score of the labels written."""
    mean_detection: float | None
    """Mean judge detection score (llm method)."""
    seconds: float
    """Wall time of the call."""


class _Outcome(NamedTuple):
    """What one labelling method did."""

    labelled: int
    """Labels written."""
    model: str
    """What made them."""
    aurocs: list[float]
    """Their offline scores."""
    detections: list[float]
    """Their judge detection scores (llm method)."""
    failures: dict[str, int]
    """Concepts not labelled, by reason."""
    first_failure: str | None
    """The first failure's message, in concept order."""


class _Failures:
    """Failures counted by reason (`saeembed.concepts.llm.failure_reason`), with the message of the first, in
    concept order, as an example."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._first: tuple[int, str] | None = None

    def add(self, index: int, reason: str, message: str) -> None:
        self.counts[reason] += 1
        if self._first is None or index < self._first[0]:
            self._first = (index, message)

    @property
    def first(self) -> str | None:
        return self._first[1] if self._first is not None else None

    def __len__(self) -> int:
        return sum(self.counts.values())


NEVER_ACTIVE = "never active in this corpus"
"""The failure reason of a concept asked for that fires in none of the run's documents."""


def labelling_skipped(store: Store, corpus: str, max_docs: int) -> str | None:
    """Why `corpus`, just brought in by a flow that analyses it (embed --label, compare-releases), is not
    labelled there: None when its latest run has at most `max_docs` documents (labels in minutes), else one
    line saying where its labels come from instead."""
    run = store.latest_run(corpus)
    documents = int(store.rows("run_size", {"run_id": run.run_id})["documents"][0])
    if documents <= max_docs:
        return None
    return (
        f"corpus '{corpus}' has {documents:,} documents, more than --label-max-docs {max_docs:,}: not labelled now, "
        f"so its concepts go by the SAE's shipped labels (or another corpus's, said so); "
        f"`saeembed label --corpus {corpus}` labels it"
    )


def label_concepts(
    store: Store,
    corpus: str,
    *,
    method: Method = "tokens",
    features: str = "all",
    force: bool = False,
    chat: object | None = None,
    embedder: SentenceEmbedder | None = None,
    concurrency: int = 4,
    batch_size: int = LABEL_BATCH,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> LabelSummary:
    """Label the concepts of `corpus`'s latest embedding run and store the labels with their scores.

    `chat` is the LLM for method 'llm' (a `saeembed.concepts.llm.CachedChat`); its endpoint is checked before
    the sentence embedder and the reader are loaded. Token labels are committed `batch_size` concepts at
    a time and LLM labels one by one, so a killed run keeps what it finished and a rerun labels the rest.
    `on_progress(stage, done, total)` reports progress. When concepts were to be labelled and none was,
    SaeembedError says why in one line (failure counts by reason and a first example); a partial failure
    is reported in the summary's `failures` and `first_failure`.
    """
    if method not in ("tokens", "llm"):
        raise SaeembedError(f"unknown --method '{method}': use tokens or llm")
    if method == "llm" and chat is None:
        raise SaeembedError("--method llm needs an LLM: --llm-local MODEL or --llm-base-url URL --llm-model NAME")
    if batch_size < 1:
        raise SaeembedError(f"batch_size must be at least 1, got {batch_size}")
    started = time.perf_counter()
    run = store.latest_run(corpus)
    wanted = select_features(store, run.run_id, features)
    requested = len(wanted) if wanted is not None else _count_present(store, run.run_id)
    todo = wanted if force else unlabelled_features(store, run.run_id, wanted, method)
    if force and todo is None:
        todo = store.rows("labels_present", {"run_id": run.run_id})["feature_id"].to_list()
    progress = on_progress or (lambda stage, done, total: None)
    if method == "llm":
        check = getattr(chat, "check", None)
        if callable(check):
            # Before the embedder and the reader load (a minute): a dead endpoint should fail in seconds.
            check()
    if not todo:
        model = chat.model if method == "llm" else f"tokens:{reader_model_of_run(store, run.run_id)}"
        outcome = _Outcome(0, model, [], [], {}, None)
    elif method == "tokens":
        embedder = embedder or SentenceEmbedder.load()
        outcome = _label_with_tokens(store, run.run_id, run.sae_id, todo, embedder, batch_size, progress)
    else:
        embedder = embedder or SentenceEmbedder.load()
        outcome = _label_with_llm(store, run.run_id, run.sae_id, todo, chat, embedder, concurrency, progress)
    failed = sum(outcome.failures.values())
    if todo and outcome.labelled == 0:
        # Whatever was stored is kept (nothing, here, but the cache of usable answers); say why.
        counts = ", ".join(f"{count} {reason}" for reason, count in outcome.failures.items())
        what = "LLM answers were unusable" if method == "llm" else "concepts could not be labelled"
        raise SaeembedError(
            f"no concept labelled: {failed} of {len(todo)} {what} ({counts}), e.g. {outcome.first_failure}"
        )
    return LabelSummary(
        corpus=corpus,
        run_id=run.run_id,
        method=method,
        model=outcome.model,
        requested=requested,
        labelled=outcome.labelled,
        skipped=requested - len(todo),
        failed=failed,
        failures=outcome.failures,
        first_failure=outcome.first_failure,
        mean_auroc=_mean(outcome.aurocs),
        mean_detection=_mean(outcome.detections),
        seconds=round(time.perf_counter() - started, 1),
    )


def _label_with_tokens(
    store: Store,
    run_id: int,
    sae_id: int,
    todo: list[int],
    embedder: SentenceEmbedder,
    batch_size: int,
    progress: Callable[[str, int, int], None],
) -> _Outcome:
    model = f"tokens:{reader_model_of_run(store, run_id)}"
    failures = _Failures()
    ranked = ranked_documents(store, run_id, todo, first_rank=1, last_rank=TOP_DOCS)
    features = ranked["feature_id"].unique(maintain_order=True).to_list()
    for index, feature_id in enumerate(sorted(set(todo) - set(features))):
        failures.add(index, NEVER_ACTIVE, f"concept {feature_id} is never active in this corpus")
    aurocs: list[float] = []
    if features:
        # Once for every concept, not per batch: the negatives absent_documents draws for a concept depend
        # on its place in the whole list, and the held-out documents are embedded in one pass; so the
        # scores are those of labelling all at once, and a killed run keeps the embeddings made.
        held_out = held_out_documents(store, run_id, features)
        doc_ids = pl.concat([held_out.positives["doc_id"], held_out.negatives["doc_id"]]).unique().sort().to_list()
        missing = count_unembedded(store, doc_ids, embedder)
        embedded = 0

        def advance(n: int) -> None:
            nonlocal embedded
            embedded += n
            progress("embed held-out", embedded, missing)

        document_embeddings(store, doc_ids, embedder, on_batch=advance if missing else None)
        labeller = _TokenLabeller(store, run_id, seed=0)
        for start in range(0, len(features), batch_size):
            batch = features[start : start + batch_size]
            labels = labeller.label(ranked.filter(pl.col("feature_id").is_in(batch)))
            vectors = embedder.encode(labels["label"].to_list())
            in_batch = HeldOut(
                held_out.positives.filter(pl.col("feature_id").is_in(batch)),
                held_out.negatives.filter(pl.col("feature_id").is_in(batch)),
            )
            auroc = embedding_auroc(store, labels, in_batch, embedder, label_vectors=vectors)
            # One transaction per batch: a killed run keeps the batches done, and a rerun skips them.
            save_labels(
                store,
                run_id,
                sae_id,
                "tokens",
                model,
                labels.with_columns(pl.Series("auroc", auroc)),
                vectors=vectors,
                embedding_model=embedder.model_id,
            )
            aurocs += auroc.tolist()
            progress("label", start + len(batch), len(features))
    return _Outcome(len(features), model, aurocs, [], dict(failures.counts.most_common()), failures.first)


def _label_with_llm(
    store: Store,
    run_id: int,
    sae_id: int,
    todo: list[int],
    chat: object,
    embedder: SentenceEmbedder,
    concurrency: int,
    progress: Callable[[str, int, int], None],
) -> _Outcome:
    from saeembed.concepts.llm import (
        complete_many,
        detection_score,
        failure_reason,
        judge_messages,
        label_messages,
        parse_judgement,
        parse_label,
    )

    model = chat.model
    run_models = load_run_models(store, run_id)
    examples = []
    for i, feature_id in enumerate(todo):
        examples.append(
            concept_examples(
                store, feature_id, run_id=run_id, top=LLM_TOP_DOCS, negatives=LLM_TOP_DOCS, models=run_models
            )
        )
        progress("examples", i + 1, len(todo))
    held_out = held_out_documents(store, run_id, todo, top_docs=LLM_TOP_DOCS, n=max(HELDOUT_DOCS, JUDGE_DOCS))
    made: dict[int, tuple[int, str]] = {}  # feature_id → (label_id, label)
    aurocs: list[float] = []
    failures = _Failures()
    # A concept with no activating document has nothing to show the LLM: counted as failed, not asked.
    asked = []
    for index, (feature_id, ex) in enumerate(zip(todo, examples, strict=True)):
        if ex.positives.height:
            asked.append(index)
        else:
            failures.add(index, NEVER_ACTIVE, f"concept {feature_id} is never active in this corpus")

    def store_label(request: int, answer: str | Exception) -> None:
        index = asked[request]
        feature_id = todo[index]
        try:
            if isinstance(answer, Exception):
                raise answer
            parsed = parse_label(answer)
        except SaeembedError as error:
            failures.add(index, failure_reason(error), str(error))
            progress("label", len(made) + len(failures), len(todo))
            return
        row = pl.DataFrame(
            {"feature_id": [feature_id], "label": [parsed.label], "description": [parsed.description]},
            schema={"feature_id": pl.Int32, "label": pl.Utf8, "description": pl.Utf8},
        )
        vector = embedder.encode([parsed.label])
        auroc = float(embedding_auroc(store, row, held_out, embedder, label_vectors=vector)[0])
        aurocs.append(auroc)
        details = json.dumps({"examples": LLM_TOP_DOCS, "raw_answer": answer[:2000]})
        made[feature_id] = (
            save_labels(
                store,
                run_id,
                sae_id,
                "llm",
                model,
                row.with_columns(pl.lit(auroc).alias("auroc"), pl.lit(details).alias("details")),
                vectors=vector,
                embedding_model=embedder.model_id,
            ),
            parsed.label,
        )
        progress("label", len(made) + len(failures), len(todo))

    requests = [
        label_messages(examples[i].positives["marked"].to_list(), examples[i].negatives["text"].to_list())
        for i in asked
    ]
    # Labels are stored as each answer arrives: an endpoint that fails later keeps the ones already made.
    # parse_label decides what the cache keeps: an unusable answer is asked again on the next run.
    complete_many(
        chat,
        requests,
        max_tokens=200,
        temperature=0.0,
        concurrency=concurrency,
        on_result=store_label,
        parse=parse_label,
    )

    # Detection score: the judge sees held-out positives (ranks after the examples) and negatives.
    texts = documents_text(store, pl.concat([held_out.positives["doc_id"], held_out.negatives["doc_id"]]))
    text_of = dict(texts.iter_rows())
    judge_plan: list[tuple[int, bool, str]] = []
    for feature_id, (_, label) in made.items():
        for frame, is_positive in ((held_out.positives, True), (held_out.negatives, False)):
            docs = frame.filter(pl.col("feature_id") == feature_id)["doc_id"].head(JUDGE_DOCS).to_list()
            judge_plan += [(feature_id, is_positive, judge_messages(label, text_of[d])) for d in docs]
    verdicts: dict[int, tuple[list[bool], list[bool]]] = {f: ([], []) for f in made}

    def record(index: int, answer: str | Exception) -> None:
        feature_id, is_positive, _ = judge_plan[index]
        try:
            if isinstance(answer, Exception):
                raise answer
            verdicts[feature_id][0 if is_positive else 1].append(parse_judgement(answer))
        except SaeembedError:
            return
        progress("judge", sum(len(a) + len(b) for a, b in verdicts.values()), len(judge_plan))

    complete_many(
        chat,
        [m for _, _, m in judge_plan],
        max_tokens=20,
        temperature=0.0,
        concurrency=concurrency,
        on_result=record,
        parse=parse_judgement,
    )
    detections = []
    for feature_id, (label_id, _) in made.items():
        on_positives, on_negatives = verdicts[feature_id]
        if on_positives and on_negatives:
            score = detection_score(on_positives, on_negatives)
            detections.append(score)
            set_detection(store, label_id, score)
    return _Outcome(len(made), model, aurocs, detections, dict(failures.counts.most_common()), failures.first)


def _count_present(store: Store, run_id: int) -> int:
    return store.rows("labels_present", {"run_id": run_id}).height


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if np.isfinite(v)]
    return round(float(np.mean(finite)), 3) if finite else None


# -- labels that travel with an SAE ------------------------------------------------------------------

SHIPPED_LABELS = "labels.parquet"
"""File in an SAE's folder with labels made elsewhere; loaded when the SAE is first used."""


def export_labels(store: Store, corpus: str, path: str | Path) -> int:
    """Write the current label of every concept of `corpus`'s SAE to Parquet (to ship with the SAE as
    `labels.parquet`). Returns the number of labels written."""
    from saeembed.concepts.provenance import current_labels

    run = store.latest_run(corpus)
    labels = current_labels(store, run.sae_id, store.corpus_id(corpus)).filter(pl.col("run_id").is_not_null())
    frame = labels.select(
        "feature_id", "method", "model", "label", "description", "auroc", pl.lit(corpus).alias("made_from")
    )
    frame.write_parquet(path)
    return frame.height


def load_shipped_labels(store: Store, sae_id: int, sae_path: Path) -> int:
    """Add the labels shipped in the SAE's folder (if any, and not added before) as history rows
    without a run; labels made from the user's own corpus take precedence over them. Returns rows added."""
    path = sae_path / SHIPPED_LABELS if sae_path.is_dir() else None
    if path is None or not path.exists():
        return 0
    already = store.rows("labels_shipped_count", {"sae_id": sae_id})["n"][0]
    if already:
        return 0
    shipped = pl.read_parquet(path)
    added = 0
    for (method, model), group in shipped.group_by("method", "model", maintain_order=True):
        with_details = group.with_columns(pl.struct(pl.col("made_from")).struct.json_encode().alias("details"))
        save_labels(store, None, sae_id, method, model, with_details)
        added += group.height
    return added
