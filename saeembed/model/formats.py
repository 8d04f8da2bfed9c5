"""The published SAE checkpoint layouts (SAELens, EleutherAI sparsify, Goodfire, Gemma Scope), told apart
from the files, and the check that an SAE fits the reader in use.

Why not SAELens' own loader: it needs transformer-lens (and its pins) for what is, on disk, a JSON
config and a safetensors file, so that layout is read directly. sparsify checkpoints are read with
sparsify itself, a dependency we already have for training.
"""

from __future__ import annotations

import contextlib
import pickle
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor

from saeembed.errors import SaeembedError
from saeembed.model.sae import (
    CONFIG_FILE,
    FORMAT,
    WEIGHTS_FILE,
    Arch,
    Device,
    SaeConfig,
    SparseAutoencoder,
    load_own,
    naming_the_checkpoint,
    read_json,
    reading,
    require,
)

SAELENS_ARCHITECTURES: dict[str, Arch] = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu"}


def _layer_from_saelens_hook(hook_name: str) -> int:
    """`blocks.12.hook_resid_post` → 12, and `blocks.12.hook_resid_pre` → 11.

    resid_pre of block L is the same tensor as resid_post of block L − 1 (TransformerLens), i.e. the
    output of HF `model.model.layers[L-1]`; resid_pre of block 0 is the embeddings, read by no layer.
    """
    match = re.fullmatch(r"blocks\.(\d+)\.hook_resid_(pre|post)", hook_name)
    if match is None:
        raise SaeembedError(
            f"unsupported SAE hook '{hook_name}': only residual-stream SAEs (hook_resid_*) are supported"
        )
    layer, position = int(match.group(1)), match.group(2)
    if position == "post":
        return layer
    if layer == 0:
        raise SaeembedError(f"hook '{hook_name}' reads the token embeddings, not a decoder layer's output")
    return layer - 1


def _torch_dtype(name: str) -> torch.dtype:
    """SAELens writes "float32" or "torch.float32"."""
    dtype = getattr(torch, str(name).removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise SaeembedError(f"unknown SAE dtype '{name}'")
    return dtype


def _load_saelens(directory: Path, *, device: Device, dtype: torch.dtype | None) -> SparseAutoencoder:
    """SAELens: cfg.json + sae_weights.safetensors, v6 or older configs (tensors already [d_in, d_sae])."""
    config = read_json(directory / CONFIG_FILE)
    metadata = config.get("metadata") or {}
    # Configs older than v6 keep these at the top level, with the activation function naming topk
    # (`handle_pre_6_0_config` in SAELens' loading/pretrained_sae_loaders.py).
    architecture = config.get("architecture") or "standard"
    activation = config.get("activation_fn_str") or config.get("activation_fn") or "relu"
    if architecture == "standard" and activation == "topk":
        architecture = "topk"
    elif architecture == "standard" and activation != "relu":
        raise SaeembedError(f"SAELens activation '{activation}' is not supported (relu or topk)")
    arch = SAELENS_ARCHITECTURES.get(architecture)
    if arch is None:
        raise SaeembedError(f"SAELens architecture '{architecture}' is not supported (standard, topk, jumprelu)")
    k = (config.get("k") or (config.get("activation_fn_kwargs") or {}).get("k")) if arch == "topk" else None

    meta: dict[str, Any] = {}
    normalize = config.get("normalize_activations", "none")
    if normalize is True:  # pre-v6 bool: True meant expected_average_only_in
        normalize = "expected_average_only_in"
    elif normalize in (False, None):
        normalize = "none"
    if normalize == "expected_average_only_in":
        # Nothing happens at encode time: SAELens' trainer folds the scale into the weights when it
        # saves (and writes "none"), and load_from_disk applies nothing. Kept so a caller can tell.
        meta["normalize_activations"] = normalize
        normalize = "none"

    hook_name = metadata.get("hook_name") or config.get("hook_name") or config.get("hook_point")
    layer = None
    if hook_name:
        layer = _layer_from_saelens_hook(hook_name)
        meta["hook_name"] = hook_name
    # Non-empty kwargs mean the SAE read a TransformerLens model loaded with them; SAELens only warns.
    model_kwargs = metadata.get("model_from_pretrained_kwargs") or config.get("model_from_pretrained_kwargs")
    if model_kwargs:
        meta["model_from_pretrained_kwargs"] = model_kwargs

    cfg = SaeConfig(
        arch=arch,
        d_in=require(config, "d_in", CONFIG_FILE),
        d_sae=require(config, "d_sae", CONFIG_FILE),
        k=k,
        apply_b_dec_to_input=bool(config.get("apply_b_dec_to_input", True)),
        normalize_activations=normalize,
        rescale_acts_by_decoder_norm=bool(config.get("rescale_acts_by_decoder_norm", False)),
        reader_model=metadata.get("model_name") or config.get("model_name"),
        layer=layer,
        source_format="saelens",
        meta=meta,
    )
    weights = directory / "sae_weights.safetensors"
    with reading(weights):
        tensors = load_file(weights, device=str(device))
    # An all-ones scaling_factor is a leftover SAELens drops; any other value is a finetuning scale
    # applied to the codes (`read_sae_components_from_disk`), which this module does not model.
    scaling = tensors.pop("scaling_factor", None)
    if scaling is not None and not torch.allclose(scaling, torch.ones_like(scaling)):
        raise SaeembedError("finetuning scaling factors (a 'scaling_factor' tensor not all ones) are not supported")
    # SAELens casts every tensor to the config's dtype when loading.
    return SparseAutoencoder.from_tensors(cfg, tensors, dtype=dtype or _torch_dtype(config.get("dtype", "float32")))


def _load_sparsify(directory: Path, *, device: Device, dtype: torch.dtype | None) -> SparseAutoencoder:
    """EleutherAI sparsify: <run>/<hookpoint>/cfg.json + sae.safetensors, read by sparsify itself."""
    config = read_json(directory / CONFIG_FILE)
    require(config, "d_in", CONFIG_FILE)
    # sparsify drops config keys it no longer knows, so a mid-2024 `signed` SAE (no ReLU, top-k by |pre|,
    # commit 9698592) would load as an unsigned one.
    if config.get("signed"):
        raise SaeembedError("sparsify 'signed' SAEs (no ReLU, top-k by magnitude) are not supported")
    # Hookpoints are module names under the HF base model: `layers.6` (Llama, NeoX) or `h.6` (GPT-2).
    # Their output is resid_post of layer 6 for trainers since 00bbb22 (2024-07-16); older trainers read
    # hidden_states[6], i.e. resid_pre, and cfg.json does not record which.
    hookpoint = directory.name
    if re.fullmatch(r"(?:.*\.)?(?:layers|h)\.\d+\..+", hookpoint):
        raise SaeembedError(f"sparsify hookpoint '{hookpoint}' is a submodule, not the residual stream after a layer")
    match = re.fullmatch(r"(?:.*\.)?(?:layers|h)\.(\d+)", hookpoint)
    run_config = directory.parent / "config.json"
    reader_model = read_json(run_config).get("model") if run_config.is_file() else None

    with contextlib.redirect_stdout(sys.stderr):  # sparsify prints a notice about Triton on import
        from sparsify import SparseCoder
    with reading(directory / WEIGHTS_FILE):
        coder = SparseCoder.load_from_disk(directory, device=device)
    return SparseAutoencoder.from_sparsify(
        coder,
        dtype=dtype,
        reader_model=reader_model,
        layer=int(match.group(1)) if match else None,
        meta={"hookpoint": hookpoint},
    )


GOODFIRE_FILE = re.compile(r"(Llama-3\.\d+-\d+B-Instruct)(?:-SAE-l|__model\.layers\.)(\d+)\.pth?")
"""Goodfire's released names (`Llama-3.1-8B-Instruct-SAE-l19.pth`, `Llama-3.3-70B-Instruct-SAE-l50.pt`,
first published as `Llama-3.3-70B-Instruct__model.layers.50.pt`): the reader and the layer whose output
(HF `model.model.layers[L]`) the SAE reads."""

GOODFIRE_TENSORS = {
    "W_enc": "encoder_linear.weight",
    "b_enc": "encoder_linear.bias",
    "W_dec": "decoder_linear.weight",
    "b_dec": "decoder_linear.bias",
}


def _load_goodfire(file: Path, *, device: Device, dtype: torch.dtype | None) -> SparseAutoencoder:
    """Goodfire: a pickled state dict of two nn.Linear layers; relu(x @ enc.weight.T + enc.bias)."""
    with reading(file):
        try:
            state = torch.load(file, map_location=device, weights_only=True)
        except pickle.UnpicklingError:  # torch's own message suggests weights_only=False: not for us
            raise SaeembedError(
                f"cannot read {file.name}: not a PyTorch checkpoint of plain tensors (torch.load with "
                "weights_only=True refused it)"
            ) from None
    if not isinstance(state, Mapping):
        raise SaeembedError(f"expected a state dict of tensors, found a {type(state).__name__}")
    missing = [key for key in GOODFIRE_TENSORS.values() if not isinstance(state.get(key), Tensor)]
    if missing:
        raise SaeembedError(f"not a Goodfire SAE: tensor(s) {', '.join(map(repr, missing))} missing")
    encoder_weight = state["encoder_linear.weight"]
    if encoder_weight.ndim != 2:
        raise SaeembedError(f"encoder_linear.weight has shape {tuple(encoder_weight.shape)}, expected [d_sae, d_in]")
    # Sizes come from the tensors: interp_embed's converter hard-codes d_in=4096, wrong for the 70B SAE.
    d_sae, d_in = encoder_weight.shape
    match = GOODFIRE_FILE.fullmatch(file.name)
    cfg = SaeConfig(
        arch="relu",
        d_in=d_in,
        d_sae=d_sae,
        apply_b_dec_to_input=False,
        reader_model=f"meta-llama/{match.group(1)}" if match else None,
        layer=int(match.group(2)) if match else None,
        source_format="goodfire",
    )
    # Both nn.Linear weights are [out, in]: the encoder's is [d_sae, d_in], the decoder's [d_in, d_sae].
    tensors = {ours: state[theirs] for ours, theirs in GOODFIRE_TENSORS.items()}
    tensors["W_enc"] = tensors["W_enc"].T
    tensors["W_dec"] = tensors["W_dec"].T
    return SparseAutoencoder.from_tensors(cfg, tensors, dtype=dtype)


GEMMA_SCOPE_REPO = re.compile(r"gemma-scope-(2b|9b|27b)-(pt|it)-([a-z]+)")
"""google/gemma-scope-{2b,9b,27b}-pt-{res,mlp,att}, 9b-it-res: the reader and what the SAEs read."""


def _load_gemma_scope(file: Path, *, device: Device, dtype: torch.dtype | None) -> SparseAutoencoder:
    """Gemma Scope: params.npz with W_enc [d, M], W_dec [M, d], b_enc, b_dec, threshold (JumpReLU).

    f = (h > threshold) · relu(h) with h = x @ W_enc + b_enc: b_dec is not subtracted and there is no
    input normalisation (SAELens' gemma_2 config: apply_b_dec_to_input False, normalize None).
    """
    if "embedding" in file.parts:
        raise SaeembedError("Gemma Scope embedding SAEs read the token embeddings, not a decoder layer's output")
    repo = GEMMA_SCOPE_REPO.search(str(file))
    if repo is not None and repo.group(3) != "res":
        raise SaeembedError(f"'{repo.group(0)}' SAEs do not read the residual stream (only -res SAEs are supported)")
    with reading(file):
        archive = np.load(file)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise SaeembedError(f"{file.name} holds a single array, expected an .npz archive of named arrays")
        with archive:
            # SAELens' gemma_2_sae_huggingface_loader also accepts w_enc / w_dec spellings.
            arrays = {re.sub(r"^w_", "W_", name): archive[name] for name in archive.files}
    if "W_enc" not in arrays or arrays["W_enc"].ndim != 2:
        raise SaeembedError("not a Gemma Scope SAE: no 2-D tensor 'W_enc'")
    d_in, d_sae = arrays["W_enc"].shape
    layer = next((int(part[6:]) for part in file.parts if re.fullmatch(r"layer_\d+", part)), None)
    cfg = SaeConfig(
        arch="jumprelu",
        d_in=d_in,
        d_sae=d_sae,
        apply_b_dec_to_input=False,
        reader_model=f"google/gemma-2-{repo.group(1)}{'-it' if repo.group(2) == 'it' else ''}" if repo else None,
        layer=layer,
        source_format="gemma_scope",
    )
    tensors = {name: torch.from_numpy(array).to(device) for name, array in arrays.items()}
    # SAELens casts Gemma Scope weights to float32; the released files are float32 too.
    return SparseAutoencoder.from_tensors(cfg, tensors, dtype=dtype or torch.float32)


Loader = Callable[..., SparseAutoencoder]

LOADERS: dict[str, Loader] = {
    "saeembed": load_own,
    "saelens": _load_saelens,
    "sparsify": _load_sparsify,
    "goodfire": _load_goodfire,
    "gemma_scope": _load_gemma_scope,
}


class Checkpoint(NamedTuple):
    layout: str
    """Which layout it is in: a key of LOADERS."""

    path: Path
    """The file or folder that layout's loader reads."""


def _detect_layout(path: Path) -> Checkpoint:
    if not path.exists():
        raise SaeembedError(f"SAE not found: {path}")
    if path.is_file():
        if path.name in (CONFIG_FILE, WEIGHTS_FILE, "sae_weights.safetensors"):
            return _detect_layout(path.parent)
        if path.suffix in (".pth", ".pt"):
            return Checkpoint("goodfire", path)
        if path.suffix == ".npz":
            return Checkpoint("gemma_scope", path)
        raise SaeembedError(f"unknown SAE file type: {path} (expected a folder, a .pth/.pt file or params.npz)")
    if (path / CONFIG_FILE).is_file():
        with naming_the_checkpoint(path):
            config = read_json(path / CONFIG_FILE)
        if config.get("format") == FORMAT:
            return Checkpoint("saeembed", path)
        if (path / "sae_weights.safetensors").is_file():
            return Checkpoint("saelens", path)
        if (path / WEIGHTS_FILE).is_file():
            return Checkpoint("sparsify", path)
        raise SaeembedError(f"SAE folder {path} has {CONFIG_FILE} but no sae_weights.safetensors or {WEIGHTS_FILE}")
    if (path / "params.npz").is_file():
        return Checkpoint("gemma_scope", path / "params.npz")
    # Checked before the .pt files: a sparsify run root also holds state.pt and optimizer_*.pt.
    hookpoints = sorted(sub.name for sub in path.iterdir() if (sub / CONFIG_FILE).is_file())
    if hookpoints:
        raise SaeembedError(
            f"{path} is a folder of SAEs (a sparsify run or an SAE release): pass one of its folders "
            f"({', '.join(hookpoints)})"
        )
    pickles = sorted(child.name for child in path.iterdir() if child.suffix in (".pth", ".pt"))
    if len(pickles) == 1:
        return Checkpoint("goodfire", path / pickles[0])
    if pickles:
        raise SaeembedError(f"{path} holds several .pth/.pt files: pass one of them ({', '.join(pickles)})")
    raise SaeembedError(
        f"no SAE checkpoint recognised in {path} (saeembed, SAELens, sparsify, Goodfire .pth or Gemma Scope params.npz)"
    )


def load_sae(
    path: str | Path,
    *,
    layer: int | None = None,
    reader_model: str | None = None,
    device: Device = "cpu",
    dtype: torch.dtype | None = None,
) -> SparseAutoencoder:
    """Load an SAE in any supported layout, detected from the files.

    `layer` and `reader_model`, when given, replace what the checkpoint says (or fill in what it
    does not); `dtype` defaults to the layout's own (the file's, or SAELens' cfg dtype, or float32).
    """
    checkpoint = _detect_layout(Path(path).expanduser())
    with naming_the_checkpoint(checkpoint.path):
        sae = LOADERS[checkpoint.layout](checkpoint.path, device=device, dtype=dtype)
        overrides = {"layer": layer, "reader_model": reader_model}
        sae.cfg = replace(sae.cfg, **{name: value for name, value in overrides.items() if value is not None})
    return sae.to(device)


def _model_name(model_id: str) -> str:
    """`HuggingFaceTB/SmolLM2-135M-Instruct` → `smollm2-135m-instruct`."""
    return model_id.rstrip("/").rsplit("/", 1)[-1].lower()


def check_compatible(sae: SparseAutoencoder, *, reader_model: str, hidden_size: int, layer: int | None) -> None:
    """Refuse an SAE made for another width, reader or layer, naming the mismatch.

    Readers are compared by the last part of their id, case-insensitively: `smollm2-135m-instruct`
    matches `HuggingFaceTB/SmolLM2-135M-Instruct`.
    """
    if sae.cfg.d_in != hidden_size:
        raise SaeembedError(
            f"SAE input width {sae.cfg.d_in} does not match the reader's hidden size {hidden_size} ({reader_model})"
        )
    if sae.cfg.reader_model and _model_name(sae.cfg.reader_model) != _model_name(reader_model):
        raise SaeembedError(f"SAE was trained on {sae.cfg.reader_model}, not on the reader in use ({reader_model})")
    if sae.cfg.layer is not None and layer is not None and sae.cfg.layer != layer:
        raise SaeembedError(f"SAE reads layer {sae.cfg.layer}, but layer {layer} was asked for")
