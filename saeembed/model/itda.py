"""ITDA dictionaries (Leask et al. 2025, "Inference-Time Decomposition of Activations"): instead of an
encoder trained by gradient descent, a dictionary of real activations chosen greedily, and an encoding by
matching pursuit over it.

Building one is a single pass over the activations: each batch is encoded with the dictionary so far, and
the activations it approximates worst are added to it as atoms (centred and scaled to unit norm) — the
paper's rule. The paper adds an activation whenever its loss passes a threshold, one at a time; here a
batch adds its worst ones above the threshold (at most an eighth of the batch), skipping one that an atom
chosen from the same batch already approximates as well as the threshold asks (what adding them one at a
time would have done). The pass stops once the dictionary has the asked number of atoms, so it reads
about as many activations as it needs (the paper's point: a small fraction of an SAE's data and time).
Each atom remembers which training activation it is, so two dictionaries built from the same tokens can
be compared by the Jaccard similarity of their atoms.

The result is stored as an SAE of arch "itda": W_dec holds the atoms, W_enc their transpose, b_dec the
activations' mean, and `SparseAutoencoder.encode` runs `matching_pursuit` with k steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from saeembed.errors import SaeembedError


class PursuitCodes(NamedTuple):
    """Matching-pursuit codes of a batch of activations, as coordinates (duplicates summed)."""

    row: Tensor
    """Index of the activation in the batch."""
    atom: Tensor
    """Dictionary atom (latent) index."""
    value: Tensor
    """Its coefficient (> 0), float32."""


def matching_pursuit(centered: Tensor, atoms: Tensor, gram: Tensor, k: int) -> PursuitCodes:
    """Non-negative matching pursuit: k times, the atom with the largest positive inner product with what is
    left of each activation takes that product as its coefficient and is subtracted (an atom may be taken
    again: its coefficients add up).

    centered: [n, d] activations minus the dictionary's mean; atoms: [m, d] of unit norm; gram: atoms ·
    atomsᵀ [m, m]. The inner products are updated through the Gram matrix (⟨r − c·a_j, a⟩ = ⟨r, a⟩ −
    c·G[j]), O(m) per step and activation instead of a full product with the atoms (O(m·d)). Coefficients
    are kept non-negative, like an SAE's codes: a concept is present or not, never negatively."""
    n = centered.shape[0]
    with torch.autocast(centered.device.type, enabled=False):  # greedy choices need float32 products
        scores = centered.float() @ atoms.float().T
    rows = torch.arange(n, device=centered.device)
    picked, coefficients = [], []
    for _ in range(k):
        best = scores.argmax(dim=1)
        value = scores[rows, best].clamp(min=0)
        picked.append(best)
        coefficients.append(value)
        scores -= value.unsqueeze(1) * gram[best].float()
    atom = torch.stack(picked, dim=1).reshape(-1)
    value = torch.stack(coefficients, dim=1).reshape(-1)
    row = rows.repeat_interleave(k)
    keep = value > 0
    m = atoms.shape[0]
    # An atom taken twice for one activation: one code, the coefficients summed.
    key, inverse = torch.unique(row[keep] * m + atom[keep], return_inverse=True)
    summed = torch.zeros(key.numel(), dtype=torch.float32, device=centered.device).index_add_(
        0, inverse, value[keep].float()
    )
    return PursuitCodes(key // m, key % m, summed)


def reconstruct(codes: PursuitCodes, atoms: Tensor, n: int) -> Tensor:
    """Σ coefficient · atom for each of the n activations (centred)."""
    out = torch.zeros(n, atoms.shape[1], dtype=torch.float32, device=atoms.device)
    return out.index_add_(0, codes.row, codes.value.unsqueeze(1) * atoms[codes.atom].float())


@dataclass(frozen=True)
class ItdaOptions:
    atoms: int = 8192
    """Atoms in the dictionary (its latents)."""
    k: int = 32
    """Matching-pursuit steps per activation (at most k atoms each)."""
    batch_size: int = 4096
    """Activations encoded at once while choosing atoms."""
    min_error: float = 0.1
    """An activation is added only where the dictionary leaves more than this share of its squared norm
    unexplained (centred); the same share decides when one atom of a batch already covers another."""
    seed: int = 0


class ItdaDictionary(NamedTuple):
    """A dictionary built by `build_itda`."""

    atoms: Tensor
    """[m, d] unit-norm centred activations."""
    mean: Tensor
    """[d] the training activations' mean (what `atoms` are centred on)."""
    sources: Tensor
    """[m] index in the training activations of each atom's activation."""
    read: int
    """Training activations read before the dictionary was full."""
    seconds: float
    """Time the build took."""
    options: dict
    """The ItdaOptions it was built with."""


def build_itda(
    activations: Tensor, options: ItdaOptions, *, on_batch: Callable[[int, int, int], None] | None = None
) -> ItdaDictionary:
    """Choose `options.atoms` atoms among `activations` [tokens, d] in one shuffled pass (see the module
    docstring). `on_batch(batch, batches, atoms so far)` reports progress."""
    if options.atoms < 1 or options.k < 1:
        raise SaeembedError(f"an ITDA dictionary needs at least 1 atom and k ≥ 1, got {options.atoms} and {options.k}")
    if activations.shape[0] < options.atoms:
        raise SaeembedError(
            f"only {activations.shape[0]} activations for {options.atoms} atoms: collect more tokens or ask fewer atoms"
        )
    started = time.perf_counter()
    # Kept in their own dtype (bfloat16 from the collection) and cast a batch at a time: a float32 copy of
    # millions of activations would double the memory the build needs.
    total = activations.shape[0]
    mean = sum(activations[i : i + 65536].float().sum(dim=0) for i in range(0, total, 65536)) / total
    order = torch.randperm(total, generator=torch.Generator().manual_seed(options.seed))
    batches = math.ceil(total / options.batch_size)
    d = activations.shape[1]
    atoms = torch.zeros(0, d)
    gram = torch.zeros(0, 0)
    sources = torch.zeros(0, dtype=torch.long)
    # Cosine above which one atom alone leaves less than min_error of an activation unexplained.
    covered = math.sqrt(1 - options.min_error)
    read = 0
    for batch in range(batches):
        index = order[batch * options.batch_size : (batch + 1) * options.batch_size]
        read += index.numel()
        centered = activations[index].float() - mean
        norms = centered.norm(dim=1)
        usable = norms > 0
        centered, index, norms = centered[usable], index[usable], norms[usable]
        if atoms.shape[0]:
            codes = matching_pursuit(centered, atoms, gram, options.k)
            residual = centered - reconstruct(codes, atoms, centered.shape[0])
            error = residual.pow(2).sum(dim=1) / norms.pow(2)
        else:
            error = torch.ones(centered.shape[0])
        quota = min(options.atoms - atoms.shape[0], math.ceil(options.batch_size / 8))
        chosen = _worst_distinct(centered / norms.unsqueeze(1), error, quota, options.min_error, covered)
        if chosen.numel():
            new = centered[chosen] / norms[chosen].unsqueeze(1)
            cross = atoms @ new.T
            gram = torch.cat([torch.cat([gram, cross], dim=1), torch.cat([cross.T, new @ new.T], dim=1)], dim=0)
            atoms = torch.cat([atoms, new])
            sources = torch.cat([sources, index[chosen]])
        if on_batch is not None:
            on_batch(batch + 1, batches, atoms.shape[0])
        if atoms.shape[0] >= options.atoms:
            break
    return ItdaDictionary(atoms, mean, sources, read, round(time.perf_counter() - started, 1), asdict(options))


def _worst_distinct(unit: Tensor, error: Tensor, quota: int, min_error: float, covered: float) -> Tensor:
    """Up to `quota` activations (rows of `unit`) with the largest errors above `min_error`, worst first,
    leaving out any that an already chosen one covers (cosine ≥ `covered`)."""
    candidates = torch.nonzero(error > min_error).squeeze(1)
    candidates = candidates[error[candidates].argsort(descending=True)]
    chosen: list[int] = []
    for candidate in candidates.tolist():
        if len(chosen) >= quota:
            break
        if chosen and (unit[chosen] @ unit[candidate]).max() >= covered:
            continue
        chosen.append(candidate)
    return torch.tensor(chosen, dtype=torch.long)


def jaccard(sources_a: Tensor, sources_b: Tensor) -> float:
    """Jaccard similarity of two dictionaries built from the same activations: |A ∩ B| / |A ∪ B| of the
    training activations their atoms are (Leask et al. compare models' dictionaries this way)."""
    a, b = set(sources_a.tolist()), set(sources_b.tolist())
    return len(a & b) / len(a | b) if a | b else 1.0
