"""Reader activations the SAE benchmarks train on, collected once and cached as `saeembed train-sae`
caches its own: SmolLM2-135M-Instruct's layer 15 over the default SAE's training texts."""

from __future__ import annotations

import argparse

import torch

from saeembed.model.reader import Reader
from saeembed.model.train import activation_cache_path, collect_activations, load_or_collect
from saeembed.storage.corpora import training_texts

READER, LAYER = "smollm2-135m-instruct", 15
HELDOUT_TEXTS = 200


def activations(reader: Reader, train_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training activations (`train_tokens` of them) and held-out ones (from 200 other texts)."""
    texts = training_texts(max_texts=max(2000, train_tokens // 20), seed=0)["text"].to_list()
    settings = {"bench": "concept_matching", "reader": reader.model_id, "layer": reader.layer, "tokens": train_tokens}
    train = load_or_collect(
        activation_cache_path(**settings, part="train"),
        lambda: collect_activations(reader, texts[HELDOUT_TEXTS:], token_budget=train_tokens),
    )
    heldout = load_or_collect(
        activation_cache_path(**settings, part="heldout"),
        lambda: collect_activations(reader, texts[:HELDOUT_TEXTS]),
    )
    return train, heldout


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """The options both SAE benchmarks train with: one set of defaults, so they share one cache entry."""
    parser.add_argument("--train-tokens", type=int, default=600_000)
    parser.add_argument("--latents", type=int, default=2048)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5)
