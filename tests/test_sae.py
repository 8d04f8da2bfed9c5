"""SAE architectures and checkpoint layouts: tiny checkpoints written in each published layout the way
that library writes them, loaded with `load_sae`, and their encodings checked against the layout's
formula computed here in numpy (float64), independently of saeembed.model.sae."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from saeembed.errors import SaeembedError
from saeembed.model.formats import check_compatible, load_sae
from saeembed.model.sae import SaeConfig, SparseAutoencoder, SparseCodes

D_IN, D_SAE = 12, 40


@pytest.fixture()
def weights() -> dict[str, torch.Tensor]:
    """Random SAE tensors in SAELens orientation (W_enc [d_in, d_sae], W_dec [d_sae, d_in])."""
    g = torch.Generator().manual_seed(0)
    return {
        "W_enc": torch.randn(D_IN, D_SAE, generator=g) * 0.5,
        "b_enc": torch.randn(D_SAE, generator=g) * 0.1,
        "W_dec": torch.randn(D_SAE, D_IN, generator=g) * 0.5,
        "b_dec": torch.randn(D_IN, generator=g) * 0.3,
        "threshold": torch.rand(D_SAE, generator=g) * 0.5,
    }


@pytest.fixture()
def x() -> torch.Tensor:
    return torch.randn(7, D_IN, generator=torch.Generator().manual_seed(1))


def without_threshold(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor for name, tensor in weights.items() if name != "threshold"}


def reference_codes(
    x: torch.Tensor,
    weights: dict[str, torch.Tensor],
    *,
    arch: str,
    k: int | None = None,
    subtract_b_dec: bool = True,
    normalize: str = "none",
    rescale: bool = False,
) -> torch.Tensor:
    """The SAELens encode formula in numpy, float64."""
    a = x.double().numpy()
    w = {name: tensor.double().numpy() for name, tensor in weights.items()}
    if normalize == "constant_norm_rescale":
        a = a * np.sqrt(a.shape[-1]) / np.linalg.norm(a, axis=-1, keepdims=True)
    elif normalize == "layer_norm":
        centred = a - a.mean(-1, keepdims=True)
        a = centred / (centred.std(-1, ddof=1, keepdims=True) + 1e-5)
    h = (a - w["b_dec"] if subtract_b_dec else a) @ w["W_enc"] + w["b_enc"]
    if arch == "relu":
        codes = np.maximum(h, 0)
    elif arch == "jumprelu":
        codes = np.where(h > w["threshold"], np.maximum(h, 0), 0)
    else:
        if rescale:
            h = h * np.linalg.norm(w["W_dec"], axis=-1)
        kept = np.argsort(-h, axis=-1)[..., :k]
        codes = np.zeros_like(h)
        np.put_along_axis(codes, kept, np.maximum(np.take_along_axis(h, kept, -1), 0), -1)
    return torch.from_numpy(codes).float()


# --- the module and the own format --------------------------------------------------------------


def test_own_format_round_trip_keeps_config_and_encodings(tmp_path, weights, x):
    cfg = SaeConfig(arch="topk", d_in=D_IN, d_sae=D_SAE, k=5, reader_model="org/model", layer=3, meta={"a": [1]})
    sae = SparseAutoencoder.from_tensors(cfg, without_threshold(weights))
    sae.save(tmp_path / "sae")
    config = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert (config["format"], config["format_version"], config["k"]) == ("saeembed", 2, 5)
    loaded = load_sae(tmp_path / "sae")
    assert loaded.cfg == cfg
    assert torch.equal(loaded.encode(x), sae.encode(x))
    torch.testing.assert_close(loaded.encode(x), reference_codes(x, weights, arch="topk", k=5))


def test_own_format_keeps_float16_and_loads_with_another_dtype(tmp_path, weights, x):
    cfg = SaeConfig(arch="jumprelu", d_in=D_IN, d_sae=D_SAE, apply_b_dec_to_input=False)
    sae = SparseAutoencoder.from_tensors(cfg, weights).half()
    sae.save(tmp_path / "sae")
    with safe_open(tmp_path / "sae" / "sae.safetensors", framework="pt") as stored:
        assert sorted(stored.keys()) == ["W_dec", "W_enc", "b_dec", "b_enc", "threshold"]
        assert {stored.get_tensor(name).dtype for name in stored.keys()} == {torch.float16}  # noqa: SIM118
    loaded = SparseAutoencoder.load(tmp_path / "sae")
    assert loaded.dtype == torch.float16
    assert torch.equal(loaded.encode(x), sae.encode(x))
    as_float = load_sae(tmp_path / "sae", dtype=torch.float32)
    assert as_float.dtype == torch.float32
    half_weights = {name: tensor.half() for name, tensor in weights.items()}
    expected = reference_codes(x, half_weights, arch="jumprelu", subtract_b_dec=False)
    torch.testing.assert_close(as_float.encode(x), expected)


def test_topk_keeps_exactly_k_latents_per_row_over_leading_dims(weights):
    cfg = SaeConfig(arch="topk", d_in=D_IN, d_sae=D_SAE, k=4)
    sae = SparseAutoencoder.from_tensors(cfg, without_threshold(weights))
    batch = torch.randn(2, 3, D_IN, generator=torch.Generator().manual_seed(2))
    shifted = dict(without_threshold(weights), b_enc=weights["b_enc"] + 100.0)  # every kept value positive
    codes = SparseAutoencoder.from_tensors(cfg, shifted).encode(batch)
    assert codes.shape == (2, 3, D_SAE)
    assert ((codes > 0).sum(-1) == 4).all()
    codes = sae.encode(batch)
    assert ((codes > 0).sum(-1) <= 4).all() and (codes >= 0).all()
    torch.testing.assert_close(codes, reference_codes(batch, weights, arch="topk", k=4))


def test_jumprelu_keeps_only_values_above_the_threshold():
    cfg = SaeConfig(arch="jumprelu", d_in=3, d_sae=3, apply_b_dec_to_input=False)
    tensors = {
        "W_enc": torch.eye(3),
        "b_enc": torch.zeros(3),
        "W_dec": torch.zeros(3, 3),
        "b_dec": torch.zeros(3),
        "threshold": torch.tensor([0.5, 0.5, -1.0]),
    }
    sae = SparseAutoencoder.from_tensors(cfg, tensors)
    codes = sae.encode(torch.tensor([[0.4, 0.5, -0.5], [0.6, 2.0, 0.25]]))
    # 0.4 is below and 0.5 equal to the threshold; -0.5 is above its threshold but relu zeroes it.
    assert codes.tolist() == [[0.0, 0.0, 0.0], [pytest.approx(0.6), 2.0, 0.25]]


@pytest.mark.parametrize(
    "fields",
    [
        {"arch": "topk", "k": 4},
        {"arch": "topk", "k": 4, "rescale_acts_by_decoder_norm": True},
        {"arch": "relu"},
        {"arch": "jumprelu"},
    ],
)
def test_encode_sparse_is_the_non_zeros_of_encode(weights, x, fields):
    tensors = weights if fields["arch"] == "jumprelu" else without_threshold(weights)
    sae = SparseAutoencoder.from_tensors(SaeConfig(d_in=D_IN, d_sae=D_SAE, **fields), tensors)
    dense = sae.encode(x)
    sparse = sae.encode_sparse(x)
    rebuilt = torch.zeros_like(dense).index_put_((sparse.row, sparse.latent), sparse.value)
    torch.testing.assert_close(rebuilt, dense)
    assert bool((sparse.value > 0).all())
    expected = SparseCodes.from_dense(dense)
    assert sorted(zip(sparse.row.tolist(), sparse.latent.tolist(), strict=True)) == sorted(
        zip(expected.row.tolist(), expected.latent.tolist(), strict=True)
    )


def test_decode_and_the_decoder_norm_rescaling(weights, x):
    cfg = SaeConfig(arch="relu", d_in=D_IN, d_sae=D_SAE)
    sae = SparseAutoencoder.from_tensors(cfg, without_threshold(weights))
    codes = sae.encode(x)
    torch.testing.assert_close(sae.decode(codes), codes @ weights["W_dec"] + weights["b_dec"])
    # SAELens TopKSAE with rescale_acts_by_decoder_norm: encode scales by ‖W_dec‖ per latent, decode divides.
    rescaled = SparseAutoencoder.from_tensors(
        SaeConfig(arch="topk", d_in=D_IN, d_sae=D_SAE, k=6, rescale_acts_by_decoder_norm=True),
        without_threshold(weights),
    )
    codes = rescaled.encode(x)
    torch.testing.assert_close(codes, reference_codes(x, weights, arch="topk", k=6, rescale=True))
    norms = weights["W_dec"].norm(dim=-1)
    torch.testing.assert_close(rescaled.decode(codes), (codes / norms) @ weights["W_dec"] + weights["b_dec"])


@pytest.mark.parametrize("normalize", ["constant_norm_rescale", "layer_norm"])
def test_input_normalisations(weights, x, normalize):
    cfg = SaeConfig(arch="relu", d_in=D_IN, d_sae=D_SAE, normalize_activations=normalize)
    sae = SparseAutoencoder.from_tensors(cfg, without_threshold(weights))
    torch.testing.assert_close(sae.encode(x * 7.0), reference_codes(x * 7.0, weights, arch="relu", normalize=normalize))


def test_encode_casts_the_input_and_refuses_the_wrong_width(weights, x):
    sae = SparseAutoencoder.from_tensors(SaeConfig(arch="relu", d_in=D_IN, d_sae=D_SAE), without_threshold(weights))
    assert sae.encode(x.double()).dtype == torch.float32
    assert not sae.encode(x).requires_grad
    with pytest.raises(SaeembedError, match="activations have width 5, but the SAE reads width 12"):
        sae.encode(torch.zeros(2, 5))


# --- SAELens --------------------------------------------------------------------------------------


def write_saelens(folder: Path, cfg: dict, tensors: dict[str, torch.Tensor]) -> Path:
    """SAELens' save layout: cfg.json (SAEConfig.to_dict) + sae_weights.safetensors."""
    folder.mkdir(parents=True)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file(tensors, folder / "sae_weights.safetensors")
    return folder


def saelens_v6_cfg(architecture: str, **extra) -> dict:
    return {
        "architecture": architecture,
        "d_in": D_IN,
        "d_sae": D_SAE,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "sae_lens_version": "6.5.0",
            "model_name": "gpt2-small",
            "hook_name": "blocks.8.hook_resid_post",
            "hook_head_index": None,
            "prepend_bos": True,
            "context_size": 128,
            "model_from_pretrained_kwargs": {"center_writing_weights": False},
        },
        **extra,
    }


@pytest.mark.parametrize(
    ("architecture", "extra", "expected_arch"),
    [
        ("standard", {}, "relu"),
        ("topk", {"k": 6, "rescale_acts_by_decoder_norm": False}, "topk"),
        ("topk", {"k": 6, "rescale_acts_by_decoder_norm": True}, "topk"),
        ("jumprelu", {}, "jumprelu"),
    ],
)
def test_saelens_v6(tmp_path, weights, x, architecture, extra, expected_arch):
    tensors = weights if architecture == "jumprelu" else without_threshold(weights)
    folder = write_saelens(tmp_path / "sae", saelens_v6_cfg(architecture, **extra), tensors)
    sae = load_sae(folder)
    assert (sae.cfg.arch, sae.cfg.source_format, sae.cfg.layer, sae.cfg.reader_model) == (
        expected_arch,
        "saelens",
        8,
        "gpt2-small",
    )
    assert sae.cfg.meta["model_from_pretrained_kwargs"] == {"center_writing_weights": False}
    expected = reference_codes(
        x, weights, arch=expected_arch, k=extra.get("k"), rescale=extra.get("rescale_acts_by_decoder_norm", False)
    )
    torch.testing.assert_close(sae.encode(x), expected)


def test_saelens_v6_layer_norm_and_expected_average(tmp_path, weights, x):
    folder = write_saelens(
        tmp_path / "ln", saelens_v6_cfg("standard", normalize_activations="layer_norm"), without_threshold(weights)
    )
    expected = reference_codes(x, weights, arch="relu", normalize="layer_norm")
    torch.testing.assert_close(load_sae(folder).encode(x), expected)
    # expected_average_only_in does nothing at encode time (its scale is folded when SAELens saves).
    folder = write_saelens(
        tmp_path / "avg",
        saelens_v6_cfg("standard", normalize_activations="expected_average_only_in"),
        without_threshold(weights),
    )
    sae = load_sae(folder)
    assert sae.cfg.normalize_activations == "none"
    assert sae.cfg.meta["normalize_activations"] == "expected_average_only_in"
    torch.testing.assert_close(sae.encode(x), reference_codes(x, weights, arch="relu"))


def test_saelens_pre_v6_config(tmp_path, weights, x):
    cfg = {
        "d_in": D_IN,
        "d_sae": D_SAE,
        "dtype": "torch.float64",
        "model_name": "gpt2-small",
        "hook_point": "blocks.5.hook_resid_pre",
        "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": 3},
        "normalize_activations": True,
        "apply_b_dec_to_input": False,
    }
    tensors = dict(without_threshold(weights), scaling_factor=torch.ones(D_SAE))  # all ones: dropped
    sae = load_sae(write_saelens(tmp_path / "sae", cfg, tensors))
    # resid_pre of block 5 is the output of decoder layer 4.
    assert (sae.cfg.arch, sae.cfg.k, sae.cfg.layer, sae.cfg.normalize_activations) == ("topk", 3, 4, "none")
    assert sae.dtype == torch.float64  # SAELens casts every tensor to the cfg dtype
    expected = reference_codes(x, weights, arch="topk", k=3, subtract_b_dec=False)
    torch.testing.assert_close(sae.encode(x).float(), expected)


@pytest.mark.parametrize(
    ("change", "tensors_change", "message"),
    [
        ({"architecture": "gated"}, {}, r"SAELens architecture 'gated' is not supported \(standard, topk, jumprelu\)"),
        (
            {"metadata": {"hook_name": "blocks.2.attn.hook_z"}},
            {},
            r"unsupported SAE hook 'blocks.2.attn.hook_z': only residual-stream SAEs",
        ),
        (
            {"metadata": {"hook_name": "blocks.0.hook_resid_pre"}},
            {},
            "hook 'blocks.0.hook_resid_pre' reads the token embeddings, not a decoder layer's output",
        ),
        ({"normalize_activations": "hook_norm"}, {}, "unsupported activation normalisation 'hook_norm'"),
        ({}, {"scaling_factor": torch.full((D_SAE,), 2.0)}, "finetuning scaling factors .* are not supported"),
        ({"d_sae": D_SAE + 1}, {}, r"tensor 'W_enc' has shape \(12, 40\), expected \(12, 41\)"),
        ({"dtype": "int8"}, {}, "unknown SAE dtype 'int8'"),
        ({"architecture": "topk"}, {}, "a topk SAE needs 0 < k <= d_sae"),
    ],
)
def test_saelens_refusals(tmp_path, weights, change, tensors_change, message):
    folder = write_saelens(
        tmp_path / "sae", {**saelens_v6_cfg("standard"), **change}, {**without_threshold(weights), **tensors_change}
    )
    with pytest.raises(SaeembedError, match=f"cannot load SAE {re.escape(str(folder))}: {message}"):
        load_sae(folder)


# --- EleutherAI sparsify --------------------------------------------------------------------------


def sparsify_coder(**cfg_fields):
    from sparsify import SparseCoder, SparseCoderConfig

    with torch.random.fork_rng():
        torch.manual_seed(0)
        coder = SparseCoder(D_IN, SparseCoderConfig(**{"num_latents": D_SAE, "k": 5, **cfg_fields}))
        with torch.no_grad():  # both start at zero; make them matter
            coder.encoder.bias.normal_()
            coder.b_dec.normal_()
    return coder


def test_sparsify_layout_matches_sparsify_itself(tmp_path, x):
    coder = sparsify_coder()
    run = tmp_path / "run"
    coder.save_to_disk(run / "layers.6")  # sparsify's own writer: <run>/<hookpoint>/cfg.json + sae.safetensors
    (run / "config.json").write_text(json.dumps({"model": "EleutherAI/pythia-70m", "layers": [6]}))
    torch.save({"global_step": 1}, run / "state.pt")
    sae = load_sae(run / "layers.6")
    assert (sae.cfg.arch, sae.cfg.k, sae.cfg.layer, sae.cfg.reader_model, sae.cfg.source_format) == (
        "topk",
        5,
        6,
        "EleutherAI/pythia-70m",
        "sparsify",
    )
    with torch.no_grad():
        theirs = coder.encode(x)
        dense = torch.zeros(x.shape[0], D_SAE).scatter(-1, theirs.top_indices, theirs.top_acts)
        torch.testing.assert_close(sae.encode(x), dense)
        torch.testing.assert_close(sae.decode(sae.encode(x)), coder.decode(theirs.top_acts, theirs.top_indices))
    ours = {
        "W_enc": coder.encoder.weight.detach().T,
        "b_enc": coder.encoder.bias.detach(),
        "W_dec": coder.W_dec.detach(),
        "b_dec": coder.b_dec.detach(),
    }
    torch.testing.assert_close(sae.encode(x), reference_codes(x, ours, arch="topk", k=5))
    with pytest.raises(SaeembedError, match=r"is a folder of SAEs .*: pass one of its folders \(layers\.6\)"):
        load_sae(run)


def test_sparsify_keeps_the_file_dtype_and_reads_a_lone_hookpoint(tmp_path):
    coder = sparsify_coder().to(torch.bfloat16)
    coder.save_to_disk(tmp_path / "my_sae")
    sae = load_sae(tmp_path / "my_sae")
    assert sae.dtype == torch.bfloat16
    assert (sae.cfg.layer, sae.cfg.reader_model) == (None, None)
    assert load_sae(tmp_path / "my_sae", layer=2, reader_model="org/reader").cfg.layer == 2


@pytest.mark.parametrize(
    ("folder", "cfg_fields", "cfg_patch", "message"),
    [
        ("layers.1", {"activation": "groupmax"}, {}, "sparsify activation 'groupmax' is not supported"),
        ("layers.1", {"transcode": True}, {}, "transcoders and skip connections are not supported"),
        ("layers.1", {"skip_connection": True}, {}, "transcoders and skip connections are not supported"),
        ("layers.1", {}, {"signed": True}, "'signed' SAEs .* are not supported"),
        ("layers.1.mlp", {}, {}, "hookpoint 'layers.1.mlp' is a submodule"),
    ],
)
def test_sparsify_refusals(tmp_path, folder, cfg_fields, cfg_patch, message):
    sparsify_coder(**cfg_fields).save_to_disk(tmp_path / folder)
    cfg_file = tmp_path / folder / "cfg.json"
    cfg_file.write_text(json.dumps({**json.loads(cfg_file.read_text()), **cfg_patch}))
    with pytest.raises(SaeembedError, match=message):
        load_sae(tmp_path / folder)


# --- Goodfire -------------------------------------------------------------------------------------


class GoodfireSae(nn.Module):
    """The SAE class from Goodfire's README: two nn.Linear layers, relu encoder."""

    def __init__(self, d_in: int, d_hidden: int):
        super().__init__()
        self.encoder_linear = nn.Linear(d_in, d_hidden)
        self.decoder_linear = nn.Linear(d_hidden, d_in)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.encoder_linear(x))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decoder_linear(codes)


@pytest.fixture()
def goodfire() -> GoodfireSae:
    with torch.random.fork_rng():
        torch.manual_seed(3)
        return GoodfireSae(D_IN, D_SAE)


@pytest.mark.parametrize(
    ("name", "reader", "layer"),
    [
        ("Llama-3.1-8B-Instruct-SAE-l19.pth", "meta-llama/Llama-3.1-8B-Instruct", 19),
        ("Llama-3.3-70B-Instruct-SAE-l50.pt", "meta-llama/Llama-3.3-70B-Instruct", 50),
        ("Llama-3.3-70B-Instruct__model.layers.50.pt", "meta-llama/Llama-3.3-70B-Instruct", 50),
        ("my_sae.pth", None, None),
    ],
)
def test_goodfire_pth(tmp_path, goodfire, x, name, reader, layer):
    torch.save(goodfire.state_dict(), tmp_path / name)  # an OrderedDict of fp32 tensors, like the release
    sae = load_sae(tmp_path)  # a folder holding exactly one checkpoint
    assert (sae.cfg.arch, sae.cfg.apply_b_dec_to_input, sae.cfg.d_in, sae.cfg.d_sae) == ("relu", False, D_IN, D_SAE)
    assert (sae.cfg.reader_model, sae.cfg.layer) == (reader, layer)
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(x), goodfire.encode(x))
        torch.testing.assert_close(sae.decode(sae.encode(x)), goodfire.decode(goodfire.encode(x)))


def test_goodfire_refusals(tmp_path, goodfire):
    state = goodfire.state_dict()
    del state["decoder_linear.bias"]
    torch.save(state, tmp_path / "a.pth")
    with pytest.raises(SaeembedError, match=r"a.pth: not a Goodfire SAE: tensor\(s\) 'decoder_linear.bias' missing"):
        load_sae(tmp_path / "a.pth")
    torch.save(nn.Linear(2, 2), tmp_path / "module.pth")  # a pickled module, not a state dict
    with pytest.raises(SaeembedError, match=r"cannot read module\.pth: not a PyTorch checkpoint of plain tensors"):
        load_sae(tmp_path / "module.pth")
    (tmp_path / "module.pth").unlink()
    torch.save([torch.zeros(2)], tmp_path / "b.pth")
    with pytest.raises(SaeembedError, match="expected a state dict of tensors, found a list"):
        load_sae(tmp_path / "b.pth")
    (tmp_path / "c.pt").write_bytes(b"not a pickle")
    with pytest.raises(SaeembedError, match=r"cannot read c\.pt: not a PyTorch checkpoint of plain tensors"):
        load_sae(tmp_path / "c.pt")
    with pytest.raises(SaeembedError, match=r"holds several .pth/.pt files: pass one of them \(a.pth, b.pth, c.pt\)"):
        load_sae(tmp_path)


# --- Gemma Scope ----------------------------------------------------------------------------------


@pytest.fixture()
def gemma_arrays(weights) -> dict[str, np.ndarray]:
    """Gemma Scope's five arrays: W_enc [d, M], W_dec [M, d], b_enc, b_dec, threshold."""
    return {name: tensor.numpy() for name, tensor in weights.items()}


def gemma_reference(x: torch.Tensor, arrays: dict[str, np.ndarray]) -> torch.Tensor:
    h = x.double().numpy() @ arrays["W_enc"] + arrays["b_enc"]
    return torch.from_numpy((h > arrays["threshold"]) * np.maximum(h, 0)).float()


def test_gemma_scope_params_npz(tmp_path, gemma_arrays, x):
    folder = tmp_path / "gemma-scope-2b-pt-res" / "layer_12" / "width_16k" / "average_l0_50"
    folder.mkdir(parents=True)
    np.savez(folder / "params.npz", **gemma_arrays)
    sae = load_sae(folder)
    assert (sae.cfg.arch, sae.cfg.apply_b_dec_to_input, sae.cfg.layer, sae.cfg.reader_model, sae.dtype) == (
        "jumprelu",
        False,
        12,
        "google/gemma-2-2b",
        torch.float32,
    )
    torch.testing.assert_close(sae.encode(x), gemma_reference(x, gemma_arrays))


def test_gemma_scope_lowercase_names_and_unknown_place(tmp_path, gemma_arrays, x):
    renamed = {name.replace("W_", "w_"): array.astype(np.float64) for name, array in gemma_arrays.items()}
    np.savez(tmp_path / "params.npz", **renamed)
    sae = load_sae(tmp_path / "params.npz")
    assert (sae.cfg.layer, sae.cfg.reader_model, sae.dtype) == (None, None, torch.float32)
    torch.testing.assert_close(sae.encode(x), gemma_reference(x, gemma_arrays))


@pytest.mark.parametrize(
    ("place", "drop", "message"),
    [
        (
            "gemma-scope-9b-pt-mlp/layer_3/width_16k/l0_20",
            None,
            "'gemma-scope-9b-pt-mlp' SAEs do not read the residual",
        ),
        ("gemma-scope-2b-pt-res/embedding/width_4k/l0_21", None, "embedding SAEs read the token embeddings"),
        ("layer_3", "threshold", "missing tensor 'threshold' for a jumprelu SAE"),
        ("layer_4", "W_enc", "not a Gemma Scope SAE: no 2-D tensor 'W_enc'"),
    ],
)
def test_gemma_scope_refusals(tmp_path, gemma_arrays, place, drop, message):
    folder = tmp_path / place
    folder.mkdir(parents=True)
    np.savez(folder / "params.npz", **{name: array for name, array in gemma_arrays.items() if name != drop})
    with pytest.raises(SaeembedError, match=message):
        load_sae(folder)


# --- detection and bad inputs ---------------------------------------------------------------------


def write_own(folder: Path, tensors: dict[str, torch.Tensor], **config) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, folder / "sae.safetensors")
    base = {"format": "saeembed", "format_version": 1, "arch": "relu", "d_in": D_IN, "d_sae": D_SAE}
    (folder / "cfg.json").write_text(json.dumps({**base, **config}))
    return folder


def test_unrecognised_paths_name_the_problem(tmp_path):
    with pytest.raises(SaeembedError, match=f"SAE not found: {re.escape(str(tmp_path / 'missing'))}"):
        load_sae(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(SaeembedError, match=r"unknown SAE file type: .*notes\.txt"):
        load_sae(tmp_path / "notes.txt")
    with pytest.raises(SaeembedError, match=f"no SAE checkpoint recognised in {re.escape(str(tmp_path))}"):
        load_sae(tmp_path)
    (tmp_path / "cfg.json").write_text("{not json")
    with pytest.raises(
        SaeembedError,
        match=rf"cannot load SAE {re.escape(str(tmp_path))}: cannot read cfg\.json: Expecting property name",
    ):
        load_sae(tmp_path)
    (tmp_path / "cfg.json").write_text("{}")
    with pytest.raises(SaeembedError, match=r"has cfg\.json but no sae_weights\.safetensors or sae\.safetensors"):
        load_sae(tmp_path)


@pytest.mark.parametrize(
    ("tensor_change", "config_change", "message"),
    [
        ({"b_enc": None}, {}, "missing tensor 'b_enc' for a relu SAE"),
        ({"b_enc": torch.zeros(D_SAE + 1)}, {}, r"tensor 'b_enc' has shape \(41,\), expected \(40,\)"),
        ({"W_dec": torch.zeros(D_IN, D_SAE)}, {}, r"tensor 'W_dec' has shape \(12, 40\), expected \(40, 12\)"),
        ({"extra": torch.zeros(1)}, {}, "unexpected tensor\\(s\\) 'extra' for a relu SAE"),
        ({"b_dec": torch.zeros(D_IN, dtype=torch.int32)}, {}, "tensor 'b_dec' has dtype torch.int32"),
        ({}, {"format_version": 3}, "format_version 3 is not readable by this saeembed"),
        ({}, {"colour": "red"}, "cfg.json does not describe an SAE: .*'colour'"),
        ({}, {"arch": "gated"}, "unsupported SAE architecture 'gated'"),
    ],
)
def test_bad_own_checkpoints(tmp_path, weights, tensor_change, config_change, message):
    tensors = {**without_threshold(weights), **tensor_change}
    folder = write_own(tmp_path / "sae", {n: t for n, t in tensors.items() if t is not None}, **config_change)
    with pytest.raises(SaeembedError, match=f"cannot load SAE {re.escape(str(folder))}: {message}"):
        load_sae(folder)
    with pytest.raises(SaeembedError, match=message):
        SparseAutoencoder.load(folder)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"arch": "topk", "k": 41}, r"a topk SAE needs 0 < k <= d_sae \(40\), got k=41"),
        ({"arch": "topk"}, "a topk SAE needs 0 < k <= d_sae"),
        ({"arch": "relu", "k": 4}, "k is only used by topk and itda"),
        ({"arch": "relu", "rescale_acts_by_decoder_norm": True}, "rescale_acts_by_decoder_norm is a topk option"),
        ({"arch": "relu", "d_in": 0}, "SAE sizes must be positive integers"),
        ({"arch": "relu", "layer": -1}, "SAE layer must be a non-negative integer"),
        ({"arch": "relu", "hook": "mlp_out"}, "unsupported SAE hook 'mlp_out'"),
    ],
)
def test_config_validation(fields, message):
    with pytest.raises(SaeembedError, match=message):
        SaeConfig(**{"d_in": D_IN, "d_sae": D_SAE, **fields})


def test_overrides_replace_what_the_checkpoint_says(tmp_path, weights):
    folder = write_own(tmp_path / "sae", without_threshold(weights), layer=3, reader_model="org/a")
    sae = load_sae(folder, layer=5, reader_model="org/b")
    assert (sae.cfg.layer, sae.cfg.reader_model) == (5, "org/b")
    assert load_sae(folder).cfg.layer == 3
    with pytest.raises(SaeembedError, match="SAE layer must be a non-negative integer, got -2"):
        load_sae(folder, layer=-2)


def test_check_compatible_names_each_mismatch(weights):
    cfg = SaeConfig(arch="relu", d_in=D_IN, d_sae=D_SAE, reader_model="HuggingFaceTB/SmolLM2-135M-Instruct", layer=15)
    sae = SparseAutoencoder.from_tensors(cfg, without_threshold(weights))
    check_compatible(sae, reader_model="smollm2-135m-instruct", hidden_size=D_IN, layer=15)
    check_compatible(sae, reader_model="HuggingFaceTB/SmolLM2-135M-Instruct", hidden_size=D_IN, layer=None)
    with pytest.raises(SaeembedError, match=r"input width 12 does not match the reader's hidden size 576 \(gpt2\)"):
        check_compatible(sae, reader_model="gpt2", hidden_size=576, layer=15)
    with pytest.raises(SaeembedError, match=r"trained on HuggingFaceTB/SmolLM2-135M-Instruct, not on .* \(gpt2\)"):
        check_compatible(sae, reader_model="gpt2", hidden_size=D_IN, layer=15)
    with pytest.raises(SaeembedError, match="SAE reads layer 15, but layer 3 was asked for"):
        check_compatible(sae, reader_model="HuggingFaceTB/SmolLM2-135M-Instruct", hidden_size=D_IN, layer=3)
    unknown = SparseAutoencoder.from_tensors(SaeConfig(arch="relu", d_in=D_IN, d_sae=D_SAE), without_threshold(weights))
    check_compatible(unknown, reader_model="gpt2", hidden_size=D_IN, layer=7)
