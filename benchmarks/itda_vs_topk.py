"""ITDA dictionaries against a TopK SAE on the same activations: held-out FVU, L0 and the time each took.

    python benchmarks/itda_vs_topk.py [--train-tokens 600000] [--latents 2048] [--k 32] [--epochs 5]

Both read SmolLM2-135M-Instruct's layer 15 (the default SAE's), the same training activations and the same
held-out ones (`bench_activations`): a TopK SAE trained with the AuxK loss (`train_topk_sae`), and ITDA
dictionaries built in one pass (`train_itda`) at the same width and L0, then at a quarter and four times
the width. Each time is the whole call (building or training, then the held-out evaluation); "tokens
read" counts every epoch of the SAE's training, and the activations ITDA read before it was full. Leask et al.
(2025) report ITDA reaching an SAE's loss in about 1% of its training time, at somewhat worse
reconstruction; the last lines say how it went here, and the Jaccard similarity of two ITDA dictionaries
built with different seeds (the paper's measure for comparing dictionaries).
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_activations import LAYER, READER, activations, add_training_options

from saeembed.model.itda import ItdaOptions, jaccard
from saeembed.model.reader import Reader
from saeembed.model.train import TrainingReport, TrainOptions, train_itda, train_topk_sae


def row(name: str, width: int, report: TrainingReport, seconds: float, epochs: int | None = None) -> None:
    print(
        f"  {name:<22} {width:>7,} {report.fvu:8.3f} {report.fvu_without_outliers:10.3f} {report.mean_l0:7.1f} "
        f"{report.dead_fraction:7.1%} {report.train_tokens * (epochs or 1):>12,} {seconds:9.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_options(parser)
    args = parser.parse_args()

    reader = Reader.load(READER, layer=LAYER, device="cpu")
    train, heldout = activations(reader, args.train_tokens)
    print(f"{READER} layer {LAYER}: {train.shape[0]:,} training activations, {heldout.shape[0]:,} held out\n")
    header = ("latents", "FVU", "FVU-0.1%", "L0", "dead", "tokens read", "seconds")
    widths = (7, 8, 10, 7, 7, 12, 9)
    print(f"  {'':<22} " + " ".join(f"{name:>{width}}" for name, width in zip(header, widths, strict=True)))

    began = time.perf_counter()
    options = TrainOptions(d_sae=args.latents, k=args.k, epochs=args.epochs)
    _, topk = train_topk_sae(train, heldout, options)
    topk_seconds = time.perf_counter() - began
    row(f"TopK SAE, {args.epochs} epochs", args.latents, topk, topk_seconds, epochs=args.epochs)

    itda_seconds = {}
    sources = {}
    for atoms in (args.latents // 4, args.latents, args.latents * 4):
        began = time.perf_counter()
        sae, report = train_itda(train, heldout, ItdaOptions(atoms=atoms, k=args.k))
        itda_seconds[atoms] = time.perf_counter() - began
        sources[atoms] = sae.cfg.meta["atom_sources"]
        row(f"ITDA, {atoms:,} asked", sae.cfg.d_sae, report, itda_seconds[atoms])

    same_width = itda_seconds[args.latents] / topk_seconds
    print(f"\nITDA at the same width took {same_width:.1%} of the TopK SAE's time (both include evaluation).")
    other, _ = train_itda(train, heldout, ItdaOptions(atoms=args.latents, k=args.k, seed=1))
    similarity = jaccard(torch.tensor(sources[args.latents]), torch.tensor(other.cfg.meta["atom_sources"]))
    print(f"Jaccard similarity of two {args.latents:,}-atom dictionaries built with seeds 0 and 1: {similarity:.3f}")


if __name__ == "__main__":
    main()
