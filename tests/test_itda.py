"""ITDA dictionaries: matching pursuit against a direct computation, atoms that are real training
activations, a dictionary that explains more as it grows, the own format's round trip, and a corpus
embedded through the real pipeline with a dictionary built from the real reader's activations."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from saeembed.errors import SaeembedError
from saeembed.jobs import embed, ingest
from saeembed.model.itda import ItdaOptions, build_itda, jaccard, matching_pursuit, reconstruct
from saeembed.model.pooling import EmbedOptions
from saeembed.model.sae import SaeConfig, SparseAutoencoder
from saeembed.model.train import collect_activations, sae_config_for, train_itda
from saeembed.storage.store import Store
from tests.support import TEXTS


def unit_rows(m: torch.Tensor) -> torch.Tensor:
    return m / m.norm(dim=1, keepdim=True)


def test_matching_pursuit_follows_its_definition_step_by_step():
    generator = torch.Generator().manual_seed(0)
    atoms = unit_rows(torch.randn(12, 5, generator=generator))
    x = torch.randn(7, 5, generator=generator)
    codes = matching_pursuit(x, atoms, atoms @ atoms.T, k=3)
    expected = torch.zeros(7, 12)
    for i in range(7):  # the textbook loop: largest positive product with the residual, subtracted
        residual = x[i].clone()
        for _ in range(3):
            products = atoms @ residual
            j = int(products.argmax())
            c = max(float(products[j]), 0.0)
            expected[i, j] += c
            residual -= c * atoms[j]
    got = torch.zeros(7, 12)
    got[codes.row, codes.atom] = codes.value
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (codes.value > 0).all()
    torch.testing.assert_close(reconstruct(codes, atoms, 7), expected @ atoms, atol=1e-5, rtol=1e-5)


def test_matching_pursuit_recovers_a_non_negative_mix_of_orthogonal_atoms():
    atoms = torch.eye(6)[:4]
    x = torch.tensor([[2.0, 0.0, 0.5, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 3.0, 0.0, 0.0]])
    codes = matching_pursuit(x, atoms, atoms @ atoms.T, k=4)
    got = torch.zeros(2, 4)
    got[codes.row, codes.atom] = codes.value
    # negative directions are never used: the −1 on atom 1 stays unexplained
    torch.testing.assert_close(got, torch.tensor([[2.0, 0.0, 0.5, 0.0], [0.0, 0.0, 0.0, 3.0]]))


@pytest.fixture(scope="module")
def activations():
    """Clustered synthetic activations: 40 directions, each token a noisy positive multiple of one."""
    generator = torch.Generator().manual_seed(1)
    centres = unit_rows(torch.randn(40, 32, generator=generator)) * 5
    which = torch.randint(0, 40, (6000,), generator=generator)
    scale = torch.rand(6000, 1, generator=generator) + 0.5
    return centres[which] * scale + 0.05 * torch.randn(6000, 32, generator=generator) + 3.0


def test_atoms_are_normalised_training_activations_and_more_atoms_explain_more(activations):
    small, _ = train_itda(activations[:5000], activations[5000:], ItdaOptions(atoms=10, k=2, batch_size=500))
    large, report = train_itda(activations[:5000], activations[5000:], ItdaOptions(atoms=80, k=2, batch_size=500))
    # Once every activation is explained within min_error no atom is added: about one per cluster.
    assert 40 <= large.cfg.d_sae < 80 and large.cfg.arch == "itda" and report.mean_l0 <= 2
    assert small.cfg.d_sae == 10
    sources = torch.tensor(large.cfg.meta["atom_sources"])
    assert sources.unique().numel() == large.cfg.d_sae
    centred = activations[:5000][sources] - large.b_dec
    torch.testing.assert_close(large.W_dec, unit_rows(centred), atol=1e-5, rtol=1e-5)
    heldout = activations[5000:]

    def error(sae: SparseAutoencoder) -> float:
        return float((sae.decode(sae.encode(heldout)) - heldout).pow(2).sum())

    assert error(large) < error(small)
    assert report.fvu < 0.2  # 40 clusters, 80 atoms, 2 steps: most of the variance explained


def test_dictionaries_from_the_same_activations_share_atoms_by_seed(activations):
    one = build_itda(activations, ItdaOptions(atoms=60, k=2, batch_size=600, seed=0))
    same = build_itda(activations, ItdaOptions(atoms=60, k=2, batch_size=600, seed=0))
    other = build_itda(activations, ItdaOptions(atoms=60, k=2, batch_size=600, seed=1))
    assert jaccard(one.sources, same.sources) == 1.0
    assert 0 <= jaccard(one.sources, other.sources) < 1.0


def test_bad_itda_options_are_refused(activations):
    with pytest.raises(SaeembedError, match="only 100 activations for 200 atoms"):
        build_itda(activations[:100], ItdaOptions(atoms=200))
    with pytest.raises(SaeembedError, match="k > 0 matching-pursuit steps"):
        SaeConfig(arch="itda", d_in=4, d_sae=8)


def test_a_real_itda_dictionary_round_trips_and_embeds_a_corpus(tmp_path, reader):
    acts = collect_activations(reader, TEXTS * 20, max_tokens=32)
    sae, report = train_itda(acts[:-40], acts[-40:], ItdaOptions(atoms=64, k=4, batch_size=256))
    sae.cfg = sae_config_for(reader, sae, report)
    sae.save(tmp_path / "itda")
    loaded = SparseAutoencoder.load(tmp_path / "itda")
    assert loaded.cfg.arch == "itda" and loaded.cfg.k == 4 and loaded.cfg.layer == reader.layer
    sparse = loaded.encode_sparse(acts[-40:])
    dense = loaded.encode(acts[-40:])
    torch.testing.assert_close(dense[sparse.row, sparse.latent], sparse.value)
    assert int((dense > 0).sum()) == sparse.row.numel()
    torch.testing.assert_close(dense, sae.encode(acts[-40:]))

    source = tmp_path / "docs.parquet"
    pl.DataFrame({"id": [f"n{i}" for i in range(len(TEXTS))], "text": TEXTS}).write_parquet(source)
    with Store.open(tmp_path / "itda.duckdb") as store:
        ingest(store, source, corpus="news")
        summary = embed(store, "news", sae=str(tmp_path / "itda"), device="cpu", options=EmbedOptions(max_tokens=32))
        rows = store.query("SELECT doc_id, feature_id, max_act FROM doc_features ORDER BY doc_id, feature_id")
        sizes = store.query("SELECT doc_id, n_tokens FROM embedded_documents ORDER BY doc_id")
    assert summary.documents == len(TEXTS)
    assert rows["feature_id"].max() < 64 and (rows["max_act"] > 0).all()
    # each token uses at most k atoms, so a document has at most k × tokens concepts
    per_doc = rows.group_by("doc_id").len().join(sizes, on="doc_id")
    assert (per_doc["len"] <= 4 * per_doc["n_tokens"]).all()
