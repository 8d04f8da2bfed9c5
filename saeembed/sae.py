"""Sparse autoencoders: TopK, ReLU and JumpReLU behind one `encode`, the project's own checkpoint
format, and loaders for the published layouts (SAELens, EleutherAI sparsify, Goodfire, Gemma Scope).

Why not SAELens' own loader: it needs transformer-lens (and its pins) for what is, on disk, a
safetensors file and a JSON config, so we read that layout directly. sparsify checkpoints are loaded
with sparsify itself (a dependency we already have for training).
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from saeembed.errors import SaeembedError

FORMAT_VERSION = 1
Arch = Literal["topk", "relu", "jumprelu"]
Normalization = Literal["none", "constant_norm_rescale", "layer_norm"]


@dataclass
class SaeConfig:
    arch: Arch
    """topk keeps the k largest pre-activations (Gao et al. 2024); relu and jumprelu threshold them."""
    d_in: int
    """Width of the residual stream it reads."""
    d_sae: int
    """Number of latents."""
    k: int | None = None
    """Active latents per token (topk only)."""
    apply_b_dec_to_input: bool = True
    """Subtract b_dec before encoding (SAELens, sparsify) or not (Goodfire, Gemma Scope)."""
    normalize_activations: Normalization = "none"
    """Input normalisation before encoding (SAELens options)."""
    rescale_acts_by_decoder_norm: bool = False
    """SAELens topk option: scale pre-activations by each latent's decoder norm before the top-k."""
    reader_model: str | None = None
    """Hub id of the LLM whose activations it was trained on, when known."""
    layer: int | None = None
    """Decoder layer whose output it reads (resid_post of layer L = output of model.layers[L])."""
    hook: str = "resid_post"
    """Which activation it reads; only the residual stream after a layer is supported."""
    source_format: str = "saeembed"
    """The checkpoint layout it was loaded from."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Anything else worth keeping (e.g. the training report)."""

    def __post_init__(self) -> None:
        if self.arch not in ("topk", "relu", "jumprelu"):
            raise SaeembedError(f"unsupported SAE architecture '{self.arch}' (supported: topk, relu, jumprelu)")
        if self.d_in < 1 or self.d_sae < 1:
            raise SaeembedError(f"SAE sizes must be positive, got d_in={self.d_in}, d_sae={self.d_sae}")
        if self.arch == "topk" and (self.k is None or not 0 < self.k <= self.d_sae):
            raise SaeembedError(f"a topk SAE needs 0 < k <= d_sae ({self.d_sae}), got k={self.k}")
        if self.normalize_activations not in ("none", "constant_norm_rescale", "layer_norm"):
            raise SaeembedError(f"unsupported activation normalisation '{self.normalize_activations}'")


class SparseAutoencoder(nn.Module):
    """W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in], threshold [d_sae] (jumprelu)."""

    def __init__(self, cfg: SaeConfig, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        super().__init__()
        self.cfg = cfg
        kwargs = {"dtype": dtype, "device": device}
        self.W_enc = nn.Parameter(torch.zeros(cfg.d_in, cfg.d_sae, **kwargs))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae, **kwargs))
        self.W_dec = nn.Parameter(torch.zeros(cfg.d_sae, cfg.d_in, **kwargs))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in, **kwargs))
        self.threshold = nn.Parameter(torch.zeros(cfg.d_sae, **kwargs)) if cfg.arch == "jumprelu" else None

    @classmethod
    def from_tensors(cls, cfg: SaeConfig, tensors: dict[str, Tensor | np.ndarray]) -> SparseAutoencoder:
        """Build from named tensors in this module's orientation, checking every shape."""
        expected = {
            "W_enc": (cfg.d_in, cfg.d_sae),
            "b_enc": (cfg.d_sae,),
            "W_dec": (cfg.d_sae, cfg.d_in),
            "b_dec": (cfg.d_in,),
        }
        if cfg.arch == "jumprelu":
            expected["threshold"] = (cfg.d_sae,)
        values = {
            name: torch.as_tensor(np.asarray(t) if isinstance(t, np.ndarray) else t) for name, t in tensors.items()
        }
        for name, shape in expected.items():
            if name not in values:
                raise SaeembedError(f"SAE checkpoint is missing tensor '{name}'")
            if tuple(values[name].shape) != shape:
                raise SaeembedError(f"SAE tensor '{name}' has shape {tuple(values[name].shape)}, expected {shape}")
        sae = cls(cfg, dtype=values["W_enc"].dtype if values["W_enc"].is_floating_point() else torch.float32)
        with torch.no_grad():
            for name in expected:
                getattr(sae, name).copy_(values[name])
        return sae

    @classmethod
    def from_sparsify(cls, coder: nn.Module, **cfg_fields: Any) -> SparseAutoencoder:
        """Convert an EleutherAI sparsify `SparseCoder` (encoder.weight is [d_sae, d_in])."""
        if coder.cfg.activation != "topk":
            raise SaeembedError(f"sparsify activation '{coder.cfg.activation}' is not supported (only topk)")
        if coder.W_skip is not None or coder.cfg.transcode:
            raise SaeembedError("sparsify transcoders and skip connections are not supported (autoencoders only)")
        cfg = SaeConfig(
            arch="topk",
            d_in=coder.d_in,
            d_sae=coder.num_latents,
            k=coder.cfg.k,
            source_format="sparsify",
            **cfg_fields,
        )
        return cls.from_tensors(
            cfg,
            {
                "W_enc": coder.encoder.weight.detach().T,
                "b_enc": coder.encoder.bias.detach(),
                "W_dec": coder.W_dec.detach(),
                "b_dec": coder.b_dec.detach(),
            },
        )

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype

    def pre_activations(self, x: Tensor) -> Tensor:
        """h = (normalise(x) − b_dec) @ W_enc + b_enc, in the SAE's dtype."""
        x = x.to(self.dtype)
        if self.cfg.normalize_activations == "constant_norm_rescale":
            x = x * (self.cfg.d_in**0.5) / x.norm(dim=-1, keepdim=True)
        elif self.cfg.normalize_activations == "layer_norm":
            mean = x.mean(dim=-1, keepdim=True)
            x = (x - mean) / (x.std(dim=-1, keepdim=True) + 1e-5)
        if self.cfg.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def encode(self, x: Tensor) -> Tensor:
        """Dense, non-negative codes [..., d_sae] for activations [..., d_in]."""
        h = self.pre_activations(x)
        if self.cfg.arch == "relu":
            return torch.relu(h)
        if self.cfg.arch == "jumprelu":
            return torch.relu(h) * (h > self.threshold)
        if self.cfg.rescale_acts_by_decoder_norm:
            h = h * self.W_dec.norm(dim=-1)
        values, indices = h.topk(self.cfg.k, dim=-1, sorted=False)
        return torch.zeros_like(h).scatter_(-1, indices, torch.relu(values))

    def decode(self, codes: Tensor) -> Tensor:
        return codes.to(self.dtype) @ self.W_dec + self.b_dec

    def save(self, directory: str | Path) -> None:
        """The project's format: cfg.json (with "format": "saeembed") + sae.safetensors, dtype kept."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {name: p.detach().contiguous().cpu() for name, p in self.named_parameters()}
        save_file(tensors, directory / "sae.safetensors")
        config = {"format": "saeembed", "format_version": FORMAT_VERSION, **asdict(self.cfg)}
        (directory / "cfg.json").write_text(json.dumps(config, indent=2))

    @classmethod
    def load(cls, directory: str | Path, *, device: str | torch.device = "cpu") -> SparseAutoencoder:
        directory = Path(directory)
        config = _read_json(directory / "cfg.json")
        config.pop("format", None)
        config.pop("format_version", None)
        cfg = SaeConfig(**config)
        return cls.from_tensors(cfg, load_file(directory / "sae.safetensors")).to(device)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SaeembedError(f"SAE config not found: {path}") from None
    except json.JSONDecodeError as error:
        raise SaeembedError(f"SAE config {path} is not valid JSON: {error}") from None


def _layer_from_hook(hook_name: str | None) -> int | None:
    """`blocks.12.hook_resid_post` → 12; resid_pre of layer L is resid_post of L − 1."""
    if not hook_name:
        return None
    match = re.fullmatch(r"blocks\.(\d+)\.hook_resid_(pre|post)", hook_name)
    if match is None:
        raise SaeembedError(f"unsupported SAE hook '{hook_name}': only residual-stream SAEs are supported")
    layer = int(match.group(1))
    return layer if match.group(2) == "post" else layer - 1


def load_saelens(directory: Path) -> SparseAutoencoder:
    """SAELens: cfg.json + sae_weights.safetensors (v6 and pre-v6 configs)."""
    config = _read_json(directory / "cfg.json")
    metadata = config.get("metadata") or {}
    architecture = config.get("architecture")
    if architecture is None:  # pre-v6: the activation function names the architecture
        architecture = "topk" if config.get("activation_fn_str") == "topk" else "standard"
    arch = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu"}.get(architecture)
    if arch is None:
        raise SaeembedError(f"SAELens architecture '{architecture}' is not supported (standard, topk, jumprelu)")
    k = config.get("k") or (config.get("activation_fn_kwargs") or {}).get("k")
    normalize = config.get("normalize_activations", "none")
    if normalize is True or normalize in ("expected_average_only_in", None, False):
        # expected_average_only_in does nothing at encode time (its scale is folded into the weights).
        normalize = "none"
    hook_name = metadata.get("hook_name") or config.get("hook_name") or config.get("hook_point")
    cfg = SaeConfig(
        arch=arch,
        d_in=config["d_in"],
        d_sae=config["d_sae"],
        k=k,
        apply_b_dec_to_input=config.get("apply_b_dec_to_input", True),
        normalize_activations=normalize,
        rescale_acts_by_decoder_norm=bool(config.get("rescale_acts_by_decoder_norm", False)),
        reader_model=metadata.get("model_name") or config.get("model_name"),
        layer=_layer_from_hook(hook_name),
        source_format="saelens",
    )
    tensors = load_file(directory / "sae_weights.safetensors")
    return SparseAutoencoder.from_tensors(cfg, tensors)


def load_sparsify(directory: Path) -> SparseAutoencoder:
    """EleutherAI sparsify: <run>/<hookpoint>/cfg.json + sae.safetensors, loaded by sparsify itself."""
    with contextlib.redirect_stdout(sys.stderr):  # sparsify prints a notice about Triton on import
        from sparsify import SparseCoder
    try:
        coder = SparseCoder.load_from_disk(directory, device="cpu")
    except TypeError as error:
        raise SaeembedError(f"cannot read sparsify checkpoint {directory}: {error}") from None
    # Hookpoints are named like `layers.6`: the output of decoder layer 6 for trainers after 2024-07-16;
    # older trainers read hidden_states[6], i.e. resid_pre (the cfg does not record which).
    match = re.fullmatch(r"(?:.*\.)?layers\.(\d+)", directory.name)
    run_config = directory.parent / "config.json"
    reader_model = json.loads(run_config.read_text()).get("model") if run_config.exists() else None
    return SparseAutoencoder.from_sparsify(
        coder, reader_model=reader_model, layer=int(match.group(1)) if match else None
    )


GOODFIRE_NAME = re.compile(r"(Llama-3\.\d+-\d+B-Instruct)-SAE-l(\d+)")


def load_goodfire(file: Path) -> SparseAutoencoder:
    """Goodfire: a pickled state dict with encoder_linear / decoder_linear (decoder weight is [d_in, d_sae])."""
    state = torch.load(file, map_location="cpu", weights_only=True)
    try:
        encoder_weight = state["encoder_linear.weight"]
        tensors = {
            "W_enc": encoder_weight.T,
            "b_enc": state["encoder_linear.bias"],
            "W_dec": state["decoder_linear.weight"].T,
            "b_dec": state["decoder_linear.bias"],
        }
    except KeyError as missing:
        raise SaeembedError(f"{file} is not a Goodfire SAE: tensor {missing} is missing") from None
    # Sizes come from the tensors: interp-embed's converter hard-codes d_in=4096, wrong for the 70B SAE.
    d_sae, d_in = encoder_weight.shape
    match = GOODFIRE_NAME.search(file.name)
    cfg = SaeConfig(
        arch="relu",
        d_in=d_in,
        d_sae=d_sae,
        apply_b_dec_to_input=False,
        reader_model=f"meta-llama/{match.group(1)}" if match else None,
        layer=int(match.group(2)) if match else None,
        source_format="goodfire",
    )
    return SparseAutoencoder.from_tensors(cfg, tensors)


def load_gemma_scope(file: Path) -> SparseAutoencoder:
    """Gemma Scope: params.npz with W_enc [d, M], W_dec [M, d], b_enc, b_dec, threshold (JumpReLU)."""
    with np.load(file) as archive:
        tensors = {re.sub(r"^w_", "W_", name): archive[name].astype(np.float32) for name in archive.files}
    if "W_enc" not in tensors:
        raise SaeembedError(f"{file} is not a Gemma Scope SAE: tensor 'W_enc' is missing")
    d_in, d_sae = tensors["W_enc"].shape
    match = re.search(r"layer_(\d+)", str(file))
    cfg = SaeConfig(
        arch="jumprelu",
        d_in=d_in,
        d_sae=d_sae,
        apply_b_dec_to_input=False,
        layer=int(match.group(1)) if match else None,
        source_format="gemma_scope",
    )
    return SparseAutoencoder.from_tensors(cfg, tensors)


def detect_format(path: Path) -> tuple[str, Path]:
    """(layout name, the file or folder to read) for an SAE checkpoint path."""
    if not path.exists():
        raise SaeembedError(f"SAE not found: {path}")
    if path.is_file():
        if path.suffix in (".pth", ".pt"):
            return "goodfire", path
        if path.name.endswith(".npz"):
            return "gemma_scope", path
        raise SaeembedError(f"unknown SAE file type: {path} (expected a folder, .pth/.pt or params.npz)")
    if (path / "cfg.json").exists():
        config = _read_json(path / "cfg.json")
        if config.get("format") == "saeembed":
            return "saeembed", path
        if (path / "sae_weights.safetensors").exists():
            return "saelens", path
        if (path / "sae.safetensors").exists():
            return "sparsify", path
        raise SaeembedError(f"SAE folder {path} has cfg.json but no sae_weights.safetensors or sae.safetensors")
    if (path / "params.npz").exists():
        return "gemma_scope", path / "params.npz"
    checkpoints = sorted(p for p in path.iterdir() if p.suffix in (".pth", ".pt"))
    if len(checkpoints) == 1:
        return "goodfire", checkpoints[0]
    hookpoints = sorted(p.name for p in path.iterdir() if (p / "sae.safetensors").exists())
    if hookpoints:
        raise SaeembedError(
            f"{path} is a sparsify run with several SAEs: pass one hookpoint folder ({', '.join(hookpoints)})"
        )
    raise SaeembedError(f"no SAE checkpoint recognised in {path} (saeembed, SAELens, sparsify, Goodfire, Gemma Scope)")


LOADERS = {
    "saeembed": SparseAutoencoder.load,
    "saelens": load_saelens,
    "sparsify": load_sparsify,
    "goodfire": load_goodfire,
    "gemma_scope": load_gemma_scope,
}


def load_sae(
    path: str | Path,
    *,
    layer: int | None = None,
    reader_model: str | None = None,
    device: str | torch.device = "cpu",
) -> SparseAutoencoder:
    """Load an SAE in any supported layout; `layer` and `reader_model` override what the checkpoint says."""
    layout, target = detect_format(Path(path).expanduser())
    sae = LOADERS[layout](target)
    if layer is not None:
        sae.cfg.layer = layer
    if reader_model is not None:
        sae.cfg.reader_model = reader_model
    return sae.to(device)


def _model_name(model_id: str) -> str:
    return model_id.rstrip("/").rsplit("/", 1)[-1].lower()


def check_compatible(sae: SparseAutoencoder, *, reader_model: str, hidden_size: int, layer: int | None) -> None:
    """Refuse an SAE trained for another reader, layer or width, naming the mismatch."""
    if sae.cfg.d_in != hidden_size:
        raise SaeembedError(
            f"SAE input width {sae.cfg.d_in} does not match the reader's hidden size {hidden_size} ({reader_model})"
        )
    if sae.cfg.reader_model and _model_name(sae.cfg.reader_model) != _model_name(reader_model):
        raise SaeembedError(
            f"SAE was trained on {sae.cfg.reader_model}, not on the reader in use ({reader_model}); "
            "pass --reader to match it"
        )
    if sae.cfg.layer is not None and layer is not None and sae.cfg.layer != layer:
        raise SaeembedError(f"SAE reads layer {sae.cfg.layer}, but layer {layer} was asked for")
