"""Documents → reader residuals → SAE codes → one pooled sparse concept vector per document.

torch and numpy only: the rows come out as numpy columns, so the reader and SAE run (and can be
benchmarked) where no database is installed; `saeembed.jobs` writes them to the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from saeembed.model.reader import Reader
from saeembed.model.sae import SparseAutoencoder, SparseCodes
from saeembed.model.units import TOKEN_INPUT

# SAE pre-activations are built for at most this many (token × latent) cells at a time (≈256 MB in fp32).
MAX_CODE_CELLS = 64 * 2**20


@dataclass(frozen=True)
class EmbedOptions:
    max_tokens: int = 512
    """Document tokens read per document; longer documents are truncated (and marked so)."""
    chat_template: bool = True
    """Wrap each document as the assistant turn of the reader's chat template (template tokens not pooled)."""
    batch_size: int = 32
    """Documents per forward pass (batches are formed from length-sorted documents)."""
    max_batch_tokens: int = 16384
    """Padded tokens per forward pass, so batches of long documents stay within memory."""


class PooledCodes(NamedTuple):
    doc_index: np.ndarray
    """Position of the document in the batch, one per (document, concept present)."""
    feature_id: np.ndarray
    """SAE latent index."""
    max_act: np.ndarray
    """Max activation over the document's tokens."""
    sum_act: np.ndarray
    """Sum of activations over the document's tokens."""
    n_active_tokens: np.ndarray
    """Tokens where the latent is non-zero."""
    argmax_pos: np.ndarray
    """0-based index of the first token reaching max_act, among the document's own tokens."""


def pool_codes(codes: SparseCodes, token_doc: Tensor, token_pos: Tensor, d_sae: int) -> PooledCodes:
    """Pool token-level codes into per-document statistics, from the non-zeros only.

    Works for any SAE (TopK has k non-zeros per token, ReLU/JumpReLU a variable number), so the cost
    follows the number of active (token, latent) pairs rather than tokens × d_sae.
    """
    token, feature, values = codes.row.cpu(), codes.latent.cpu(), codes.value.cpu()
    keys = token_doc[token] * d_sae + feature
    groups, group_of = torch.unique(keys, return_inverse=True)
    n_groups = groups.numel()
    max_act = torch.zeros(n_groups).scatter_reduce_(0, group_of, values, "amax", include_self=False)
    sum_act = torch.zeros(n_groups).index_add_(0, group_of, values)
    n_active = torch.bincount(group_of, minlength=n_groups)
    at_max = values == max_act[group_of]
    positions = token_pos[token]
    argmax_pos = torch.full((n_groups,), torch.iinfo(torch.int64).max, dtype=torch.int64).scatter_reduce_(
        0, group_of[at_max], positions[at_max], "amin"
    )
    return PooledCodes(
        doc_index=(groups // d_sae).numpy(),
        feature_id=(groups % d_sae).numpy(),
        max_act=max_act.numpy(),
        sum_act=sum_act.numpy(),
        n_active_tokens=n_active.numpy(),
        argmax_pos=argmax_pos.numpy(),
    )


class EmbeddedBatch(NamedTuple):
    documents: dict[str, np.ndarray]
    """Columns doc_id, n_tokens, n_tokens_total, truncated, n_features (rows of `embedded_documents`)."""
    features: dict[str, np.ndarray]
    """Columns doc_id, feature_id, max_act, mean_act, n_active_tokens, argmax_pos (rows of `doc_features`)."""
    n_tokens: int
    """Document tokens read in this batch (template tokens excluded)."""


def embed_batch(
    reader: Reader,
    sae: SparseAutoencoder,
    doc_ids: Sequence[int],
    token_ids: Sequence[Sequence[int]],
    n_tokens_total: Sequence[int],
    prefix: Sequence[int],
    max_tokens: int,
    units: BatchUnits | None = None,
) -> EmbeddedBatch:
    """Embed one batch of tokenized documents into pooled concept rows: one row per document, or with
    `units` one per unit (each document still read whole, its tokens pooled per unit)."""
    tokens = reader.document_residuals(token_ids, prefix)
    if units is None:
        ids = np.asarray(doc_ids, dtype=np.int64)
        row, position, total = tokens.doc_index, tokens.position, np.asarray(n_tokens_total, dtype=np.int32)
    else:
        ids, total = units.ids, units.n_tokens_total
        row = torch.as_tensor(np.concatenate(units.token_unit))
        position = _positions_within(row)
    kept = row >= 0  # tokens of units embedded earlier (a document's units split across two calls) are skipped
    residuals = tokens.residuals if bool(kept.all()) else tokens.residuals[kept.to(tokens.residuals.device)]
    row, position = row[kept], position[kept]
    pool = _pool if sae.cfg.input_unit == TOKEN_INPUT else _pool_means
    pooled = pool(sae, reader, residuals, row, position)
    n_tokens = np.bincount(row.numpy(), minlength=len(ids)) if units is not None else tokens.lengths.numpy()
    features = {
        "doc_id": ids[pooled.doc_index],
        "feature_id": pooled.feature_id.astype(np.int32),
        "max_act": pooled.max_act.astype(np.float32),
        "mean_act": (pooled.sum_act / n_tokens[pooled.doc_index]).astype(np.float32),
        "n_active_tokens": pooled.n_active_tokens.astype(np.int32),
        "argmax_pos": pooled.argmax_pos.astype(np.int32),
    }
    documents = {
        "doc_id": ids,
        "n_tokens": n_tokens.astype(np.int32),
        "n_tokens_total": total.astype(np.int32),
        "truncated": total > (max_tokens if units is None else n_tokens),
        "n_features": np.bincount(pooled.doc_index, minlength=len(ids)).astype(np.int32),
    }
    return EmbeddedBatch(documents, features, int(n_tokens.sum()))


def unit_means(residuals: Tensor, owner: Tensor) -> tuple[Tensor, Tensor]:
    """The mean residual of each unit that has tokens, in float32, and those units' indices (ascending).

    `owner[i]` is the unit of row i of `residuals` [tokens, d]. The mean is RISE's step representation
    ("Fantastic Reasoning Behaviors and Where to Find Them": a step's activations averaged over its tokens).
    """
    units, row_of = torch.unique(owner, return_inverse=True)
    sums = torch.zeros(units.numel(), residuals.shape[1], dtype=torch.float32, device=residuals.device)
    sums.index_add_(0, row_of.to(residuals.device), residuals.float())
    counts = torch.bincount(row_of, minlength=units.numel()).to(sums)
    return sums / counts[:, None], units


class BatchUnits(NamedTuple):
    """The units of a batch's documents: the rows `embed_batch` writes instead of the documents'."""

    ids: np.ndarray
    """doc_id of each unit (units are stored as the documents of a unit corpus)."""
    token_unit: list[np.ndarray]
    """Per document of the batch, the unit (index into `ids`) of each token read; -1 for a unit not wanted."""
    n_tokens_total: np.ndarray
    """Tokens of each unit in its whole document (more than were read where the document was truncated)."""


def _positions_within(row: Tensor) -> Tensor:
    """Each token's index within its unit (a unit's tokens are consecutive): argmax_pos of a unit counts
    from the unit's first token, so look-ups that tokenize the unit's own text find it."""
    if row.numel() == 0:
        return row
    starts = torch.ones_like(row, dtype=torch.bool)
    starts[1:] = row[1:] != row[:-1]
    first = torch.cummax(torch.where(starts, torch.arange(row.numel()), 0), dim=0).values
    return torch.arange(row.numel()) - first


def _pool(sae: SparseAutoencoder, reader: Reader, residuals: Tensor, row: Tensor, position: Tensor) -> PooledCodes:
    """Encode token residuals with the SAE a chunk at a time and pool them by `row`."""
    chunk = max(1, MAX_CODE_CELLS // sae.cfg.d_sae)
    pooled_parts = []
    with torch.inference_mode(), reader.autocast():
        for start in range(0, residuals.shape[0], chunk):
            part = slice(start, start + chunk)
            codes = sae.encode_sparse(residuals[part])
            # A document's tokens may straddle two chunks: pool per chunk, then merge below.
            pooled_parts.append(pool_codes(codes, row[part], position[part], sae.cfg.d_sae))
    if not pooled_parts:
        return _no_codes()
    return pooled_parts[0] if len(pooled_parts) == 1 else _merge_pooled(pooled_parts, sae.cfg.d_sae)


def _no_codes() -> PooledCodes:
    empty = np.zeros(0, dtype=np.int64)
    return PooledCodes(empty, empty, empty.astype(np.float32), empty.astype(np.float32), empty, empty)


def _pool_means(
    sae: SparseAutoencoder, reader: Reader, residuals: Tensor, row: Tensor, position: Tensor
) -> PooledCodes:
    """For an SAE trained on unit means (`train-sae --unit`): each row's mean residual is encoded once, and
    its code is the concept's activation (max and mean alike). The row's tokens whose own pre-activation of
    the concept is positive count as its active tokens, and the one where it is largest gives argmax_pos,
    so a unit's concepts can still be shown where they fire (pre-activations are affine in the input, so
    the mean's is the mean of the tokens')."""
    if row.numel() == 0:
        return _no_codes()
    with torch.inference_mode(), reader.autocast():
        means, rows = unit_means(residuals, row)
        codes = sae.encode_sparse(means)
        code_row = rows[codes.row.cpu()]
        order = torch.argsort(code_row * sae.cfg.d_sae + codes.latent.cpu())
        code_row, latent, value = code_row[order], codes.latent.cpu()[order], codes.value.cpu()[order].float()
        # Every (token, code of its row) pair; tokens come row by row, codes are sorted by row.
        n_rows = int(row.max()) + 1
        codes_per_row = torch.bincount(code_row, minlength=n_rows)
        first_code = torch.cumsum(codes_per_row, 0) - codes_per_row
        per_token = codes_per_row[row]
        pair_token = torch.repeat_interleave(torch.arange(row.numel()), per_token)
        pair_start = torch.cumsum(per_token, 0) - per_token
        pair_code = first_code[row[pair_token]] + torch.arange(pair_token.numel()) - pair_start[pair_token]
        score = torch.empty(pair_token.numel())
        chunk = max(1, MAX_CODE_CELLS // sae.cfg.d_sae)
        for start in range(0, residuals.shape[0], chunk):
            lo, hi = torch.searchsorted(pair_token, torch.tensor([start, start + chunk])).tolist()
            h = sae.pre_activations(residuals[start : start + chunk])
            local = (pair_token[lo:hi] - start).to(h.device)
            score[lo:hi] = h[local, latent[pair_code[lo:hi]].to(h.device)].float().cpu()
    n_codes = code_row.numel()
    n_active = torch.bincount(pair_code[score > 0], minlength=n_codes)
    best = torch.full((n_codes,), -torch.inf).scatter_reduce_(0, pair_code, score, "amax", include_self=False)
    at_best = score == best[pair_code]
    argmax_pos = torch.full((n_codes,), torch.iinfo(torch.int64).max, dtype=torch.int64).scatter_reduce_(
        0, pair_code[at_best], position[pair_token[at_best]], "amin"
    )
    n_tokens = torch.bincount(row, minlength=n_rows)
    return PooledCodes(
        doc_index=code_row.numpy(),
        feature_id=latent.numpy(),
        max_act=value.numpy(),
        sum_act=(value * n_tokens[code_row]).numpy(),
        n_active_tokens=n_active.numpy(),
        argmax_pos=argmax_pos.numpy(),
    )


def _merge_pooled(parts: list[PooledCodes], d_sae: int) -> PooledCodes:
    """Combine per-chunk pooled rows that share (document, feature)."""
    doc_index = np.concatenate([p.doc_index for p in parts])
    feature_id = np.concatenate([p.feature_id for p in parts])
    max_act = np.concatenate([p.max_act for p in parts])
    keys = doc_index.astype(np.int64) * d_sae + feature_id
    groups, group_of = np.unique(keys, return_inverse=True)
    merged_max = np.full(groups.size, -np.inf, dtype=np.float32)
    np.maximum.at(merged_max, group_of, max_act)
    merged_sum = np.bincount(group_of, weights=np.concatenate([p.sum_act for p in parts]), minlength=groups.size)
    merged_count = np.bincount(
        group_of, weights=np.concatenate([p.n_active_tokens for p in parts]), minlength=groups.size
    )
    argmax_pos = np.full(groups.size, np.iinfo(np.int64).max, dtype=np.int64)
    at_max = max_act == merged_max[group_of]
    np.minimum.at(argmax_pos, group_of[at_max], np.concatenate([p.argmax_pos for p in parts])[at_max])
    return PooledCodes(
        doc_index=groups // d_sae,
        feature_id=groups % d_sae,
        max_act=merged_max,
        sum_act=merged_sum,
        n_active_tokens=merged_count.astype(np.int64),
        argmax_pos=argmax_pos,
    )
