"""Pooling token codes into per-document concept statistics, against hand-computed values."""

from __future__ import annotations

import numpy as np
import torch

from saeembed.model.pooling import _merge_pooled, pool_codes
from saeembed.model.sae import SparseCodes


def hand_example() -> tuple[SparseCodes, torch.Tensor, torch.Tensor, int]:
    # Two documents: doc 0 has 3 tokens, doc 1 has 2 tokens; 4 latents.
    codes = torch.tensor(
        [
            [0.0, 2.0, 0.0, 1.0],  # doc 0, pos 0
            [0.0, 3.0, 0.0, 0.0],  # doc 0, pos 1
            [0.5, 3.0, 0.0, 0.0],  # doc 0, pos 2 (ties latent 1's max: the first position wins)
            [0.0, 0.0, 4.0, 0.0],  # doc 1, pos 0
            [0.0, 1.0, 1.0, 0.0],  # doc 1, pos 1
        ]
    )
    return SparseCodes.from_dense(codes), torch.tensor([0, 0, 0, 1, 1]), torch.tensor([0, 1, 2, 0, 1]), 4


def as_rows(pooled) -> dict[tuple[int, int], tuple[float, float, int, int]]:
    return {(int(d), int(f)): (float(m), float(s), int(n), int(p)) for d, f, m, s, n, p in zip(*pooled, strict=True)}


def test_pool_codes_matches_hand_computed_statistics():
    assert as_rows(pool_codes(*hand_example())) == {
        (0, 0): (0.5, 0.5, 1, 2),
        (0, 1): (3.0, 8.0, 3, 1),
        (0, 3): (1.0, 1.0, 1, 0),
        (1, 1): (1.0, 1.0, 1, 1),
        (1, 2): (4.0, 5.0, 2, 0),
    }


def test_pooling_in_chunks_then_merging_equals_pooling_at_once():
    codes, token_doc, token_pos, d_sae = hand_example()
    whole = as_rows(pool_codes(codes, token_doc, token_pos, d_sae))
    parts = []
    for first, end in ((0, 2), (2, 5)):
        in_chunk = (codes.row >= first) & (codes.row < end)
        chunk = SparseCodes(codes.row[in_chunk] - first, codes.latent[in_chunk], codes.value[in_chunk])
        parts.append(pool_codes(chunk, token_doc[first:end], token_pos[first:end], d_sae))
    merged = _merge_pooled(parts, d_sae=d_sae)
    assert as_rows(merged) == whole
    assert isinstance(merged.doc_index, np.ndarray)
