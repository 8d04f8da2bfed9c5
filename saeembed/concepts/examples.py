"""A concept's examples: its top-activating documents with the firing tokens marked «like this», and a
sample of documents where it is absent. One implementation for labelling, label scores, reports and
`saeembed concepts show`.

By default the marks come from what the store kept (the token of each document's max activation).
Given the run's reader and SAE (`TokenActivations`), the few example documents are read again and
every token where the concept fires is marked, as in the auto-interp prompts of Jiang et al. (2025).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import polars as pl
import pyarrow as pa

from saeembed.errors import SaeembedError
from saeembed.model.tokens import load_tokenizer, mark_context, mark_positions, token_at
from saeembed.storage.store import Store

if TYPE_CHECKING:
    # Imported where used: look-ups that only mark the stored max tokens must not pay torch's import.
    from saeembed.model.reader import Reader
    from saeembed.model.sae import SparseAutoencoder

NEGATIVE_CANDIDATES = 4096
"""Random documents drawn once per call, among which each concept's absent ones are chosen."""


class RunModels(NamedTuple):
    """What a run embedded with, for re-reading a few documents token by token."""

    reader: Reader
    """The run's reader, truncated at its layer."""
    sae: SparseAutoencoder
    """The run's SAE, on the reader's device."""
    max_tokens: int
    """The run's truncation."""
    chat_template: bool
    """Whether documents were read as the chat template's assistant turn."""


def load_run_models(store: Store, run_id: int, *, device: str = "auto") -> RunModels:
    """Reader and SAE of embedding run `run_id`, with its settings."""
    from saeembed.model.formats import load_sae
    from saeembed.model.reader import Reader

    run = store.run(run_id)
    reader = Reader.load(run.reader_model, layer=run.layer, device=device, dtype=run.dtype)
    sae = load_sae(run.sae_path).to(reader.device).float()
    return RunModels(reader, sae, run.max_tokens, run.chat_template)


def firing_positions(models: RunModels, texts: Sequence[str], feature_id: int) -> list[list[int]]:
    """Per text, the positions (among its own tokens) where concept `feature_id` is non-zero."""
    import torch

    reader, sae = models.reader, models.sae
    tokenized = reader.tokenize(texts, models.max_tokens)
    tokens = reader.document_residuals(tokenized.ids, reader.prefix_ids(models.chat_template))
    with torch.inference_mode(), reader.autocast():
        codes = sae.encode_sparse(tokens.residuals)
    hits = codes.row[codes.latent == feature_id].cpu()
    positions: list[list[int]] = [[] for _ in texts]
    for doc, position in zip(tokens.doc_index[hits].tolist(), tokens.position[hits].tolist(), strict=True):
        positions[doc].append(position)
    return positions


class ConceptExamples(NamedTuple):
    feature_id: int
    """SAE latent index."""
    run_id: int
    """Embedding run the examples come from."""
    n_docs: int
    """Documents of the run where the concept is present."""
    positives: pl.DataFrame
    """doc_id, rank, max_act, argmax_pos, text, token (at the max), context (snippet around the max),
    marked (whole text, firing tokens «marked»): the strongest documents, strongest first."""
    negatives: pl.DataFrame
    """doc_id, text: a seeded random sample of the run's documents where the concept is absent."""


def ranked_documents(
    store: Store, run_id: int, feature_ids: Sequence[int] | None, *, first_rank: int, last_rank: int
) -> pl.DataFrame:
    """feature_id, doc_id, max_act, argmax_pos, rank for each concept's documents ranked by max activation."""
    return store.rows(
        "concept_ranked_documents",
        {
            "run_id": run_id,
            "feature_ids": None if feature_ids is None else list(feature_ids),
            "first_rank": first_rank,
            "last_rank": last_rank,
        },
    )


def absent_documents(
    store: Store, run_id: int, feature_ids: Sequence[int], *, per_feature: int, seed: int = 0
) -> pl.DataFrame:
    """feature_id, doc_id: up to `per_feature` random documents of the run where each concept is absent.

    Draws NEGATIVE_CANDIDATES documents once and looks up which concepts they contain, so the cost does
    not grow with the corpus.
    """
    sample = {"run_id": run_id, "seed": seed, "n": NEGATIVE_CANDIDATES}
    candidates = store.rows("examples_candidates", sample)["doc_id"].to_numpy()
    present = store.rows(
        "examples_present",
        {"run_id": run_id, "feature_ids": list(feature_ids)},
        negative_candidates=pa.table({"doc_id": pa.array(candidates, type=pa.int64())}),
    )
    present_by_feature = dict(present.group_by("feature_id").agg(pl.col("doc_id")).iter_rows())
    rng = np.random.default_rng(seed)
    rows_feature, rows_doc = [], []
    for feature_id in feature_ids:
        taken = np.asarray(present_by_feature.get(feature_id, []), dtype=np.int64)
        # Enough shuffled candidates to find per_feature absent ones even if all taken ones come first.
        drawn = candidates[rng.permutation(candidates.size)[: per_feature + taken.size]]
        chosen = drawn[~np.isin(drawn, taken)][:per_feature]
        rows_feature.append(np.full(chosen.size, feature_id, dtype=np.int32))
        rows_doc.append(chosen)
    return pl.DataFrame(
        {
            "feature_id": np.concatenate(rows_feature) if rows_feature else np.zeros(0, np.int32),
            "doc_id": np.concatenate(rows_doc) if rows_doc else np.zeros(0, np.int64),
        },
        schema={"feature_id": pl.Int32, "doc_id": pl.Int64},
    )


def concept_examples(
    store: Store,
    feature_id: int,
    *,
    run_id: int,
    top: int = 20,
    negatives: int = 20,
    models: RunModels | None = None,
    seed: int = 0,
) -> ConceptExamples:
    """The concept's `top` strongest documents with the firing tokens marked, and `negatives` documents
    where it is absent. Without `models` only the token of each document's max is marked."""
    if top < 1:
        raise SaeembedError(f"top must be at least 1, got {top}")
    n_docs = store.rows("examples_concept_count", {"run_id": run_id, "feature_id": feature_id})["n"][0]
    ranked = ranked_documents(store, run_id, [feature_id], first_rank=1, last_rank=top)
    positives = ranked.join(documents_text(store, ranked["doc_id"]), on="doc_id", how="left").sort("rank")
    texts = positives["text"].to_list()
    offsets = load_tokenizer(reader_model_of_run(store, run_id)).offsets(texts)
    argmax = positives["argmax_pos"].to_list()
    fired = firing_positions(models, texts, feature_id) if models is not None else [[p] for p in argmax]
    positives = positives.with_columns(
        pl.Series("token", [token_at(t, o, p) for t, o, p in zip(texts, offsets, argmax, strict=True)], dtype=pl.Utf8),
        pl.Series(
            "context", [mark_context(t, o, p) for t, o, p in zip(texts, offsets, argmax, strict=True)], dtype=pl.Utf8
        ),
        pl.Series(
            "marked", [mark_positions(t, o, f) for t, o, f in zip(texts, offsets, fired, strict=True)], dtype=pl.Utf8
        ),
    ).select("doc_id", "rank", "max_act", "argmax_pos", "text", "token", "context", "marked")
    absent = absent_documents(store, run_id, [feature_id], per_feature=negatives, seed=seed)
    negative_docs = absent.join(documents_text(store, absent["doc_id"]), on="doc_id", how="left").select(
        "doc_id", "text"
    )
    return ConceptExamples(feature_id, run_id, int(n_docs), positives, negative_docs)


def documents_text(store: Store, doc_ids: pl.Series | Sequence[int]) -> pl.DataFrame:
    """doc_id, text for the given documents."""
    ids = sorted(set(doc_ids.to_list() if isinstance(doc_ids, pl.Series) else doc_ids))
    return store.rows("examples_texts", wanted_text=pa.table({"doc_id": pa.array(ids, type=pa.int64())}))


def reader_model_of_run(store: Store, run_id: int) -> str:
    return store.run(run_id).reader_model
