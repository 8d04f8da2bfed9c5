"""Interactive look-ups over the store: a document's concepts, a corpus's most frequent concepts.

These answer straight from DuckDB plus the reader's tokenizer (no model, no Prefect), so they return
in about a second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import polars as pl

from saeembed.concepts.provenance import concept_labels, current_labels, with_labels
from saeembed.errors import SaeembedError
from saeembed.model.tokens import TextTokenizer, load_tokenizer, mark_context, mark_span, token_at
from saeembed.storage.store import Store

if TYPE_CHECKING:
    from saeembed.concepts.examples import RunModels


class DocumentView(NamedTuple):
    doc_id: int
    """Key in `documents`."""
    external_id: str | None
    """The source's id."""
    corpus: str
    """Corpus name."""
    run_id: int
    """Embedding run the concepts come from."""
    text: str
    """The document."""
    meta: str | None
    """Metadata JSON."""
    n_tokens: int
    """Tokens the reader saw."""
    truncated: bool
    """Whether the document was cut at max_tokens."""
    concepts: pl.DataFrame
    """feature_id, max_act, mean_act, n_active_tokens, argmax_pos, freq, label, label_source, label_score,
    token, context."""
    units: pl.DataFrame
    """The document's units (`embed --unit`), in order: unit_corpus, unit_index, doc_id, char_start, char_end,
    feature_ids and peak_tokens (its strongest concepts and the token where each peaks), text, concepts (the same
    as 'ID «token»' text); empty when it has none."""
    parent_doc_id: int | None
    """Where the document is itself a unit: the document it is a span of."""
    in_document: str | None
    """Where the document is a unit: its document's text with the unit «marked»."""


UNIT_CONCEPTS = 3
"""Concepts shown per unit."""


def show_document(store: Store, doc_id: int, *, top: int = 20) -> DocumentView:
    """A document with its strongest concepts and where each fired, and its units with theirs."""
    run = store.run_for_document(doc_id)
    doc = store.rows("lookup_document", {"run_id": run.run_id, "doc_id": doc_id}).row(0)
    concepts = store.rows("doc_concepts", {"run_id": run.run_id, "doc_id": doc_id, "limit": top})
    concepts = with_labels(concepts, concept_labels(store, run, concepts["feature_id"].to_list(), peaks=False))
    tokenizer = load_tokenizer(run.reader_model)
    offsets = tokenizer.offsets([doc[1]])[0]
    positions = concepts["argmax_pos"].to_list()
    concepts = concepts.with_columns(
        pl.Series("token", [token_at(doc[1], offsets, p) for p in positions], dtype=pl.Utf8),
        pl.Series("context", [mark_context(doc[1], offsets, p) for p in positions], dtype=pl.Utf8),
    )
    units = _units(store, doc_id, doc[1], tokenizer)
    context = store.unit_context([doc_id])
    parent, in_document = None, None
    if context.height:
        row = context.row(0, named=True)
        parent, in_document = row["parent_doc_id"], mark_span(row["parent_text"], row["char_start"], row["char_end"])
    return DocumentView(
        doc_id, doc[0], run.corpus, run.run_id, doc[1], doc[2], doc[3], doc[4], concepts, units, parent, in_document
    )


def _units(store: Store, doc_id: int, text: str, tokenizer: TextTokenizer) -> pl.DataFrame:
    """The document's units, each with its strongest concepts and the token of the unit where each peaks."""
    units = store.rows("document_unit_concepts", {"doc_id": doc_id, "per_unit": UNIT_CONCEPTS})
    spans = list(zip(units["char_start"].to_list(), units["char_end"].to_list(), strict=True))
    texts = [text[start:end] for start, end in spans]
    offsets = tokenizer.offsets(texts) if texts else []
    peak_tokens = [
        [token_at(t, o, p) for p in peaks]
        for t, o, peaks in zip(texts, offsets, units["argmax_pos"].to_list(), strict=True)
    ]
    shown = [
        ", ".join(f"{f} «{_shown(token)}»" for f, token in zip(features, tokens, strict=True))
        for features, tokens in zip(units["feature_ids"].to_list(), peak_tokens, strict=True)
    ]
    return units.select("unit_corpus", "unit_index", "doc_id", "char_start", "char_end", "feature_ids").with_columns(
        pl.Series("peak_tokens", peak_tokens, dtype=pl.List(pl.Utf8)),
        pl.Series("text", texts, dtype=pl.Utf8),
        pl.Series("concepts", shown, dtype=pl.Utf8),
    )


def top_concepts(store: Store, corpus: str, *, top: int = 20) -> pl.DataFrame:
    """The corpus's most frequent concepts: feature_id, n_docs, freq, mean_max_act, max_act, top_tokens
    (the tokens where the concept peaks in its strongest documents, most common first), label, label_source,
    label_score, run_id."""
    run = store.latest_run(corpus)
    frequent = store.rows("concepts_top", {"run_id": run.run_id, "limit": top})
    labels = concept_labels(store, run, frequent["feature_id"].to_list())
    return (
        with_labels(frequent, labels)
        .rename({"peak_tokens": "top_tokens"})
        .select(
            "feature_id",
            "n_docs",
            "freq",
            "mean_max_act",
            "max_act",
            "top_tokens",
            "label",
            "label_source",
            "label_score",
        )
        .with_columns(pl.lit(run.run_id).alias("run_id"))
    )


def only_corpus(store: Store) -> str:
    """The corpus to use when none is named: the only one with an embedding run."""
    names = store.rows("lookup_embedded_corpora")["name"].to_list()
    if len(names) == 1:
        return names[0]
    if not names:
        raise SaeembedError(f"no embedded corpus in {store.path}: run `saeembed embed --corpus NAME` first")
    raise SaeembedError(f"several embedded corpora ({', '.join(names)}): say which with --corpus")


class ConceptView(NamedTuple):
    feature_id: int
    """SAE latent index."""
    corpus: str
    """Corpus the documents come from."""
    run_id: int
    """Its latest embedding run."""
    n_docs: int
    """Documents where the concept is present."""
    corpus_docs: int
    """Documents embedded in the run."""
    labels: pl.DataFrame
    """method, model, label, label_source (where it was made: 'this corpus', 'shipped', 'corpus NAME'),
    description, auroc, detection, created_at: the current label first, then the others newest first."""
    documents: pl.DataFrame
    """rank, doc_id, max_act, token, context, marked (firing tokens «marked»)."""


def show_concept(
    store: Store,
    feature_id: int,
    *,
    corpus: str | None = None,
    top: int = 10,
    all_tokens: bool = False,
    models: RunModels | None = None,
) -> ConceptView:
    """A concept's labels and its top documents. With `all_tokens` the run's reader re-reads those
    documents to mark every firing token (slower: loads the model, unless `models` gives it loaded);
    otherwise the stored max is marked."""
    from saeembed.concepts.examples import concept_examples, load_run_models

    name = corpus or only_corpus(store)
    run = store.latest_run(name)
    if not 0 <= feature_id < run.d_sae:
        raise SaeembedError(f"concept {feature_id} does not exist: this SAE has concepts 0..{run.d_sae - 1}")
    if all_tokens and models is None:
        models = load_run_models(store, run.run_id)
    models = models if all_tokens else None
    examples = concept_examples(store, feature_id, run_id=run.run_id, top=top, negatives=0, models=models)
    corpus_id = store.corpus_id(name)
    current = current_labels(store, run.sae_id, corpus_id).filter(pl.col("feature_id") == feature_id)
    history = store.rows(
        "lookup_label_history", {"sae_id": run.sae_id, "feature_id": feature_id, "corpus_id": corpus_id}
    )
    current_id = current["label_id"].to_list()
    labels = pl.concat(
        [history.filter(pl.col("label_id").is_in(current_id)), history.filter(~pl.col("label_id").is_in(current_id))]
    ).drop("label_id")
    corpus_docs = store.rows("run_size", {"run_id": run.run_id})["documents"][0]
    documents = examples.positives.select("rank", "doc_id", "max_act", "token", "context", "marked")
    return ConceptView(feature_id, name, run.run_id, examples.n_docs, corpus_docs, labels, documents)


def _shown(token: str) -> str:
    """A token as text to read: whitespace-only tokens (a line break) as their repr."""
    return token.strip() or repr(token)


class ConceptProfile(NamedTuple):
    view: ConceptView
    """Labels with where each was made, and the top documents with every firing token «marked» (re-read)."""
    histogram: pl.DataFrame
    """low, high, n: how many of the run's documents have the concept's max activation in [low, high)
    (the last bin includes its high end); HISTOGRAM_BINS bins from 0 to the largest activation."""
    absent: pl.DataFrame
    """doc_id, text: a seeded random sample of the run's documents where the concept does not fire."""
    cooccurring: pl.DataFrame
    """feature_id, label, label_source, label_score, peak_tokens, n_ab (documents with both), n_b, npmi: the
    concepts most often firing in the same documents (NPMI, at least COOCCURRENCE_MIN_COUNT shared), best first."""
    by_column: pl.DataFrame | None
    """level, n (documents with that value of the meta column), present, share: the concept's frequency by
    the column's values, most common value first; None without a column."""
    column: str | None
    """The meta column `by_column` is about."""


HISTOGRAM_BINS = 20
COOCCURRENCE_MIN_COUNT = 3
"""Fewest shared documents for a co-occurring concept: NPMI of one or two documents is noise."""
COOCCURRING = 10
"""Co-occurring concepts listed."""
ABSENT_DOCUMENTS = 5


def concept_profile(
    store: Store,
    feature_id: int,
    *,
    corpus: str | None = None,
    top: int = 10,
    by: str | None = None,
    models: RunModels | None = None,
) -> ConceptProfile:
    """Everything a concept's page shows (`show_concept` with every firing token marked, which loads the
    run's reader and SAE unless `models` gives them, plus its activation histogram, documents where it is
    absent, the concepts it co-occurs with, and its frequency by the meta column `by`)."""
    from saeembed.analysis.correlate import npmi
    from saeembed.concepts.examples import absent_documents, documents_text

    name = corpus or only_corpus(store)
    run = store.latest_run(name)
    params = {"run_id": run.run_id, "feature_id": feature_id}
    by_column = None
    if by is not None:  # before the reader loads: a wrong column should fail at once
        by_column = store.rows("concept_by_column", {**params, "column": by})
        if by_column.height == 0:
            raise SaeembedError(f"no embedded document of corpus '{name}' has a meta column '{by}'")
        by_column = by_column.with_columns((pl.col("present") / pl.col("n")).alias("share"))
    view = show_concept(store, feature_id, corpus=name, top=top, all_tokens=True, models=models)
    activations = store.rows("concept_activations", params)["max_act"].to_numpy()
    counts, edges = np.histogram(
        activations, bins=HISTOGRAM_BINS, range=(0.0, float(activations.max(initial=0.0)) or 1.0)
    )
    histogram = pl.DataFrame({"low": edges[:-1], "high": edges[1:], "n": counts.astype(np.int64)})
    absent_ids = absent_documents(store, run.run_id, [feature_id], per_feature=ABSENT_DOCUMENTS)["doc_id"]
    absent = documents_text(store, absent_ids).select("doc_id", "text")
    pairs = store.rows("concept_cooccurrence", {**params, "min_count": COOCCURRENCE_MIN_COUNT})
    values = npmi(pairs["n_ab"].to_numpy(), view.n_docs, pairs["n_b"].to_numpy(), view.corpus_docs)
    best = (
        pairs.with_columns(pl.Series("npmi", values, dtype=pl.Float64))
        .sort(["npmi", "n_ab", "feature_id"], descending=[True, True, False])
        .head(COOCCURRING)
    )
    cooccurring = with_labels(best, concept_labels(store, run, best["feature_id"].to_list())).select(
        "feature_id", "label", "label_source", "label_score", "peak_tokens", "n_ab", "n_b", "npmi"
    )
    return ConceptProfile(view, histogram, absent, cooccurring, by_column, by)
