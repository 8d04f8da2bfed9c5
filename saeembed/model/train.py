"""Train a TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders") on reader activations,
or build an ITDA dictionary from them (`saeembed.model.itda`).

The model, its forward pass, FVU and the AuxK dead-latent loss are EleutherAI sparsify's `SparseCoder`;
this module collects the activations from our truncated reader, runs the optimisation loop that sparsify's
own trainer would run if it could be handed pre-collected activations, and evaluates on held-out documents.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from saeembed.errors import SaeembedError
from saeembed.model.hub import cache_dir
from saeembed.model.itda import ItdaOptions, build_itda
from saeembed.model.pooling import unit_means
from saeembed.model.reader import Reader, cpu_has_fast_bfloat16, length_batches
from saeembed.model.sae import SaeConfig, SparseAutoencoder
from saeembed.model.units import TOKEN_INPUT, UnitSpec, token_units, unit_spans

COLLECT_CHUNK = 2048


def collect_activations(
    reader: Reader,
    texts: Sequence[str],
    *,
    max_tokens: int = 128,
    chat_template: bool = True,
    batch_size: int = 32,
    token_budget: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    unit: UnitSpec | None = None,
) -> Tensor:
    """Residuals at the reader's layer for the documents' own tokens (template/BOS positions excluded,
    as when embedding), as one [tokens, hidden_size] bfloat16 tensor on the CPU; with `unit`, one row per
    unit (sentence, paragraph, chunk or document) instead: the mean residual of its tokens (`unit_means`).

    Stops once `token_budget` tokens are read. `on_batch(documents, tokens)` reports progress.
    """
    prefix = reader.prefix_ids(chat_template)
    parts: list[Tensor] = []
    collected = 0
    # Length-sort within chunks of the (already shuffled) texts, not across all of them: a token budget
    # must sample documents of every length, not fill up on the shortest ones.
    for chunk_start in range(0, len(texts), COLLECT_CHUNK):
        chunk = texts[chunk_start : chunk_start + COLLECT_CHUNK]
        tokenized = reader.tokenize(chunk, max_tokens)
        owners = _token_owners(reader, chunk, tokenized.ids, unit) if unit is not None else None
        for batch in length_batches(
            [len(ids) for ids in tokenized.ids],
            batch_size=batch_size,
            max_batch_tokens=batch_size * max_tokens,
        ):
            tokens = reader.document_residuals([tokenized.ids[i] for i in batch], prefix)
            rows = tokens.residuals
            if owners is not None:
                rows, _ = unit_means(rows, _batch_units([owners[i] for i in batch]))
            parts.append(rows.to("cpu", torch.bfloat16))
            collected += tokens.residuals.shape[0]
            if on_batch is not None:
                on_batch(len(batch), tokens.residuals.shape[0])
        if token_budget is not None and collected >= token_budget:
            break
    if not parts:
        raise SaeembedError("no activations collected: the corpus has no documents")
    activations = torch.cat(parts)
    return activations[:token_budget] if token_budget is not None and unit is None else activations


def _token_owners(reader: Reader, texts: Sequence[str], ids: Sequence[Sequence[int]], unit: UnitSpec) -> list[Tensor]:
    """Per text, the unit (index within the text) of each token read."""
    offsets = reader.token_offsets(texts)
    return [
        torch.as_tensor(token_units(o[: len(read)], unit_spans(text, unit, o)))
        for text, o, read in zip(texts, offsets, ids, strict=True)
    ]


def _batch_units(owners: list[Tensor]) -> Tensor:
    """The owners of a batch's texts numbered apart, in the order `document_residuals` lays out the tokens."""
    numbered, next_unit = [], 0
    for owner in owners:
        numbered.append(owner + next_unit)
        next_unit += int(owner.max()) + 1 if owner.numel() else 0
    return torch.cat(numbered) if numbered else torch.zeros(0, dtype=torch.int64)


def activation_cache_path(**settings: object) -> Path:
    """Where activations collected under these settings are kept, so a rerun (after a crash, or to
    train again with other options) skips the collection, which is most of the time on a CPU."""
    key = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return cache_dir() / "activations" / f"{key}.pt"


def load_or_collect(path: Path, collect: Callable[[], Tensor]) -> Tensor:
    """The tensor saved at `path`, or `collect()` saved there (atomically) first."""
    if path.exists():
        return torch.load(path, weights_only=True)
    activations = collect()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(activations, partial)
    partial.rename(path)
    return activations


@dataclass(frozen=True)
class TrainOptions:
    d_sae: int = 8192
    """Number of latents."""
    k: int = 32
    """Active latents per token."""
    batch_size: int = 4096
    """Tokens per optimisation step."""
    epochs: int = 1
    """Passes over the training activations."""
    lr: float | None = None
    """Adam learning rate; default 2e-4 / sqrt(d_sae / 2**14), sparsify's scaling of Gao et al.'s rule."""
    auxk_alpha: float = 1 / 32
    """Weight of the AuxK loss (Gao et al. 2024, appendix B.1)."""
    dead_after_tokens: int = 250_000
    """A latent that has not fired for this many training tokens counts as dead and gets the AuxK signal.
    Gao et al. use 10M tokens; our runs see a few million tokens in total, so the window is scaled down."""
    seed: int = 0


@dataclass(frozen=True)
class TrainingReport:
    fvu: float
    """Held-out fraction of variance unexplained over the documents' tokens (the sink position excluded)."""
    fvu_without_outliers: float
    """The same, also leaving out the 0.1% of held-out tokens with the largest norm: a few massive
    activations dominate the variance and can make FVU look better than it is."""
    mean_l0: float
    """Mean number of active latents per held-out token."""
    dead_fraction: float
    """Share of latents that never fire on the held-out tokens."""
    train_tokens: int
    """Training rows: tokens, or with input_unit the units' mean residuals."""
    heldout_tokens: int
    """Held-out rows, counted as train_tokens are."""
    steps: int
    seconds: float
    options: dict
    input_unit: str = TOKEN_INPUT
    """'token', or the unit whose mean residuals it was trained on (`SaeConfig.input_unit`)."""

    def to_dict(self) -> dict:
        return asdict(self)


def train_topk_sae(
    train: Tensor,
    heldout: Tensor,
    options: TrainOptions,
    *,
    device: torch.device | str = "cpu",
    on_step: Callable[[int, int, float], None] | None = None,
    input_unit: str = TOKEN_INPUT,
) -> tuple[SparseAutoencoder, TrainingReport]:
    """Train a TopK SAE on `train` activations [rows, d_in] (tokens, or the means of `input_unit`s);
    evaluate on `heldout`.

    `on_step(step, total_steps, train_fvu)` reports progress.
    """
    if not 0 < options.k <= options.d_sae:
        raise SaeembedError(f"--k must be between 1 and --latents ({options.d_sae}), got {options.k}")
    if train.shape[0] < options.batch_size:
        raise SaeembedError(
            f"only {train.shape[0]} training {'tokens' if input_unit == TOKEN_INPUT else input_unit + ' means'} "
            f"collected, fewer than one batch of {options.batch_size}"
        )
    with contextlib.redirect_stdout(sys.stderr):  # sparsify prints a notice about Triton on import
        from sparsify import SparseCoder, SparseCoderConfig

    started = time.perf_counter()
    generator = torch.Generator().manual_seed(options.seed)
    torch.manual_seed(options.seed)
    device = torch.device(device)
    d_in = train.shape[1]
    coder = SparseCoder(d_in, SparseCoderConfig(num_latents=options.d_sae, k=options.k), device=device)
    lr = options.lr or 2e-4 / math.sqrt(options.d_sae / 2**14)
    optimizer = torch.optim.Adam(coder.parameters(), lr=lr)
    steps_per_epoch = train.shape[0] // options.batch_size
    total_steps = steps_per_epoch * options.epochs
    tokens_since_fired = torch.zeros(options.d_sae, dtype=torch.long, device=device)
    cpu_bf16 = device.type == "cpu" and cpu_has_fast_bfloat16()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if cpu_bf16 else nullcontext()
    step = 0
    for _ in range(options.epochs):
        order = torch.randperm(train.shape[0], generator=generator)
        for batch_start in range(0, steps_per_epoch * options.batch_size, options.batch_size):
            x = train[order[batch_start : batch_start + options.batch_size]].to(device, torch.float32)
            if step == 0:
                # Centre the pre-activations at initialisation (sparsify's trainer; equivalent to
                # Anthropic's proposal of subtracting the decoder bias).
                coder.b_dec.data = x.mean(0)
            coder.set_decoder_norm_to_unit_norm()
            dead_mask = tokens_since_fired > options.dead_after_tokens
            with autocast:
                out = coder(x, dead_mask=dead_mask)
            loss = out.fvu + options.auxk_alpha * out.auxk_loss

            loss.backward()
            coder.remove_gradient_parallel_to_decoder_directions()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            fired = torch.zeros(options.d_sae, dtype=torch.bool, device=device)
            fired[out.latent_indices.flatten()] = True
            tokens_since_fired += x.shape[0]
            tokens_since_fired[fired] = 0
            step += 1
            if on_step is not None:
                on_step(step, total_steps, out.fvu.item())
    coder.set_decoder_norm_to_unit_norm()
    sae = SparseAutoencoder.from_sparsify(coder)
    report = evaluate_sae(sae, heldout)
    return sae, TrainingReport(
        fvu=report["fvu"],
        fvu_without_outliers=report["fvu_without_outliers"],
        mean_l0=report["mean_l0"],
        dead_fraction=report["dead_fraction"],
        train_tokens=int(train.shape[0]),
        heldout_tokens=int(heldout.shape[0]),
        steps=step,
        seconds=round(time.perf_counter() - started, 1),
        options={**asdict(options), "lr": lr},
        input_unit=input_unit,
    )


def train_itda(
    train: Tensor,
    heldout: Tensor,
    options: ItdaOptions,
    *,
    on_batch: Callable[[int, int, int], None] | None = None,
    input_unit: str = TOKEN_INPUT,
) -> tuple[SparseAutoencoder, TrainingReport]:
    """Build an ITDA dictionary of `options.atoms` atoms from `train` activations [tokens, d_in] (one pass,
    no gradients, stopping once the dictionary is full: the report's train_tokens are those read) and
    evaluate it on `heldout` as an SAE is evaluated. The atoms' training activations are
    kept in cfg.meta["atom_sources"] (indices into `train`), for `itda.jaccard`."""
    dictionary = build_itda(train, options, on_batch=on_batch)
    atoms = dictionary.atoms
    cfg = SaeConfig(arch="itda", d_in=atoms.shape[1], d_sae=atoms.shape[0], k=options.k)
    tensors = {
        "W_enc": atoms.T.contiguous(),
        "b_enc": torch.zeros(atoms.shape[0]),
        "W_dec": atoms,
        "b_dec": dictionary.mean,
    }
    sae = SparseAutoencoder.from_tensors(cfg, tensors)
    report = evaluate_sae(sae, heldout)
    sae.cfg.meta["atom_sources"] = dictionary.sources.tolist()
    return sae, TrainingReport(
        fvu=report["fvu"],
        fvu_without_outliers=report["fvu_without_outliers"],
        mean_l0=report["mean_l0"],
        dead_fraction=report["dead_fraction"],
        train_tokens=dictionary.read,
        heldout_tokens=int(heldout.shape[0]),
        steps=math.ceil(dictionary.read / options.batch_size),
        seconds=dictionary.seconds,
        options=dictionary.options,
        input_unit=input_unit,
    )


@torch.inference_mode()
def evaluate_sae(sae: SparseAutoencoder, activations: Tensor, *, chunk: int = 4096) -> dict[str, float]:
    """Held-out FVU (also without the 0.1% largest-norm tokens), mean L0 and dead-latent share, in fp32."""
    x = activations.float()
    norms = x.norm(dim=1)
    keep = norms <= torch.quantile(norms, 0.999)
    squared_error = torch.empty(x.shape[0])
    l0 = torch.empty(x.shape[0])
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
    sae = sae.float()
    for start in range(0, x.shape[0], chunk):
        batch = x[start : start + chunk]
        codes = sae.encode(batch)
        squared_error[start : start + chunk] = (sae.decode(codes) - batch).pow(2).sum(1)
        l0[start : start + chunk] = (codes > 0).sum(1).float()
        fired |= (codes > 0).any(0)

    def fvu(mask: Tensor) -> float:
        subset = x[mask]
        return float(squared_error[mask].sum() / (subset - subset.mean(0)).pow(2).sum())

    return {
        "fvu": fvu(torch.ones_like(keep)),
        "fvu_without_outliers": fvu(keep),
        "mean_l0": float(l0.mean()),
        "dead_fraction": float(1 - fired.float().mean()),
    }


def sae_config_for(reader: Reader, sae: SparseAutoencoder, report: TrainingReport) -> SaeConfig:
    """The config saved with a trained SAE (or ITDA dictionary): what it reads and how it was made."""
    return SaeConfig(
        arch=sae.cfg.arch,
        d_in=reader.hidden_size,
        d_sae=sae.cfg.d_sae,
        k=sae.cfg.k,
        reader_model=reader.model_id,
        layer=reader.layer,
        input_unit=report.input_unit,
        meta={**sae.cfg.meta, "training_report": report.to_dict()},
    )
