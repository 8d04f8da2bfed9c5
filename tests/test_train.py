"""Training a TopK SAE (sparsify's SparseCoder + AuxK) on real activations of the truncated reader."""

from __future__ import annotations

import pytest
import torch

from saeembed.errors import SaeembedError
from saeembed.model.train import TrainOptions, collect_activations, evaluate_sae, train_topk_sae
from saeembed.storage.corpora import demo_corpus


@pytest.fixture(scope="module")
def activations(reader):
    texts = demo_corpus(n=120, seed=3)["text"].to_list()
    return collect_activations(reader, texts, max_tokens=48, batch_size=16)


def test_collect_activations_respects_the_budget(reader):
    texts = demo_corpus(n=40, seed=4)["text"].to_list()
    collected = collect_activations(reader, texts, max_tokens=32, token_budget=500)
    assert collected.shape == (500, 576)
    assert collected.dtype == torch.bfloat16


def test_fvu_falls_and_the_report_is_filled(activations):
    train, heldout = activations[:-800], activations[-800:]
    fvus: list[float] = []
    options = TrainOptions(d_sae=256, k=8, batch_size=256, epochs=6, dead_after_tokens=2048)
    sae, report = train_topk_sae(train, heldout, options, on_step=lambda step, total, fvu: fvus.append(fvu))
    assert len(fvus) == report.steps == (train.shape[0] // 256) * 6
    first, last = sum(fvus[:3]) / 3, sum(fvus[-3:]) / 3
    assert last < 0.6 * first
    assert report.fvu < 0.5
    assert report.mean_l0 == pytest.approx(8.0, abs=0.01)
    assert 0.0 <= report.dead_fraction < 0.5
    assert report.heldout_tokens == 800
    assert evaluate_sae(sae, heldout)["fvu"] == pytest.approx(report.fvu)
    assert (sae.cfg.arch, sae.cfg.k, sae.cfg.d_sae) == ("topk", 8, 256)
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(256), atol=1e-4, rtol=1e-4)


def test_bad_training_options_are_refused(activations):
    with pytest.raises(SaeembedError, match="--k must be between 1 and --latents"):
        train_topk_sae(activations, activations, TrainOptions(d_sae=16, k=32))
    with pytest.raises(SaeembedError, match="fewer than one batch"):
        train_topk_sae(activations[:10], activations, TrainOptions(d_sae=16, k=4, batch_size=64))
