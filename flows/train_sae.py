"""Flow: train a TopK SAE (or build an ITDA dictionary) on a corpus's activations and save it with its
held-out report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import saeembed_flows  # noqa: F401  (Prefect settings before Prefect is imported)
import torch
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from saeembed_flows.progress import progress_bar

from saeembed.jobs import TrainData, split_corpus
from saeembed.model.itda import ItdaOptions
from saeembed.model.reader import DEFAULT_READER, Reader
from saeembed.model.train import (
    TrainOptions,
    activation_cache_path,
    collect_activations,
    load_or_collect,
    sae_config_for,
    train_itda,
    train_topk_sae,
)
from saeembed.model.units import TOKEN_INPUT, parse_unit
from saeembed.options import TrainSaeOptions
from saeembed.storage.store import Store, default_db_path


@task(name="split-corpus", cache_policy=NO_CACHE)
def split(db: str | None, corpus: str, heldout_docs: int, seed: int) -> TrainData:
    with Store.open(db, read_only=True) as store:
        return split_corpus(store, corpus, heldout_docs=heldout_docs, seed=seed)


@task(name="collect-activations", cache_policy=NO_CACHE)
def collect(
    reader: Reader, texts: list[str], max_tokens: int, token_budget: int | None, cache_key: dict, show_progress: bool
) -> torch.Tensor:
    label = cache_key["part"]
    unit = None if cache_key["unit"] == TOKEN_INPUT else parse_unit(cache_key["unit"])

    def run() -> torch.Tensor:
        with progress_bar(f"collect {label}", len(texts), enabled=show_progress) as advance:
            return collect_activations(
                reader, texts, max_tokens=max_tokens, token_budget=token_budget, on_batch=advance, unit=unit
            )

    path = activation_cache_path(**cache_key)
    if path.exists():
        print(f"{label} activations: reusing {path}")
    return load_or_collect(path, run)


@flow(name="train-sae", log_prints=True)
def train_sae_flow(
    corpus: str,
    layer: int,
    out: str,
    latents: int = 8192,
    k: int = 32,
    db: str | None = None,
    reader: str = DEFAULT_READER,
    max_tokens: int = 128,
    train_tokens: int = 2_000_000,
    heldout_docs: int = 500,
    batch_size: int = 4096,
    epochs: int = 1,
    lr: float | None = None,
    seed: int = 0,
    device: str = "auto",
    dtype: str = "auto",
    save_dtype: str = "float16",
    arch: str = "topk",
    atoms: int | None = None,
    unit: str = TOKEN_INPUT,
    show_progress: bool = False,
) -> dict:
    """Train a TopK SAE (AuxK loss) on CORPUS's activations at LAYER (tokens, or with `unit` the mean of each
    sentence, paragraph, chunk or document); write it to OUT."""
    checked = TrainSaeOptions.pick(locals())  # every parameter checked before the database is opened or a model loads
    unit = checked.unit  # as embed --unit spells it
    target = Path(out)
    data = split(db, corpus, heldout_docs, seed)
    loaded = Reader.load(reader, layer=layer, device=device, dtype=dtype)
    # Activations depend on these settings only: a rerun with the same ones reuses them.
    cache_key = {
        "db": str(Path(db or default_db_path()).resolve()),
        "corpus": corpus,
        "documents": data.documents,
        "reader": loaded.model_id,
        "layer": layer,
        "dtype": loaded.dtype_name,
        "max_tokens": max_tokens,
        "train_tokens": train_tokens,
        "heldout_docs": heldout_docs,
        "seed": seed,
        "unit": unit,
    }
    train = collect(loaded, data.train_texts, max_tokens, train_tokens, {**cache_key, "part": "train"}, show_progress)
    heldout = collect(loaded, data.heldout_texts, max_tokens, None, {**cache_key, "part": "held-out"}, show_progress)
    if arch == "itda":
        itda = ItdaOptions(atoms=atoms or latents, k=k, batch_size=batch_size, seed=seed)
        batches = math.ceil(train.shape[0] / batch_size)
        with progress_bar("build ITDA dictionary", batches, enabled=show_progress, unit="batches") as advance:
            sae, report = train_itda(
                train, heldout, itda, on_batch=lambda batch, total, atoms: advance(1), input_unit=unit
            )
    else:
        options = TrainOptions(d_sae=latents, k=k, batch_size=batch_size, epochs=epochs, lr=lr, seed=seed)
        steps = train.shape[0] // batch_size * epochs
        with progress_bar("train", steps, enabled=show_progress, unit="steps") as advance:
            sae, report = train_topk_sae(
                train,
                heldout,
                options,
                device=loaded.device,
                on_step=lambda step, total, fvu: advance(1),
                input_unit=unit,
            )
    sae.cfg = sae_config_for(loaded, sae, report)
    sae.to(getattr(torch, save_dtype)).save(target)
    (target / "training_report.json").write_text(json.dumps(report.to_dict(), indent=2))
    headline = {
        "out": str(target),
        "arch": arch,
        "unit": unit,
        "latents": sae.cfg.d_sae,
        "fvu": round(report.fvu, 4),
        "fvu_without_outliers": round(report.fvu_without_outliers, 4),
        "mean_l0": round(report.mean_l0, 2),
        "dead_fraction": round(report.dead_fraction, 4),
        "train_tokens": report.train_tokens,
        "heldout_tokens": report.heldout_tokens,
        "seconds": report.seconds,
    }
    create_markdown_artifact(
        key="train-sae-report",
        markdown="\n".join(f"- **{name}**: {value}" for name, value in headline.items()),
        description=f"{'ITDA dictionary' if arch == 'itda' else 'TopK SAE'} on {corpus}, layer {layer}"
        + ("" if unit == TOKEN_INPUT else f", {unit} means"),
    )
    return headline
