"""Do two SAEs trained on the same activations with different seeds learn the same concepts, and does
`saeembed concepts match` find them? Against an untrained SAE of the same width as the reference.

    python benchmarks/concept_matching.py [--train-tokens 600000] [--latents 2048] [--k 32] [--epochs 5]
                                          [--docs 600]
                                          [--keep FOLDER]

1. Activations of SmolLM2-135M-Instruct's layer 15 over the default SAE's training texts (cached, as
   `saeembed train-sae` caches them), then two TopK SAEs trained on them with seeds 0 and 1, and one
   SAE of the same width left at random weights (decoder rows of unit norm, encoder their transpose, as
   sparsify initialises one).
2. The demo's AG News articles embedded three times by the real pipeline (one run per SAE) into one store.
3. `match_concepts` between the seed-0 run and the seed-1 run, and between the seed-0 run and the random
   one, by correlation and by decoder cosine: the share of concepts matched at ≥ 0.5, the mean best score,
   SVCCA of the matched decoders against shuffled pairs, and how often the two methods pick the same match.
   Then the seed-0 run against a run of a TopK SAE on another layer of the reader (correlation only: decoder
   directions of two residual streams are not comparable), an offline stand-in for two readers.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from bench_activations import LAYER, READER, activations, add_training_options

from saeembed.analysis.matching import ConceptMatches, match_concepts
from saeembed.jobs import embed, ingest
from saeembed.model.pooling import EmbedOptions
from saeembed.model.reader import Reader
from saeembed.model.sae import SparseAutoencoder
from saeembed.model.train import TrainOptions, sae_config_for, train_topk_sae
from saeembed.storage.corpora import demo_corpus
from saeembed.storage.store import Store


def random_sae(like: SparseAutoencoder, seed: int) -> SparseAutoencoder:
    """An untrained TopK SAE of `like`'s shape: unit-norm random decoder rows, the encoder their transpose."""
    generator = torch.Generator().manual_seed(seed)
    decoder = torch.randn(like.cfg.d_sae, like.cfg.d_in, generator=generator)
    decoder /= decoder.norm(dim=1, keepdim=True)
    tensors = {
        "W_enc": decoder.T.clone(),
        "b_enc": torch.zeros(like.cfg.d_sae),
        "W_dec": decoder,
        "b_dec": like.b_dec.detach().float().clone(),
    }
    return SparseAutoencoder.from_tensors(like.cfg, tensors)


def report(name: str, result: ConceptMatches, seconds: float) -> None:
    s = result.summary
    svcca = "n/a" if s.svcca is None else f"{s.svcca:.3f} (shuffled pairs {s.svcca_reference:.3f})"
    print(
        f"  {name:<34} matched ≥ 0.5: {s.share_matched:6.1%}   mean best {s.mean_best:.3f}   "
        f"SVCCA {svcca}   {s.n_concepts_a:,} concepts, {seconds:.1f} s"
    )


def agreement(store: Store, correlation: int, decoder: int) -> float:
    """Share of the concepts matched at ≥ 0.5 by correlation whose decoder match is the same concept."""
    rows = store.query(
        "SELECT c.feature_b = d.feature_b AS same FROM concept_matches c JOIN concept_matches d "
        "USING (feature_a) WHERE c.analysis_id = $c AND d.analysis_id = $d AND c.score >= 0.5",
        {"c": correlation, "d": decoder},
    )
    return float(rows["same"].mean()) if rows.height else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_options(parser)
    parser.add_argument("--docs", type=int, default=600)
    parser.add_argument("--other-layer", type=int, default=10, help="Layer of the cross-layer case.")
    parser.add_argument("--keep", type=Path, help="An empty folder to keep the SAEs and the store in.")
    args = parser.parse_args()

    reader = Reader.load(READER, layer=LAYER, device="cpu")
    started = time.perf_counter()
    train, heldout = activations(reader, args.train_tokens)
    print(
        f"activations: {train.shape[0]:,} training tokens, {heldout.shape[0]:,} held out "
        f"({time.perf_counter() - started:.0f} s, cached after the first run)"
    )

    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        paths = {}
        for seed in (0, 1):
            options = TrainOptions(d_sae=args.latents, k=args.k, epochs=args.epochs, seed=seed)
            sae, trained = train_topk_sae(train, heldout, options)
            sae.cfg = sae_config_for(reader, sae, trained)
            paths[f"seed {seed}"] = Path(folder) / f"seed{seed}"
            sae.save(paths[f"seed {seed}"])
            print(
                f"TopK SAE seed {seed}: {args.latents} latents, k {args.k}, FVU {trained.fvu:.3f}, "
                f"{trained.seconds:.0f} s"
            )
        random = random_sae(SparseAutoencoder.load(paths["seed 0"]), seed=2)
        paths["random"] = Path(folder) / "random"
        random.save(paths["random"])
        # Another reader's concepts: the same model read at another layer (an offline stand-in for two models).
        other_reader = Reader.load(READER, layer=args.other_layer, device="cpu")
        other_train, other_heldout = activations(other_reader, args.train_tokens // 3)
        options = TrainOptions(d_sae=args.latents, k=args.k, epochs=args.epochs)
        sae, trained = train_topk_sae(other_train, other_heldout, options)
        sae.cfg = sae_config_for(other_reader, sae, trained)
        paths[f"layer {args.other_layer}"] = Path(folder) / f"layer{args.other_layer}"
        sae.save(paths[f"layer {args.other_layer}"])
        print(f"TopK SAE on layer {args.other_layer}: FVU {trained.fvu:.3f}, {other_train.shape[0]:,} tokens")
        del other_reader, other_train

        source = Path(folder) / "news.parquet"
        demo_corpus(n=args.docs).select("id", "text").write_parquet(source)
        with Store.open(Path(folder) / "match.duckdb") as store:
            ingest(store, source, corpus="news", id_col="id")
            runs = {}
            for name, path in paths.items():
                began = time.perf_counter()
                runs[name] = embed(store, "news", sae=str(path), device="cpu", options=EmbedOptions()).run_id
                print(
                    f"embedded {args.docs} articles with the {name} SAE: run {runs[name]} "
                    f"({time.perf_counter() - began:.0f} s)"
                )
            print(f"\nconcept matching, {args.docs} articles (SmolLM2-135M-Instruct layer {LAYER}):")
            ids = {}
            for other in ("seed 1", "random", f"layer {args.other_layer}"):
                for method in ("correlation", "decoder")[: 1 if other.startswith("layer") else 2]:
                    began = time.perf_counter()
                    result = match_concepts(store, runs["seed 0"], runs[other], method=method)
                    report(f"seed 0 → {other}, {method}", result, time.perf_counter() - began)
                    ids[other, method] = result.analysis_id
            for other in ("seed 1", "random"):
                same = agreement(store, ids[other, "correlation"], ids[other, "decoder"])
                print(
                    f"  seed 0 → {other}: the decoder method picks the same match for {same:.1%} of the concepts "
                    "matched ≥ 0.5 by correlation"
                )


if __name__ == "__main__":
    main()
