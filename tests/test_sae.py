"""SAE architectures and checkpoint layouts: tiny checkpoints written in each published layout, loaded,
and their encodings checked against the layout's formula computed directly in the test."""

from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from saeembed.errors import SaeembedError
from saeembed.sae import SaeConfig, SparseAutoencoder, check_compatible, load_sae

D_IN, D_SAE = 12, 40


@pytest.fixture()
def weights() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "W_enc": torch.randn(D_IN, D_SAE, generator=g) * 0.5,
        "b_enc": torch.randn(D_SAE, generator=g) * 0.1,
        "W_dec": torch.randn(D_SAE, D_IN, generator=g) * 0.5,
        "b_dec": torch.randn(D_IN, generator=g) * 0.1,
        "threshold": torch.rand(D_SAE, generator=g) * 0.5,
    }


@pytest.fixture()
def x() -> torch.Tensor:
    return torch.randn(7, D_IN, generator=torch.Generator().manual_seed(1))


def direct_topk(x, w, k, subtract_b_dec=True):
    h = (x - w["b_dec"] if subtract_b_dec else x) @ w["W_enc"] + w["b_enc"]
    out = torch.zeros_like(h)
    values, indices = h.topk(k, dim=-1)
    return out.scatter(-1, indices, values.clamp(min=0))


def test_own_format_round_trip_keeps_encodings(tmp_path, weights, x):
    cfg = SaeConfig(arch="topk", d_in=D_IN, d_sae=D_SAE, k=5, reader_model="org/model", layer=3)
    sae = SparseAutoencoder.from_tensors(cfg, {k: v for k, v in weights.items() if k != "threshold"})
    sae.save(tmp_path / "sae")
    loaded = load_sae(tmp_path / "sae")
    assert loaded.cfg == cfg
    torch.testing.assert_close(loaded.encode(x), sae.encode(x))
    torch.testing.assert_close(loaded.encode(x), direct_topk(x, weights, 5))
    assert ((loaded.encode(x) > 0).sum(-1) <= 5).all()


def test_own_format_in_float16_stays_float16(tmp_path, weights, x):
    cfg = SaeConfig(arch="relu", d_in=D_IN, d_sae=D_SAE)
    sae = SparseAutoencoder.from_tensors(cfg, {k: v for k, v in weights.items() if k != "threshold"}).half()
    sae.save(tmp_path / "sae")
    loaded = load_sae(tmp_path / "sae")
    assert loaded.dtype == torch.float16
    torch.testing.assert_close(loaded.encode(x), sae.encode(x))


def test_topk_keeps_exactly_k_latents_and_decodes(weights, x):
    cfg = SaeConfig(arch="topk", d_in=D_IN, d_sae=D_SAE, k=4)
    sae = SparseAutoencoder.from_tensors(cfg, weights)
    codes = sae.encode(x + 10.0)  # shifted so every kept pre-activation is positive
    assert ((codes > 0).sum(-1) == 4).all()
    torch.testing.assert_close(sae.decode(codes), codes @ weights["W_dec"] + weights["b_dec"])


def test_jumprelu_zeroes_values_at_or_below_the_threshold():
    cfg = SaeConfig(arch="jumprelu", d_in=2, d_sae=3, apply_b_dec_to_input=False)
    sae = SparseAutoencoder.from_tensors(
        cfg,
        {
            "W_enc": torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]),
            "b_enc": torch.zeros(3),
            "W_dec": torch.zeros(3, 2),
            "b_dec": torch.zeros(2),
            "threshold": torch.tensor([0.5, 0.5, 0.5]),
        },
    )
    codes = sae.encode(torch.tensor([[0.4, 0.6]]))
    assert codes.tolist() == [[0.0, 0.6000000238418579, 1.0]]


def test_saelens_v6_standard_and_topk(tmp_path, weights, x):
    for architecture, expected in (
        ("standard", lambda: torch.relu((x - weights["b_dec"]) @ weights["W_enc"] + weights["b_enc"])),
        ("topk", lambda: direct_topk(x, weights, 6)),
        (
            "jumprelu",
            lambda: (lambda h: torch.relu(h) * (h > weights["threshold"]))(
                (x - weights["b_dec"]) @ weights["W_enc"] + weights["b_enc"]
            ),
        ),
    ):
        folder = tmp_path / architecture
        folder.mkdir()
        tensors = {k: v for k, v in weights.items() if architecture == "jumprelu" or k != "threshold"}
        save_file(tensors, folder / "sae_weights.safetensors")
        cfg = {
            "architecture": architecture,
            "d_in": D_IN,
            "d_sae": D_SAE,
            "dtype": "float32",
            "device": "cpu",
            "apply_b_dec_to_input": True,
            "normalize_activations": "none",
            "sae_lens_version": "6.5.0",
            "metadata": {"model_name": "gpt2-small", "hook_name": "blocks.8.hook_resid_post"},
        }
        if architecture == "topk":
            cfg["k"] = 6
        (folder / "cfg.json").write_text(json.dumps(cfg))
        sae = load_sae(folder)
        assert (sae.cfg.source_format, sae.cfg.layer, sae.cfg.reader_model) == ("saelens", 8, "gpt2-small")
        torch.testing.assert_close(sae.encode(x), expected())


def test_saelens_pre_v6_config_with_resid_pre_hook(tmp_path, weights, x):
    save_file({k: v for k, v in weights.items() if k != "threshold"}, tmp_path / "sae_weights.safetensors")
    (tmp_path / "cfg.json").write_text(
        json.dumps(
            {
                "d_in": D_IN,
                "d_sae": D_SAE,
                "model_name": "gpt2-small",
                "hook_name": "blocks.5.hook_resid_pre",
                "activation_fn_str": "topk",
                "activation_fn_kwargs": {"k": 3},
                "normalize_activations": True,
                "apply_b_dec_to_input": False,
            }
        )
    )
    sae = load_sae(tmp_path)
    assert (sae.cfg.arch, sae.cfg.k, sae.cfg.layer) == ("topk", 3, 4)  # resid_pre of 5 = output of layer 4
    torch.testing.assert_close(sae.encode(x), direct_topk(x, weights, 3, subtract_b_dec=False))


def test_saelens_gated_and_other_hooks_are_refused(tmp_path, weights):
    save_file({k: v for k, v in weights.items() if k != "threshold"}, tmp_path / "sae_weights.safetensors")
    base = {"d_in": D_IN, "d_sae": D_SAE, "metadata": {"hook_name": "blocks.2.hook_resid_post"}}
    (tmp_path / "cfg.json").write_text(json.dumps({**base, "architecture": "gated"}))
    with pytest.raises(SaeembedError, match="architecture 'gated' is not supported"):
        load_sae(tmp_path)
    (tmp_path / "cfg.json").write_text(
        json.dumps({**base, "architecture": "standard", "metadata": {"hook_name": "blocks.2.attn.hook_z"}})
    )
    with pytest.raises(SaeembedError, match=r"unsupported SAE hook 'blocks.2.attn.hook_z'"):
        load_sae(tmp_path)


def test_sparsify_layout_matches_sparsify_itself(tmp_path, x):
    from sparsify import SparseCoder, SparseCoderConfig

    torch.manual_seed(0)
    coder = SparseCoder(D_IN, SparseCoderConfig(num_latents=D_SAE, k=5))
    with torch.no_grad():
        coder.encoder.bias.normal_()
        coder.b_dec.normal_()
    run = tmp_path / "run"
    coder.save_to_disk(run / "layers.6")
    (run / "config.json").write_text(json.dumps({"model": "EleutherAI/pythia-70m"}))
    sae = load_sae(run / "layers.6")
    assert (sae.cfg.layer, sae.cfg.reader_model, sae.cfg.k) == (6, "EleutherAI/pythia-70m", 5)
    theirs = coder.encode(x)
    dense = torch.zeros(x.shape[0], D_SAE).scatter(-1, theirs.top_indices, theirs.top_acts)
    torch.testing.assert_close(sae.encode(x), dense.detach())
    direct = torch.relu((x - coder.b_dec) @ coder.encoder.weight.T + coder.encoder.bias)
    values, indices = direct.topk(5)
    torch.testing.assert_close(sae.encode(x), torch.zeros_like(direct).scatter(-1, indices, values).detach())
    with pytest.raises(SaeembedError, match=r"sparsify run with several SAEs: pass one hookpoint folder \(layers.6\)"):
        load_sae(run)


def test_goodfire_pth(tmp_path, weights, x):
    state = OrderedDict(
        {
            "encoder_linear.weight": weights["W_enc"].T.contiguous(),
            "encoder_linear.bias": weights["b_enc"],
            "decoder_linear.weight": weights["W_dec"].T.contiguous(),
            "decoder_linear.bias": weights["b_dec"],
        }
    )
    path = tmp_path / "Llama-3.1-8B-Instruct-SAE-l19.pth"
    torch.save(state, path)
    sae = load_sae(path)
    assert (sae.cfg.reader_model, sae.cfg.layer, sae.cfg.arch) == (
        "meta-llama/Llama-3.1-8B-Instruct",
        19,
        "relu",
    )
    torch.testing.assert_close(sae.encode(x), torch.relu(x @ weights["W_enc"] + weights["b_enc"]))
    torch.testing.assert_close(sae.decode(sae.encode(x)), sae.encode(x) @ weights["W_dec"] + weights["b_dec"])
    del state["decoder_linear.bias"]
    torch.save(state, path)
    with pytest.raises(SaeembedError, match=r"not a Goodfire SAE: tensor 'decoder_linear.bias' is missing"):
        load_sae(path)


def test_gemma_scope_npz(tmp_path, weights, x):
    folder = tmp_path / "layer_12" / "width_16k" / "average_l0_50"
    folder.mkdir(parents=True)
    np.savez(folder / "params.npz", **{k: v.numpy() for k, v in weights.items()})
    sae = load_sae(folder)
    assert (sae.cfg.arch, sae.cfg.layer, sae.cfg.apply_b_dec_to_input) == ("jumprelu", 12, False)
    h = x @ weights["W_enc"] + weights["b_enc"]
    torch.testing.assert_close(sae.encode(x), torch.relu(h) * (h > weights["threshold"]))


def test_bad_checkpoints_get_one_line_errors(tmp_path, weights):
    with pytest.raises(SaeembedError, match="SAE not found"):
        load_sae(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(SaeembedError, match="unknown SAE file type"):
        load_sae(tmp_path / "notes.txt")
    with pytest.raises(SaeembedError, match="no SAE checkpoint recognised"):
        load_sae(tmp_path)
    save_file({k: v for k, v in weights.items() if k not in ("threshold", "b_enc")}, tmp_path / "sae.safetensors")
    (tmp_path / "cfg.json").write_text(json.dumps({"format": "saeembed", "arch": "relu", "d_in": D_IN, "d_sae": D_SAE}))
    with pytest.raises(SaeembedError, match="missing tensor 'b_enc'"):
        load_sae(tmp_path)
    save_file({**weights, "b_enc": torch.zeros(D_SAE + 1)}, tmp_path / "sae.safetensors")
    with pytest.raises(SaeembedError, match=r"tensor 'b_enc' has shape \(41,\), expected \(40,\)"):
        load_sae(tmp_path)
    with pytest.raises(SaeembedError, match="needs 0 < k <= d_sae"):
        SaeConfig(arch="topk", d_in=4, d_sae=8, k=9)


def test_check_compatible_names_each_mismatch(weights):
    cfg = SaeConfig(arch="relu", d_in=D_IN, d_sae=D_SAE, reader_model="HuggingFaceTB/SmolLM2-135M-Instruct", layer=15)
    sae = SparseAutoencoder.from_tensors(cfg, weights)
    check_compatible(sae, reader_model="smollm2-135m-instruct", hidden_size=D_IN, layer=15)
    with pytest.raises(SaeembedError, match="input width 12 does not match the reader's hidden size 576"):
        check_compatible(sae, reader_model="HuggingFaceTB/SmolLM2-135M-Instruct", hidden_size=576, layer=15)
    with pytest.raises(SaeembedError, match="trained on HuggingFaceTB/SmolLM2-135M-Instruct, not on the reader"):
        check_compatible(sae, reader_model="gpt2", hidden_size=D_IN, layer=15)
    with pytest.raises(SaeembedError, match="SAE reads layer 15, but layer 3 was asked for"):
        check_compatible(sae, reader_model="HuggingFaceTB/SmolLM2-135M-Instruct", hidden_size=D_IN, layer=3)
