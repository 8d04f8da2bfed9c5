"""Concept matching: each concept of one embedding run paired with its closest concept of another.

Two runs over the same documents (two SAEs on one reader, one SAE per release of a model, two readers)
each have their own latents. As in Lan et al. (2024), "Sparse Autoencoders Reveal Universal Feature Spaces
Across Large Language Models", a concept of run A is matched to the concept of run B whose activations
over the shared documents correlate best with its own (Pearson; a concept's activation in a document is
its max activation there, 0 where it has no row), and the matched spaces are compared as the paper does:
SVCCA of the matched concepts' decoder directions, one sample per pair, against the same concepts paired
at random. When both SAEs read the same reader at the same layer their decoder directions can be compared
directly instead (cosine, as Paulo & Belrose (2025) compare SAEs trained with different seeds).

Correlations come from products of the sparse documents × concepts activations, in blocks of A's
concepts: never a dense matrix of every document and concept. Only concepts that fire in a common
document can correlate positively (the dot product of the two is 0 otherwise, so the correlation is
−μ_a·μ_b / σ_a·σ_b ≤ 0), so they are the only candidates.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl
import torch
from scipy import sparse

from saeembed.concepts.labels import MATCHED_SCORE
from saeembed.concepts.provenance import concept_labels, with_labels
from saeembed.errors import SaeembedError
from saeembed.model.formats import load_sae
from saeembed.model.itda import jaccard
from saeembed.model.sae import SparseAutoencoder
from saeembed.model.tokens import load_tokenizer, mark_context
from saeembed.options import MatchOptions
from saeembed.storage.store import RunInfo, Store

BLOCK_ENTRIES = 1 << 24
"""Scores held at once (A's block of concepts × B's concepts): 128 MB of float64."""
SPARSE_COST = 250
"""How many dense multiply-adds cost as much as one sparse one: on the project's machine scipy's sparse
product takes 3–14 ns per multiply-add and a float32 BLAS product 0.02 ns (docs/benchmarks.md), so a block
is multiplied dense once the concepts fire in more than ≈ 1/250 of the (document, concept) cells."""
SVCCA_PAIRS = 8192
"""Matched pairs SVCCA reads at most (a seeded sample): bounds its SVDs at 8,192 × the SAEs' input width."""
SVCCA_VARIANCE = 0.99
"""Share of each side's variance its singular directions keep before CCA (Raghu et al. 2017)."""
SVCCA_SAMPLES_PER_DIRECTION = 10
"""CCA of r directions over n samples finds high correlations by chance once r/n is large (two random
r-dimensional subspaces of n dimensions share directions): with 442 pairs of 576-wide decoders every
direction is kept and SVCCA was 0.91 for the matched pairs and for shuffled ones alike. At most n/10
directions keep the chance level, which the shuffled reference shows, well below 1."""


class MatchSummary(NamedTuple):
    """How universal two runs' concept spaces are."""

    n_docs: int
    """Shared documents the activations were read from (a seeded sample of at most `max_docs`)."""
    n_concepts_a: int
    """Concepts of A that were matched: with the correlation method, those that vary over the documents."""
    share_matched: float
    """Share of them whose best score is at least 0.5."""
    mean_best: float
    """Their mean best score."""
    svcca: float | None
    """SVCCA of the decoder directions of the matched pairs (score ≥ 0.5), one sample per pair (Lan et al.
    2024). None without both SAEs' weights or with fewer than 2 matched pairs."""
    svcca_reference: float | None
    """The same with the pairs shuffled: what chance alone gives (SVCCA is invariant to any linear map of
    each side, so only the pairing can tell the two apart)."""
    itda_jaccard: float | None
    """When both runs' SAEs are ITDA dictionaries: the Jaccard similarity of their atoms (the training
    activations they are), as Leask et al. compare models. Meaningful when both were built from the same
    activations in the same order: one corpus, --seed and --max-tokens, readers that share a tokenizer."""


class ConceptMatches(NamedTuple):
    """The result of `match_concepts`."""

    analysis_id: int
    """Key of the matching in `analyses`, `concept_matches` and `concept_match_summary`."""
    summary: MatchSummary
    """How universal the two spaces are."""
    matches: pl.DataFrame
    """feature_a, label_a, feature_b, label_b, score, runner_up, runner_up_score, label_source_a, label_score_a,
    label_source_b, label_score_b: the `top` best matches."""


class BestTwo(NamedTuple):
    """For each concept of A that has a candidate: its best and second-best concept of B."""

    feature_a: np.ndarray
    """Concepts of A (ascending)."""
    best: np.ndarray
    """Their best match in B."""
    score: np.ndarray
    """Its score."""
    runner_up: np.ndarray
    """Their second best in B (-1 where there is none)."""
    runner_up_score: np.ndarray
    """Its score (NaN where there is none)."""


def match_concepts(
    store: Store,
    run_a: int,
    run_b: int,
    *,
    method: str = "correlation",
    max_docs: int = 20_000,
    top: int = 20,
) -> ConceptMatches:
    """Match every concept of embedding run `run_a` with its closest concept of run `run_b` (`method`:
    correlation of activations over at most `max_docs` shared documents, or decoder cosine), record the
    matches (`concept_matches`) and how universal the two spaces are (`concept_match_summary`), and return
    the summary with the `top` best matches."""
    started = time.perf_counter()
    options = MatchOptions(run_a=run_a, run_b=run_b, method=method, max_docs=max_docs, top=top)
    info_a, info_b = store.run(run_a), store.run(run_b)
    if method == "decoder":
        _check_same_space(info_a, info_b)
    docs = _shared_documents(store, info_a, info_b, max_docs)
    sae_a, sae_b = _load_sae(info_a), _load_sae(info_b)
    decoder_a, decoder_b = _decoder(sae_a), _decoder(sae_b)
    if method == "decoder" and decoder_a is not None and decoder_b is not None:  # both there: checked above
        best = best_cosine(decoder_a, decoder_b)
    else:
        best = best_correlated(_activations(store, info_a, docs), _activations(store, info_b, docs))
    summary = _summary(best, docs.size, decoder_a, decoder_b)._replace(itda_jaccard=_itda_jaccard(sae_a, sae_b))
    matches = pl.DataFrame(
        {
            "feature_a": best.feature_a.astype(np.int32),
            "feature_b": best.best.astype(np.int32),
            "score": best.score,
            "runner_up": best.runner_up.astype(np.int32),
            "runner_up_score": best.runner_up_score,
        }
    ).with_columns(  # no runner-up: NULL in both columns
        pl.when(pl.col("runner_up") >= 0).then(pl.col("runner_up")),
        pl.col("runner_up_score").fill_nan(None),
    )
    inputs = {"n_docs": int(docs.size), "sae_a": info_a.sae_id, "sae_b": info_b.sae_id}
    analysis_id = store.record(
        "concept-match",
        options.params(),
        inputs,
        time.perf_counter() - started,
        {"concept_matches": matches, "concept_match_summary": pl.DataFrame([summary._asdict()])},
    )
    shown = matches.sort("score", "feature_a", descending=[True, False]).head(top)
    return ConceptMatches(analysis_id, summary, _with_labels(store, info_a, info_b, shown))


def load_matches(store: Store, analysis_id: int, *, top: int = 50) -> ConceptMatches:
    """A stored matching: its summary and its `top` best matches, labelled, with each side's concept «marked»
    where it peaks in its strongest document of its own run (example_a, example_b), for reports."""
    stored = store.analysis(analysis_id)
    if stored.kind != "concept-match":
        raise SaeembedError(f"analysis {analysis_id} is a {stored.kind!r}, not a concept matching")
    info_a, info_b = store.run(stored.params["run_a"]), store.run(stored.params["run_b"])
    rows = store.rows("concept_matches_stored", {"analysis_id": analysis_id, "limit": top})
    if rows.height == 0:
        raise SaeembedError(f"concept matching {analysis_id} matched no concepts: there is nothing to show")
    summary = MatchSummary(**{name: rows[name][0] for name in MatchSummary._fields})
    shown = _with_labels(store, info_a, info_b, rows)
    return ConceptMatches(
        analysis_id,
        summary,
        shown.with_columns(
            pl.Series("example_a", _strongest_marked(store, info_a, shown["feature_a"].to_list()), dtype=pl.Utf8),
            pl.Series("example_b", _strongest_marked(store, info_b, shown["feature_b"].to_list()), dtype=pl.Utf8),
        ),
    )


def _strongest_marked(store: Store, run: RunInfo, feature_ids: list[int]) -> list[str | None]:
    """For each concept, its strongest document in `run` with the token where it peaks «marked»."""
    params = {"run_id": run.run_id, "feature_ids": feature_ids, "per_feature": 1}
    strongest = store.rows("concept_argmax_documents", params)
    tokenizer = load_tokenizer(run.reader_model)
    offsets = tokenizer.offsets(strongest["text"].to_list())
    marked = {
        feature: mark_context(text, offset, position)
        for feature, text, offset, position in zip(
            strongest["feature_id"], strongest["text"], offsets, strongest["argmax_pos"], strict=True
        )
    }
    return [marked.get(feature) for feature in feature_ids]


def best_correlated(acts_a: sparse.csr_matrix, acts_b: sparse.csr_matrix) -> BestTwo:
    """For each concept of A whose activations vary over the documents (rows), the two concepts of B whose
    activations correlate best with its own (Pearson), among B's concepts that fire with it somewhere."""
    n_docs = acts_a.shape[0]
    mean_a, std_a = _moments(acts_a)
    mean_b, std_b = _moments(acts_b)
    varying_a = np.flatnonzero(std_a > 0)
    by_concept_a = acts_a.tocsc()
    dense = _dense_is_cheaper(acts_a, acts_b)
    block = max(1, BLOCK_ENTRIES // max(acts_b.shape[1], 1))
    parts = []
    for start in range(0, varying_a.size, block):
        concepts = varying_a[start : start + block]
        columns = by_concept_a[:, concepts].tocsr()
        dots = _dense_dots(columns, acts_b) if dense else (columns.T.tocsr() @ acts_b).toarray()
        fired_together = dots > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            scores = (dots / n_docs - np.outer(mean_a[concepts], mean_b)) / np.outer(std_a[concepts], std_b)
        parts.append(_best_two(concepts, np.where(fired_together & (std_b > 0), scores, -np.inf)))
    return _concatenate(parts)


def best_cosine(decoder_a: np.ndarray, decoder_b: np.ndarray) -> BestTwo:
    """For each concept of A (row of its decoder, [d_sae_a, d_in]), the two concepts of B whose decoder
    directions have the highest cosine with its own."""
    unit_a = decoder_a / np.maximum(np.linalg.norm(decoder_a, axis=1, keepdims=True), 1e-12)
    unit_b = decoder_b / np.maximum(np.linalg.norm(decoder_b, axis=1, keepdims=True), 1e-12)
    block = max(1, BLOCK_ENTRIES // max(unit_b.shape[0], 1))
    parts = []
    for start in range(0, unit_a.shape[0], block):
        concepts = np.arange(start, min(start + block, unit_a.shape[0]))
        parts.append(_best_two(concepts, (unit_a[concepts] @ unit_b.T).astype(np.float64)))
    return _concatenate(parts)


def svcca(x: np.ndarray, y: np.ndarray, *, variance: float = SVCCA_VARIANCE) -> float:
    """SVCCA (Raghu et al. 2017) of two representations of the same samples ([n_samples, width] each): each
    side reduced to the singular directions that keep `variance` of its variance, then the mean canonical
    correlation of the two subspaces. Written here because scikit-learn's CCA fits its components one by
    one (NIPALS) and SVCCA needs every canonical correlation; with orthonormal bases of both subspaces they
    are the singular values of the product of the bases. Each side keeps at most one direction per
    SVCCA_SAMPLES_PER_DIRECTION samples."""

    most = max(1, x.shape[0] // SVCCA_SAMPLES_PER_DIRECTION)

    def basis(m: np.ndarray) -> np.ndarray:
        centered = m - m.mean(axis=0)
        u, s, _ = np.linalg.svd(centered, full_matrices=False)
        energy = np.cumsum(s**2)
        kept = int(np.searchsorted(energy, variance * energy[-1]) + 1) if energy[-1] > 0 else 0
        return u[:, : min(kept, most)]

    basis_x, basis_y = basis(x), basis(y)
    if basis_x.shape[1] == 0 or basis_y.shape[1] == 0:
        return 0.0
    correlations = np.linalg.svd(basis_x.T @ basis_y, compute_uv=False)
    return float(np.clip(correlations, 0, 1).mean())


def _check_same_space(run_a: RunInfo, run_b: RunInfo) -> None:
    """Decoder directions are comparable only when both SAEs decode the same reader's same layer."""
    if (run_a.reader_model, run_a.layer) != (run_b.reader_model, run_b.layer):
        raise SaeembedError(
            f"--method decoder needs two SAEs on the same reader and layer: run {run_a.run_id} read "
            f"{run_a.reader_model} layer {run_a.layer}, run {run_b.run_id} {run_b.reader_model} layer {run_b.layer}"
            " (use --method correlation)"
        )
    for run in (run_a, run_b):
        if run.sae_path is None or not Path(run.sae_path).exists():
            where = "has no file" if run.sae_path is None else f"file {run.sae_path} is gone"
            raise SaeembedError(f"--method decoder needs the SAE's weights: run {run.run_id}'s SAE {where}")


def _shared_documents(store: Store, run_a: RunInfo, run_b: RunInfo, max_docs: int) -> np.ndarray:
    """doc_id (ascending) of the documents both runs embedded; a seeded sample of `max_docs` of them."""
    with store.reading():
        shared = np.intersect1d(store.run_documents(run_a), store.run_documents(run_b))
    if shared.size < 2:
        raise SaeembedError(
            f"runs {run_a.run_id} ({run_a.corpus}) and {run_b.run_id} ({run_b.corpus}) share "
            f"{shared.size} embedded documents: matching needs at least 2 documents both runs embedded"
        )
    if shared.size > max_docs:
        shared = np.sort(np.random.default_rng(0).choice(shared, size=max_docs, replace=False))
    return shared


def _activations(store: Store, run: RunInfo, docs: np.ndarray) -> sparse.csr_matrix:
    """[len(docs), d_sae] max activations of `run`'s concepts in the documents `docs` (ascending)."""
    params = {"run_id": run.run_id, "first_doc": int(docs[0]), "last_doc": int(docs[-1])}
    rows = store.arrow("match_concept_rows", params)
    doc_id = rows.column("doc_id").to_numpy()
    position = np.minimum(np.searchsorted(docs, doc_id), docs.size - 1)
    wanted = docs[position] == doc_id
    return sparse.csr_matrix(
        (
            rows.column("max_act").to_numpy().astype(np.float64)[wanted],
            (position[wanted], rows.column("feature_id").to_numpy()[wanted]),
        ),
        shape=(docs.size, run.d_sae),
    )


def _moments(acts: sparse.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Each concept's mean and standard deviation over the documents, zeros included."""
    n_docs = acts.shape[0]
    mean = np.asarray(acts.sum(axis=0)).ravel() / n_docs
    square = np.asarray(acts.multiply(acts).sum(axis=0)).ravel() / n_docs
    return mean, np.sqrt(np.maximum(square - mean**2, 0))


def _dense_is_cheaper(acts_a: sparse.csr_matrix, acts_b: sparse.csr_matrix) -> bool:
    """Whether A's concepts × B's concepts products cost less as dense BLAS than as sparse products."""
    sparse_work = float(np.diff(acts_a.indptr).astype(np.float64) @ np.diff(acts_b.indptr).astype(np.float64))
    dense_work = float(acts_a.shape[0]) * acts_a.shape[1] * acts_b.shape[1]
    return dense_work < SPARSE_COST * sparse_work


def _dense_dots(columns: sparse.csr_matrix, acts_b: sparse.csr_matrix) -> np.ndarray:
    """columnsᵀ · acts_b by float32 BLAS over chunks of documents, so that no chunk made dense is large."""
    dots = np.zeros((columns.shape[1], acts_b.shape[1]), dtype=np.float64)
    chunk = max(1, BLOCK_ENTRIES // (4 * max(columns.shape[1] + acts_b.shape[1], 1)))
    for lo in range(0, columns.shape[0], chunk):
        part_a = columns[lo : lo + chunk].astype(np.float32).toarray()
        dots += part_a.T @ acts_b[lo : lo + chunk].astype(np.float32).toarray()
    return dots


def _best_two(concepts: np.ndarray, scores: np.ndarray) -> BestTwo:
    """The two highest scores of each row of `scores` (a block of A's `concepts` × B's concepts); rows
    without a finite score are left out."""
    if scores.shape[1] < 2:  # B has one concept: pad with a candidate that never wins
        scores = np.hstack([scores, np.full((scores.shape[0], 2 - scores.shape[1]), -np.inf)])
    top = np.argpartition(-scores, 1, axis=1)[:, :2]
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    top, top_scores = np.take_along_axis(top, order, axis=1), np.take_along_axis(top_scores, order, axis=1)
    kept = np.isfinite(top_scores[:, 0])
    has_second = np.isfinite(top_scores[:, 1])
    return BestTwo(
        concepts[kept],
        top[kept, 0],
        top_scores[kept, 0],
        np.where(has_second, top[:, 1], -1)[kept],
        np.where(has_second, top_scores[:, 1], np.nan)[kept],
    )


def _concatenate(parts: list[BestTwo]) -> BestTwo:
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return BestTwo(empty, empty, np.zeros(0), empty, np.zeros(0))
    return BestTwo(*(np.concatenate(column) for column in zip(*parts, strict=True)))


def _load_sae(run: RunInfo) -> SparseAutoencoder | None:
    """Run `run`'s SAE (loaded on the CPU, float32); None when no file holds it."""
    if run.sae_path is None or not Path(run.sae_path).exists():
        return None
    return load_sae(run.sae_path, dtype=torch.float32)


def _decoder(sae: SparseAutoencoder | None) -> np.ndarray | None:
    """The SAE's decoder directions, [d_sae, d_in]."""
    return None if sae is None else sae.W_dec.detach().numpy().astype(np.float64)


def _itda_jaccard(sae_a: SparseAutoencoder | None, sae_b: SparseAutoencoder | None) -> float | None:
    """The Jaccard similarity of two ITDA dictionaries' atoms; None unless both are ITDA dictionaries."""
    sources = [sae.cfg.meta.get("atom_sources") for sae in (sae_a, sae_b) if sae is not None]
    if len(sources) < 2 or any(s is None for s in sources):
        return None
    return jaccard(torch.tensor(sources[0]), torch.tensor(sources[1]))


def _summary(best: BestTwo, n_docs: int, decoder_a: np.ndarray | None, decoder_b: np.ndarray | None) -> MatchSummary:
    """The share and mean of the best scores, and SVCCA of the matched pairs' decoder directions against the
    same pairs shuffled."""
    if best.feature_a.size == 0:
        return MatchSummary(n_docs, 0, 0.0, 0.0, None, None, None)
    pairs = np.flatnonzero(best.score >= MATCHED_SCORE)
    matched = shuffled = None
    if decoder_a is not None and decoder_b is not None and pairs.size >= 2:
        rng = np.random.default_rng(0)
        if pairs.size > SVCCA_PAIRS:
            pairs = np.sort(rng.choice(pairs, size=SVCCA_PAIRS, replace=False))
        own = decoder_a[best.feature_a[pairs]]
        matched = svcca(own, decoder_b[best.best[pairs]])
        shuffled = svcca(own, decoder_b[rng.permutation(best.best[pairs])])
    return MatchSummary(
        n_docs,
        int(best.feature_a.size),
        float(np.mean(best.score >= MATCHED_SCORE)),
        float(np.mean(best.score)),
        matched,
        shuffled,
        None,
    )


def _with_labels(store: Store, run_a: RunInfo, run_b: RunInfo, matches: pl.DataFrame) -> pl.DataFrame:
    """The matches with each side's current label, where it was made and its score (None where the concept has
    no label). Every concept is matched, so no peak tokens here: the page shows each one's strongest document."""
    joined = matches
    for side, run in (("a", run_a), ("b", run_b)):
        labels = concept_labels(store, run, matches[f"feature_{side}"].to_list(), peaks=False)
        joined = with_labels(joined, labels, on=f"feature_{side}", suffix=f"_{side}")
    return joined.select(
        "feature_a",
        "label_a",
        "feature_b",
        "label_b",
        "score",
        "runner_up",
        "runner_up_score",
        "label_source_a",
        "label_score_a",
        "label_source_b",
        "label_score_b",
    )
