"""Documents → reader residuals → SAE codes → one pooled sparse concept vector per document.

torch and numpy only: the rows come out as numpy columns, so the reader and SAE run (and can be
benchmarked) where no database is installed; `saeembed.jobs` writes them to the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from saeembed.model.reader import Reader
from saeembed.model.sae import SparseAutoencoder, SparseCodes

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
) -> EmbeddedBatch:
    """Embed one batch of tokenized documents into pooled concept rows."""
    tokens = reader.document_residuals(token_ids, prefix)
    chunk = max(1, MAX_CODE_CELLS // sae.cfg.d_sae)
    autocast = (
        torch.autocast("cpu", dtype=reader.dtype)
        if reader.device.type == "cpu" and reader.dtype != torch.float32
        else nullcontext()
    )
    pooled_parts = []
    with torch.inference_mode(), autocast:
        for start in range(0, tokens.residuals.shape[0], chunk):
            part = slice(start, start + chunk)
            codes = sae.encode_sparse(tokens.residuals[part])
            # A document's tokens may straddle two chunks: pool per chunk, then merge below.
            pooled_parts.append(pool_codes(codes, tokens.doc_index[part], tokens.position[part], sae.cfg.d_sae))
    pooled = pooled_parts[0] if len(pooled_parts) == 1 else _merge_pooled(pooled_parts, sae.cfg.d_sae)
    ids = np.asarray(doc_ids, dtype=np.int64)
    n_tokens = tokens.lengths.numpy()
    features = {
        "doc_id": ids[pooled.doc_index],
        "feature_id": pooled.feature_id.astype(np.int32),
        "max_act": pooled.max_act.astype(np.float32),
        "mean_act": (pooled.sum_act / n_tokens[pooled.doc_index]).astype(np.float32),
        "n_active_tokens": pooled.n_active_tokens.astype(np.int32),
        "argmax_pos": pooled.argmax_pos.astype(np.int32),
    }
    total = np.asarray(n_tokens_total, dtype=np.int32)
    documents = {
        "doc_id": ids,
        "n_tokens": n_tokens.astype(np.int32),
        "n_tokens_total": total,
        "truncated": total > max_tokens,
        "n_features": np.bincount(pooled.doc_index, minlength=len(ids)).astype(np.int32),
    }
    return EmbeddedBatch(documents, features, int(n_tokens.sum()))


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
