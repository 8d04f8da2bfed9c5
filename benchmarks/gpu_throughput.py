"""GPU throughput of the embedding path, with random-weight readers built from Llama configs (throughput does
not depend on the weights, and nothing is downloaded). Needs only torch and transformers:

    PYTHONPATH=. python benchmarks/gpu_throughput.py [--sizes 135m,1b,8b] [--docs 256] [--doc-tokens 500]
    PYTHONPATH=. python benchmarks/gpu_throughput.py --tiny        # a tiny config on the CPU (the test runs it)

For each size: the reader truncated after its hooked layer, built directly in the compute dtype on the
device with only the layers it keeps; a random TopK SAE of the matching width (65,536 latents and k = 64
for the 8B case, as Goodfire's Llama-3.1-8B layer-19 SAE); documents of `--doc-tokens` random token ids,
batched by tokens. Printed per size, measured alternately and best of `--repeats`:

- raw:      the truncated forward pass alone, tok/s;
- pipeline: reader + SAE encode + pooling into per-document rows (saeembed.model.pooling.embed_batch), tok/s;
- pipeline / raw, peak GPU memory, and MFU of the raw pass: 2 × (parameters of the kept layers) + the
  attention's 2 × layers × context × width FLOPs per token, over the device's dense bf16 peak.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from saeembed.model.pooling import embed_batch
from saeembed.model.reader import Reader, length_batches
from saeembed.model.sae import SaeConfig, SparseAutoencoder


@dataclass(frozen=True)
class Size:
    name: str
    config: dict
    layer: int
    d_sae: int
    k: int


SIZES = {
    "tiny": Size(
        "tiny",
        dict(
            hidden_size=64,
            intermediate_size=128,
            num_attention_heads=4,
            num_key_value_heads=2,
            num_hidden_layers=4,
            vocab_size=1000,
        ),
        2,
        512,
        8,
    ),
    # SmolLM2-135M-Instruct: 30 layers, width 576; the default SAE reads layer 15.
    "135m": Size(
        "135m",
        dict(
            hidden_size=576,
            intermediate_size=1536,
            num_attention_heads=9,
            num_key_value_heads=3,
            num_hidden_layers=30,
            vocab_size=49152,
        ),
        15,
        8192,
        32,
    ),
    # Llama-3.2-1B: 16 layers, width 2048.
    "1b": Size(
        "1b",
        dict(
            hidden_size=2048,
            intermediate_size=8192,
            num_attention_heads=32,
            num_key_value_heads=8,
            num_hidden_layers=16,
            vocab_size=128256,
        ),
        9,
        32768,
        32,
    ),
    # Llama-3.1-8B: 32 layers, width 4096; Goodfire's SAE reads layer 19 with 65,536 latents.
    "8b": Size(
        "8b",
        dict(
            hidden_size=4096,
            intermediate_size=14336,
            num_attention_heads=32,
            num_key_value_heads=8,
            num_hidden_layers=32,
            vocab_size=128256,
        ),
        19,
        65536,
        64,
    ),
}

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0}
"""Dense bf16 peaks from the vendors' data sheets (without sparsity)."""


def build_reader(size: Size, device: torch.device, dtype: torch.dtype) -> Reader:
    """A random-weight Llama truncated after `size.layer`: only the kept layers are ever allocated, directly
    on the device and in the compute dtype."""
    config = LlamaConfig(**{**size.config, "num_hidden_layers": size.layer + 1}, torch_dtype=dtype)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    tokenizer = SimpleNamespace(pad_token_id=0, eos_token_id=0)
    return Reader(model, tokenizer, model_id=f"random-llama-{size.name}", layer=size.layer, device=device, dtype=dtype)


def build_sae(size: Size, device: torch.device, dtype: torch.dtype) -> SparseAutoencoder:
    width = size.config["hidden_size"]
    generator = torch.Generator(device="cpu").manual_seed(0)
    cfg = SaeConfig(arch="topk", d_in=width, d_sae=size.d_sae, k=size.k, reader_model="random", layer=size.layer)
    tensors = {
        "W_enc": torch.randn(width, size.d_sae, generator=generator) / width**0.5,
        "b_enc": torch.zeros(size.d_sae),
        "W_dec": torch.randn(size.d_sae, width, generator=generator) / size.d_sae**0.5,
        "b_dec": torch.zeros(width),
    }
    return SparseAutoencoder.from_tensors(cfg, tensors).to(device=device, dtype=dtype)


def kept_parameters(reader: Reader) -> int:
    """Parameters the truncated forward multiplies by: the kept decoder layers (no embedding, no head)."""
    owner = reader.model.model
    return sum(p.numel() for p in owner.layers.parameters())


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def raw_pass(reader: Reader, batches: list[list[list[int]]]) -> float:
    started = time.perf_counter()
    for batch in batches:
        reader.residuals(batch, [])
    synchronize(reader.device)
    return time.perf_counter() - started


def pipeline_pass(reader: Reader, sae: SparseAutoencoder, batches: list[list[list[int]]], doc_tokens: int) -> float:
    started = time.perf_counter()
    for number, batch in enumerate(batches):
        ids = list(range(number * len(batch), (number + 1) * len(batch)))
        embed_batch(reader, sae, ids, batch, [doc_tokens] * len(batch), [], doc_tokens)
    synchronize(reader.device)
    return time.perf_counter() - started


def measure(size: Size, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict:
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    reader = build_reader(size, device, dtype)
    sae = build_sae(size, device, dtype)
    vocab = size.config["vocab_size"]
    documents = [torch.randint(1, vocab, (args.doc_tokens,)).tolist() for _ in range(args.docs)]
    batches = [
        [documents[i] for i in batch]
        for batch in length_batches(
            [len(d) for d in documents], batch_size=args.docs, max_batch_tokens=args.batch_tokens
        )
    ]
    tokens = args.docs * args.doc_tokens
    raw_pass(reader, batches[:1])  # warm-up: kernels chosen, memory pools filled
    pipeline_pass(reader, sae, batches[:1], args.doc_tokens)
    raw, pipeline = float("inf"), float("inf")
    for _ in range(args.repeats):
        raw = min(raw, raw_pass(reader, batches))
        pipeline = min(pipeline, pipeline_pass(reader, sae, batches, args.doc_tokens))
    width, layers = size.config["hidden_size"], size.layer + 1
    flops_per_token = 2 * kept_parameters(reader) + 2 * layers * args.doc_tokens * width
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device_name(device)), None)
    return {
        "size": size.name,
        "layers": layers,
        "raw_tok_s": tokens / raw,
        "pipeline_tok_s": tokens / pipeline,
        "ratio": raw / pipeline,
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan"),
        "mfu": (tokens / raw) * flops_per_token / (peak * 1e12) if peak else float("nan"),
    }


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="135m,1b,8b")
    parser.add_argument("--docs", type=int, default=256)
    parser.add_argument("--doc-tokens", type=int, default=500)
    parser.add_argument("--batch-tokens", type=int, default=32_768, help="Padded tokens per forward pass.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=None, help="The device's dense bf16 peak.")
    parser.add_argument("--tiny", action="store_true", help="A tiny config on the CPU, in float32 (for tests).")
    args = parser.parse_args()
    if args.tiny:
        device, dtype, sizes = torch.device("cpu"), torch.float32, ["tiny"]
        args.docs, args.doc_tokens, args.repeats = min(args.docs, 16), min(args.doc_tokens, 64), 1
    else:
        if not torch.cuda.is_available():
            sys.exit("no CUDA device: run with --tiny on a CPU")
        device, dtype, sizes = torch.device("cuda"), torch.bfloat16, args.sizes.split(",")
    print(f"device: {device_name(device)}; torch {torch.__version__}; {args.docs} documents × {args.doc_tokens} tokens")
    print(
        f"{'size':>5} {'layers':>6} {'raw tok/s':>12} {'pipeline tok/s':>15} {'pipe/raw':>9} {'peak GiB':>9} {'MFU':>6}"
    )
    for name in sizes:
        row = measure(SIZES[name], args, device, dtype)
        print(
            f"{row['size']:>5} {row['layers']:>6} {row['raw_tok_s']:>12,.0f} {row['pipeline_tok_s']:>15,.0f} "
            f"{row['ratio']:>9.2f} {row['peak_gib']:>9.1f} {row['mfu']:>6.1%}",
            flush=True,
        )
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
