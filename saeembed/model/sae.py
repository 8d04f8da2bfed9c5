"""Sparse autoencoders over an LLM's residual stream: one module for TopK, ReLU and JumpReLU SAEs and the
project's own checkpoint format (save/load). The published layouts are read by `saeembed.model.formats`.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, get_args

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from saeembed.errors import SaeembedError
from saeembed.model.itda import matching_pursuit
from saeembed.model.units import TOKEN_INPUT, parse_unit

if TYPE_CHECKING:
    from sparsify import SparseCoder

Arch = Literal["topk", "relu", "jumprelu", "itda"]
Normalization = Literal["none", "constant_norm_rescale", "layer_norm"]
Device = str | torch.device

FORMAT = "saeembed"
FORMAT_VERSION = 2
"""Version of the own format's cfg.json; a newer file is refused rather than misread (2 added input_unit)."""


class SparseCodes(NamedTuple):
    """The non-zero codes of a batch of activations, as coordinates (what pooling needs, without the
    dense [tokens, d_sae] matrix that is mostly zeros)."""

    row: Tensor
    """Index of the activation (token) in the batch, one per non-zero code."""
    latent: Tensor
    """SAE latent index of the code."""
    value: Tensor
    """The code's value (> 0), float32."""

    @classmethod
    def from_dense(cls, codes: Tensor) -> SparseCodes:
        """The non-zeros of dense codes [tokens, d_sae]."""
        row, latent = codes.nonzero(as_tuple=True)
        return cls(row, latent, codes[row, latent].float())


CONFIG_FILE = "cfg.json"
WEIGHTS_FILE = "sae.safetensors"


@dataclass
class SaeConfig:
    arch: Arch
    """topk keeps the k largest pre-activations (Gao et al. 2024); relu and jumprelu threshold them; itda
    encodes by k steps of matching pursuit over a dictionary of activations (`saeembed.model.itda`)."""

    d_in: int
    """Width of the residual stream it reads."""

    d_sae: int
    """Number of latents."""

    k: int | None = None
    """Active latents per token (topk; itda: matching-pursuit steps)."""

    apply_b_dec_to_input: bool = True
    """Subtract b_dec before encoding (SAELens default, sparsify) or not (Goodfire, Gemma Scope)."""

    normalize_activations: Normalization = "none"
    """Per-token input normalisation before encoding (SAELens options)."""

    rescale_acts_by_decoder_norm: bool = False
    """SAELens topk option: scale pre-activations by each latent's decoder norm before the top-k."""

    reader_model: str | None = None
    """Hub id of the LLM whose activations it was trained on, when known."""

    layer: int | None = None
    """Decoder layer whose output it reads: resid_post of layer L = output of HF `model.model.layers[L]`."""

    hook: str = "resid_post"
    """Which activation it reads; only the residual stream after a decoder layer is supported."""

    source_format: str = FORMAT
    """The layout the weights were first loaded from (kept when re-saved in the own format)."""

    input_unit: str = TOKEN_INPUT
    """What one input is: a token's residual ('token', as for every published SAE), or the mean residual of
    a unit's tokens ('sentence', 'paragraph', 'chunk:N', 'document') for an SAE trained on unit means
    (`train-sae --unit`, RISE's step-level SAEs); such an SAE embeds units of that kind only."""

    meta: dict[str, Any] = field(default_factory=dict)
    """Anything else worth keeping (e.g. the training report, the original hook name)."""

    def __post_init__(self) -> None:
        if self.arch not in get_args(Arch):
            raise SaeembedError(f"unsupported SAE architecture '{self.arch}' (supported: topk, relu, jumprelu, itda)")
        if not (_is_positive_int(self.d_in) and _is_positive_int(self.d_sae)):
            raise SaeembedError(f"SAE sizes must be positive integers, got d_in={self.d_in!r}, d_sae={self.d_sae!r}")
        if self.arch == "topk":
            if not (_is_positive_int(self.k) and self.k <= self.d_sae):
                raise SaeembedError(f"a topk SAE needs 0 < k <= d_sae ({self.d_sae}), got k={self.k!r}")
        elif self.arch == "itda":
            if not _is_positive_int(self.k):
                raise SaeembedError(f"an itda dictionary needs k > 0 matching-pursuit steps, got k={self.k!r}")
        elif self.k is not None:
            raise SaeembedError(f"k is only used by topk and itda, but a {self.arch} SAE got k={self.k!r}")
        if self.rescale_acts_by_decoder_norm and self.arch != "topk":
            raise SaeembedError(f"rescale_acts_by_decoder_norm is a topk option, not valid for a {self.arch} SAE")
        if self.normalize_activations not in get_args(Normalization):
            raise SaeembedError(
                f"unsupported activation normalisation '{self.normalize_activations}' "
                "(supported: none, constant_norm_rescale, layer_norm)"
            )
        if self.layer is not None and not (isinstance(self.layer, int) and self.layer >= 0):
            raise SaeembedError(f"SAE layer must be a non-negative integer, got {self.layer!r}")
        # A unit as `embed --unit` spells it ('sentence', 'chunk:64'), which it is compared with.
        if self.input_unit != TOKEN_INPUT and str(parse_unit(self.input_unit, "SAE input_unit")) != self.input_unit:
            raise SaeembedError(f"SAE input_unit must be 'token' or a unit such as 'sentence', got {self.input_unit!r}")
        if self.hook != "resid_post":
            raise SaeembedError(f"unsupported SAE hook '{self.hook}': only resid_post (a layer's output) is supported")


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


class SparseAutoencoder(nn.Module):
    """W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in], threshold [d_sae] (jumprelu).

    Inference only: parameters do not require grad (training happens in sparsify, see train.py).
    """

    def __init__(self, cfg: SaeConfig, *, dtype: torch.dtype = torch.float32, device: Device = "cpu"):
        super().__init__()
        self.cfg = cfg

        def zeros(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.zeros(shape, dtype=dtype, device=device), requires_grad=False)

        self.W_enc = zeros(cfg.d_in, cfg.d_sae)
        self.b_enc = zeros(cfg.d_sae)
        self.W_dec = zeros(cfg.d_sae, cfg.d_in)
        self.b_dec = zeros(cfg.d_in)
        self.register_parameter("threshold", zeros(cfg.d_sae) if cfg.arch == "jumprelu" else None)

    @staticmethod
    def tensor_shapes(cfg: SaeConfig) -> dict[str, tuple[int, ...]]:
        """The tensors an SAE of this config holds, in this module's orientation."""
        shapes = {
            "W_enc": (cfg.d_in, cfg.d_sae),
            "b_enc": (cfg.d_sae,),
            "W_dec": (cfg.d_sae, cfg.d_in),
            "b_dec": (cfg.d_in,),
        }
        if cfg.arch == "jumprelu":
            shapes["threshold"] = (cfg.d_sae,)
        return shapes

    @classmethod
    def from_tensors(
        cls, cfg: SaeConfig, tensors: Mapping[str, Tensor], *, dtype: torch.dtype | None = None
    ) -> SparseAutoencoder:
        """Build from named tensors in this module's orientation, checking names and shapes.

        `dtype` defaults to W_enc's. The parameters share memory with `tensors` where no cast is needed.
        """
        shapes = cls.tensor_shapes(cfg)
        unexpected = sorted(set(tensors) - set(shapes))
        if unexpected:
            raise SaeembedError(
                f"unexpected tensor(s) {', '.join(map(repr, unexpected))} for a {cfg.arch} SAE "
                f"(expected {', '.join(shapes)})"
            )
        for name, shape in shapes.items():
            if name not in tensors:
                raise SaeembedError(f"missing tensor '{name}' for a {cfg.arch} SAE")
            tensor = tensors[name]
            if tuple(tensor.shape) != shape:
                raise SaeembedError(
                    f"tensor '{name}' has shape {tuple(tensor.shape)}, expected {shape} "
                    f"(d_in={cfg.d_in}, d_sae={cfg.d_sae})"
                )
            if not tensor.is_floating_point():
                raise SaeembedError(f"tensor '{name}' has dtype {tensor.dtype}, expected a floating-point dtype")
        dtype = dtype or tensors["W_enc"].dtype
        # Built on the meta device, so nothing is allocated twice for multi-GB checkpoints.
        sae = cls(cfg, dtype=dtype, device="meta")
        for name in shapes:
            setattr(sae, name, nn.Parameter(tensors[name].to(dtype), requires_grad=False))
        return sae

    @classmethod
    def from_sparsify(
        cls, coder: SparseCoder, *, dtype: torch.dtype | None = None, **cfg_fields: Any
    ) -> SparseAutoencoder:
        """Convert an EleutherAI sparsify `SparseCoder`; `cfg_fields` fill in reader_model, layer, meta.

        sparsify's encode (sparse_coder.py) is relu((x − b_dec) @ encoder.weight.T + encoder.bias) then
        top-k, which is this module's topk with apply_b_dec_to_input: encoder.weight is [d_sae, d_in],
        so W_enc is its transpose, and W_dec [d_sae, d_in] is already in this module's orientation.
        """
        if coder.cfg.activation != "topk":
            raise SaeembedError(f"sparsify activation '{coder.cfg.activation}' is not supported (only topk)")
        if coder.cfg.transcode or coder.W_skip is not None:
            raise SaeembedError("sparsify transcoders and skip connections are not supported (autoencoders only)")
        cfg = SaeConfig(
            arch="topk",
            d_in=coder.d_in,
            d_sae=coder.num_latents,
            k=coder.cfg.k,
            apply_b_dec_to_input=True,
            source_format="sparsify",
            **cfg_fields,
        )
        tensors = {
            "W_enc": coder.encoder.weight.detach().T,
            "b_enc": coder.encoder.bias.detach(),
            "W_dec": coder.W_dec.detach(),
            "b_dec": coder.b_dec.detach(),
        }
        return cls.from_tensors(cfg, tensors, dtype=dtype)

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype

    def pre_activations(self, x: Tensor) -> Tensor:
        """h = (normalise(x) − b_dec) @ W_enc + b_enc in the SAE's dtype (SAELens `process_sae_in` order)."""
        if x.shape[-1] != self.cfg.d_in:
            raise SaeembedError(f"activations have width {x.shape[-1]}, but the SAE reads width {self.cfg.d_in}")
        x = x.to(self.dtype)
        if self.cfg.normalize_activations == "constant_norm_rescale":
            x = x * (self.cfg.d_in**0.5 / x.norm(dim=-1, keepdim=True))
        elif self.cfg.normalize_activations == "layer_norm":
            # SAELens' run_time_activation_ln_in: torch's default (unbiased) std, eps added to it.
            x = x - x.mean(dim=-1, keepdim=True)
            x = x / (x.std(dim=-1, keepdim=True) + 1e-5)
        if self.cfg.apply_b_dec_to_input:
            x = x - self.b_dec
        if x.dim() == 2:
            # Fused bias add: under bf16 autocast it stays in bf16 instead of a separate fp32 pass over
            # the [tokens, d_sae] result, which cost as much as the matmul itself on a CPU.
            return torch.addmm(self.b_enc, x, self.W_enc)
        return x @ self.W_enc + self.b_enc

    def encode(self, x: Tensor) -> Tensor:
        """Dense, non-negative codes [..., d_sae] for activations [..., d_in]."""
        if self.cfg.arch == "itda":
            flat = x.reshape(-1, x.shape[-1])
            codes = self._pursuit(flat)
            dense = torch.zeros(flat.shape[0], self.cfg.d_sae, dtype=torch.float32, device=flat.device)
            dense[codes.row, codes.latent] = codes.value
            return dense.reshape(*x.shape[:-1], self.cfg.d_sae).to(self.dtype)
        h = self.pre_activations(x)
        if self.cfg.arch == "relu":
            return torch.relu(h)
        if self.cfg.arch == "jumprelu":
            return torch.relu(h) * (h > self.threshold)
        top = self._top_k(h)
        return torch.zeros_like(h).scatter_(-1, top.indices, torch.relu(top.values))

    def encode_sparse(self, x: Tensor) -> SparseCodes:
        """The non-zero codes of activations [tokens, d_in]; equal to `encode`'s non-zeros, but a TopK SAE
        never builds the dense codes."""
        if x.dim() != 2:
            raise SaeembedError(f"encode_sparse takes activations [tokens, d_in], got shape {tuple(x.shape)}")
        if self.cfg.arch == "itda":
            return self._pursuit(x)
        if self.cfg.arch != "topk":
            return SparseCodes.from_dense(self.encode(x))
        top = self._top_k(self.pre_activations(x))
        values = torch.relu(top.values).float()
        keep = values > 0
        rows = torch.arange(x.shape[0], device=x.device).unsqueeze(1).expand_as(keep)
        return SparseCodes(rows[keep], top.indices[keep], values[keep])

    def _pursuit(self, x: Tensor) -> SparseCodes:
        """ITDA's encoding: matching pursuit over the atoms (W_dec), the Gram matrix made once per device."""
        if x.shape[-1] != self.cfg.d_in:
            raise SaeembedError(f"activations have width {x.shape[-1]}, but the SAE reads width {self.cfg.d_in}")
        atoms = self.W_dec.float()
        gram = getattr(self, "_gram", None)
        if gram is None or gram.device != atoms.device:
            gram = self._gram = atoms @ atoms.T
        codes = matching_pursuit(x.float() - self.b_dec.float(), atoms, gram, int(self.cfg.k or 1))
        return SparseCodes(codes.row, codes.atom, codes.value)

    def _top_k(self, h: Tensor) -> torch.return_types.topk:
        if self.cfg.rescale_acts_by_decoder_norm:
            h = h * self.W_dec.norm(dim=-1)
        return h.topk(self.cfg.k, dim=-1, sorted=False)

    def decode(self, codes: Tensor) -> Tensor:
        """Reconstruction codes @ W_dec + b_dec.

        With rescale_acts_by_decoder_norm the codes are first divided by the decoder norms, undoing
        encode's scaling (SAELens TopKSAE.decode). With input normalisation the result stays in the
        normalised space: SAELens undoes it with per-call state from the last encode, not kept here.
        """
        codes = codes.to(self.dtype)
        if self.cfg.rescale_acts_by_decoder_norm:
            codes = codes / self.W_dec.norm(dim=-1)
        return codes @ self.W_dec + self.b_dec

    def save(self, directory: str | Path) -> None:
        """The own format: cfg.json (the config plus "format" and "format_version") + sae.safetensors.

        Tensors keep their dtype (the shipped default SAE is float16).
        """
        directory = Path(directory)
        try:
            config = json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self.cfg)}, indent=2)
        except TypeError as error:
            raise SaeembedError(f"SAE config cannot be saved as JSON: {error}") from None
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {name: parameter.detach().contiguous().cpu() for name, parameter in self.named_parameters()}
        save_file(tensors, directory / WEIGHTS_FILE)
        (directory / CONFIG_FILE).write_text(config + "\n")

    @classmethod
    def load(cls, directory: str | Path, device: Device = "cpu", dtype: torch.dtype | None = None) -> SparseAutoencoder:
        """Load the own format written by `save`; `dtype` defaults to the stored one."""
        directory = Path(directory)
        with naming_the_checkpoint(directory):
            return load_own(directory, device=device, dtype=dtype).to(device)


# --- reading files ------------------------------------------------------------------------------


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


@contextlib.contextmanager
def naming_the_checkpoint(path: Path) -> Iterator[None]:
    """Prefix a loader's errors with the checkpoint path, so each says where and what in one line."""
    try:
        yield
    except SaeembedError as error:
        raise SaeembedError(f"cannot load SAE {path}: {error}") from None


@contextlib.contextmanager
def reading(file: Path) -> Iterator[None]:
    """Turn the errors of reading an unreadable or corrupt file into one-line user errors."""
    try:
        yield
    except (OSError, ValueError, RuntimeError, SafetensorError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        raise SaeembedError(f"cannot read {file.name}: {_one_line(error)}") from None


def read_json(file: Path) -> dict[str, Any]:
    with reading(file):
        config = json.loads(file.read_text())
    if not isinstance(config, dict):
        raise SaeembedError(f"{file.name} holds a JSON {type(config).__name__}, expected an object")
    return config


def require(config: Mapping[str, Any], key: str, file: str) -> Any:
    if key not in config:
        raise SaeembedError(f"{file} has no '{key}'")
    return config[key]


# --- layouts ------------------------------------------------------------------------------------


def load_own(directory: Path, *, device: Device, dtype: torch.dtype | None) -> SparseAutoencoder:
    config = read_json(directory / CONFIG_FILE)
    if config.pop("format", None) != FORMAT:
        raise SaeembedError(f'{CONFIG_FILE} is not in the saeembed format (no "format": "saeembed")')
    version = config.pop("format_version", None)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise SaeembedError(
            f"format_version {version!r} is not readable by this saeembed (reads up to {FORMAT_VERSION})"
        )
    try:
        cfg = SaeConfig(**config)
    except TypeError as error:  # unknown or missing fields
        raise SaeembedError(f"{CONFIG_FILE} does not describe an SAE: {error}") from None
    with reading(directory / WEIGHTS_FILE):
        tensors = load_file(directory / WEIGHTS_FILE, device=str(device))
    return SparseAutoencoder.from_tensors(cfg, tensors, dtype=dtype)
