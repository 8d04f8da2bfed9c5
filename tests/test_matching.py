"""Concept matching between two embedding runs: correlation of activations (sparse, on real stores) and
decoder cosine, against known answers — a run whose SAE is a permuted copy of the other's matches each
concept with its image under the permutation."""

from __future__ import annotations

import json
import re

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from saeembed.analysis.matching import best_correlated, match_concepts, svcca
from saeembed.cli import app, main
from saeembed.concepts.labels import carry_labels
from saeembed.errors import SaeembedError
from saeembed.jobs import embed, ingest
from saeembed.model.itda import ItdaOptions, jaccard
from saeembed.model.pooling import EmbedOptions
from saeembed.model.sae import SparseAutoencoder
from saeembed.model.train import train_itda
from saeembed.storage.store import RunSettings, Store
from saeembed.storage.synthetic import SYNTHETIC_READER, synthetic_corpus, synthetic_sae, write_concept_lists
from tests.support import TEXTS, small_sae

runner = CliRunner()
D_SAE = 48


def random_concepts(rng: np.random.Generator, n_docs: int) -> list[dict[int, float]]:
    """Documents of 3–10 concepts each, activations 0.5–3."""
    return [
        {int(f): float(rng.uniform(0.5, 3)) for f in rng.choice(D_SAE, size=rng.integers(3, 11), replace=False)}
        for _ in range(n_docs)
    ]


def two_runs(path, concepts_a, concepts_b, *, same_documents: bool = True) -> Store:
    """A store with run 1 (SAE 'a') and run 2 (SAE 'b') of the given concept lists; with same_documents
    False, run 2 embeds another corpus."""
    store = Store.open(path)
    sae_a, sae_b = synthetic_sae(store, D_SAE, tag="a"), synthetic_sae(store, D_SAE, tag="b")
    texts = [f"document {i}" for i in range(len(concepts_a))]
    run_a, docs = synthetic_corpus(store, "c", texts, sae_id=sae_a)
    if same_documents:
        run_b = store.open_run(RunSettings(store.corpus_id("c"), sae_b, SYNTHETIC_READER, 3, 512, True, "float32"), {})
        docs_b = docs
    else:
        run_b, docs_b = synthetic_corpus(store, "other", texts, sae_id=sae_b)
    write_concept_lists(store, run_a, docs, concepts_a)
    write_concept_lists(store, run_b, docs_b, concepts_b)
    return store


def test_correlation_finds_the_permuted_concepts_and_svcca_beats_random_pairs(tmp_path):
    rng = np.random.default_rng(0)
    concepts_a = random_concepts(rng, 400)
    permutation = rng.permutation(D_SAE)
    # B: every concept of A under a new id, its activation scaled and slightly perturbed.
    concepts_b = [{int(permutation[f]): 2 * a + rng.normal(0, 0.05) for f, a in doc.items()} for doc in concepts_a]
    with two_runs(tmp_path / "m.duckdb", concepts_a, concepts_b) as store:
        result = match_concepts(store, 1, 2, top=D_SAE)
        stored = store.query("SELECT * FROM concept_matches WHERE analysis_id = $id", {"id": result.analysis_id})
        summary = store.query("SELECT * FROM concept_match_summary")
    assert stored.height == D_SAE
    matched = dict(zip(stored["feature_a"], stored["feature_b"], strict=True))
    assert matched == {f: int(permutation[f]) for f in range(D_SAE)}
    assert stored["score"].min() > 0.99
    assert stored["runner_up_score"].max() < 0.5
    assert (result.summary.n_docs, result.summary.n_concepts_a, result.summary.share_matched) == (400, D_SAE, 1.0)
    assert summary.row(0, named=True)["mean_best"] == pytest.approx(result.summary.mean_best)
    assert result.summary.svcca is None  # no file holds these SAEs' decoders
    assert result.matches.height == D_SAE and result.matches["score"].is_sorted(descending=True)
    with Store.open(tmp_path / "m.duckdb") as store, pytest.raises(SaeembedError, match="label corpus 'c' first"):
        carry_labels(store, "c", result.analysis_id)  # no labels to carry: one line, nothing written


def test_correlations_are_pearson_over_every_document_zeros_included(tmp_path):
    rng = np.random.default_rng(1)
    concepts_a, concepts_b = random_concepts(rng, 120), random_concepts(rng, 120)
    dense_a, dense_b = np.zeros((120, D_SAE)), np.zeros((120, D_SAE))
    for i, (doc_a, doc_b) in enumerate(zip(concepts_a, concepts_b, strict=True)):
        dense_a[i, list(doc_a)] = [np.float16(v) for v in doc_a.values()]  # stored in half precision
        dense_b[i, list(doc_b)] = [np.float16(v) for v in doc_b.values()]
    expected = np.corrcoef(dense_a.T, dense_b.T)[:D_SAE, D_SAE:]
    with two_runs(tmp_path / "m.duckdb", concepts_a, concepts_b) as store:
        result = match_concepts(store, 1, 2, top=D_SAE)
        stored = store.query("SELECT * FROM concept_matches ORDER BY feature_a")
    for row in stored.iter_rows(named=True):
        scores = expected[row["feature_a"]]
        assert row["feature_b"] == int(np.argmax(scores))
        assert row["score"] == pytest.approx(scores.max(), abs=1e-6)  # float32 products
        assert row["runner_up_score"] == pytest.approx(np.sort(scores)[-2], abs=1e-6)
    best = expected.max(axis=1)
    assert result.summary.share_matched == pytest.approx(np.mean(best >= 0.5))
    assert result.summary.mean_best == pytest.approx(best.mean(), abs=1e-6)


def test_sparse_and_dense_products_give_the_same_matches(monkeypatch):
    from scipy import sparse

    import saeembed.analysis.matching as matching

    acts_a = sparse.random(300, 40, density=0.2, random_state=3, format="csr") * 3
    acts_b = sparse.random(300, 50, density=0.2, random_state=4, format="csr") * 3
    monkeypatch.setattr(matching, "SPARSE_COST", 0)  # never dense
    as_sparse = best_correlated(acts_a, acts_b)
    monkeypatch.setattr(matching, "SPARSE_COST", 10**9)  # always dense
    monkeypatch.setattr(matching, "BLOCK_ENTRIES", 7 * 50)  # blocks of 7 concepts, chunks of few documents
    as_dense = best_correlated(acts_a, acts_b)
    np.testing.assert_array_equal(as_sparse.feature_a, as_dense.feature_a)
    np.testing.assert_array_equal(as_sparse.best, as_dense.best)
    np.testing.assert_allclose(as_sparse.score, as_dense.score, atol=1e-5)
    np.testing.assert_array_equal(as_sparse.runner_up, as_dense.runner_up)


def test_svcca_is_one_for_a_linear_map_and_low_for_shuffled_samples():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(500, 6))
    y = x @ rng.normal(size=(6, 9))  # another width, as two readers' decoders have
    assert svcca(x, y) == pytest.approx(1.0)
    assert svcca(x, y[rng.permutation(500)]) < 0.15
    assert svcca(x, rng.normal(size=(500, 6))) < 0.15


def test_runs_without_shared_documents_fail_and_write_nothing(tmp_path):
    rng = np.random.default_rng(6)
    concepts = random_concepts(rng, 20)
    with two_runs(tmp_path / "m.duckdb", concepts, concepts, same_documents=False) as store:
        with pytest.raises(SaeembedError, match="share 0 embedded documents"):
            match_concepts(store, 1, 2)
        with pytest.raises(SaeembedError, match="run 9 does not exist"):
            match_concepts(store, 1, 9)
        with pytest.raises(SaeembedError, match="the SAE's weights"):
            match_concepts(store, 1, 2, method="decoder")
        assert store.query("SELECT count(*) AS n FROM analyses")["n"][0] == 0


@pytest.fixture(scope="module")
def permuted_runs(tmp_path_factory):
    """The test corpus embedded by the real reader twice: with a small SAE (run 1) and with a copy whose
    latents are permuted (run 2); returns the database and the permutation."""
    folder = tmp_path_factory.mktemp("match")
    sae = SparseAutoencoder.load(small_sae(folder / "sae"))
    permutation = torch.randperm(sae.cfg.d_sae, generator=torch.Generator().manual_seed(7))
    permuted = SparseAutoencoder.from_tensors(
        sae.cfg,
        {
            "W_enc": sae.W_enc.detach()[:, permutation],
            "b_enc": sae.b_enc.detach()[permutation],
            "W_dec": sae.W_dec.detach()[permutation],
            "b_dec": sae.b_dec.detach(),
        },
    )
    permuted.save(folder / "permuted")
    source = folder / "docs.parquet"
    pl.DataFrame({"id": [f"n{i}" for i in range(len(TEXTS))], "text": TEXTS}).write_parquet(source)
    db = folder / "match.duckdb"
    with Store.open(db) as store:
        ingest(store, source, corpus="news")
        for path in (folder / "sae", folder / "permuted"):
            embed(store, "news", sae=str(path), device="cpu", options=EmbedOptions(max_tokens=32))
    # new id of latent i: permuted latent j is the original latent permutation[j]
    return db, {int(old): new for new, old in enumerate(permutation.tolist())}


@pytest.mark.parametrize("method", ["correlation", "decoder"])
def test_the_command_matches_real_runs_of_a_permuted_sae(permuted_runs, method, prefect_harness):
    db, new_id = permuted_runs
    args = ["concepts", "match", "1", "2", "--method", method, "--top", "1000", "--db", str(db), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    with Store.open(db, read_only=True) as store:
        fired = set(store.query("SELECT DISTINCT feature_id FROM doc_features WHERE run_id = 1")["feature_id"])
        stored = store.query("SELECT * FROM concept_matches WHERE analysis_id = $id", {"id": payload["analysis_id"]})
    matched = dict(zip(stored["feature_a"], stored["feature_b"], strict=True))
    if method == "decoder":
        assert matched == new_id and stored["score"].min() == pytest.approx(1.0)
    else:
        # The permuted run is the same up to float rounding, which can swap latents tied at the k-th place
        # of a token: each concept's own image correlates ≈ 1, and no match scores below it.
        assert 0 < len(matched) <= len(fired)
        with Store.open(db, read_only=True) as store:
            rows = store.query("SELECT run_id, doc_id, feature_id, max_act FROM doc_features")
        dense = np.zeros((2, 8, 256))
        dense[rows["run_id"] - 1, rows["doc_id"] - 1, rows["feature_id"]] = rows["max_act"]
        with np.errstate(invalid="ignore", divide="ignore"):  # an image that never fires: NaN, counted as -1
            own = [np.corrcoef(dense[0][:, a], dense[1][:, new_id[a]])[0, 1] for a in stored["feature_a"]]
        own = np.nan_to_num(np.array(own), nan=-1.0)
        assert np.all(stored["score"].to_numpy() >= own - 1e-6)
        assert np.mean(own > 0.99) > 0.9
        assert np.mean(stored["score"].to_numpy() - own < 1e-6) > 0.9  # the image itself, or a tie with it
    assert payload["summary"]["share_matched"] > 0.9
    assert len(payload["matches"]) == min(1000, stored.height)


def test_the_match_page_shows_each_pair_side_by_side_with_its_peak_tokens(permuted_runs, prefect_harness, tmp_path):
    """A permuted SAE fires the same way: each matched pair's strongest document, and the token where each
    side peaks, are the same, so the page's two marked examples of a pair agree."""
    db, new_id = permuted_runs
    page = tmp_path / "pages" / "match.html"
    args = ["concepts", "match", "1", "2", "--method", "decoder", "--report", str(page), "--db", str(db), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["report"] == str(page)
    html = page.read_text(encoding="utf-8")
    assert "<th>share_matched</th><td>1.0</td>" in html and "<th>method</th><td>decoder</td>" in html
    rows = re.findall(
        r"<tr><td class='num concept' data-concept='\d+'>(\d+)</td><td>[^<]*<div class='ex'>(.*?)</div></td>"
        r"<td class='num'>([\d.]+)</td>"
        r"<td class='num'>(\d+)</td><td>[^<]*<div class='ex'>(.*?)</div></td>",
        html,
    )
    with Store.open(db, read_only=True) as store:
        fired = set(store.query("SELECT DISTINCT feature_id FROM doc_features WHERE run_id = 1")["feature_id"])
    assert len(rows) == 100  # MATCH_PAGE_PAIRS of the 256 latents
    for feature_a, example_a, score, feature_b, example_b in rows:
        assert new_id[int(feature_a)] == int(feature_b) and float(score) == pytest.approx(1.0, abs=1e-3)
        # The decoder matches latents that never fire on the corpus too: those say so instead.
        assert all(e.count("<mark>") == 1 or "fires in no document" in e for e in (example_a, example_b))
    # Float rounding can swap latents tied at the k-th place of a token, so a rare pair may differ.
    assert np.mean([a == b for _, a, _, _, b in rows]) > 0.9
    assert all(("<mark>" in example) == (int(feature) in fired) for feature, example, *_ in rows)


def test_bad_match_input_is_one_line_and_exit_2(permuted_runs, capsys):
    db, _ = permuted_runs
    with Store.open(db, read_only=True) as store:
        before = store.query("SELECT count(*) AS n FROM analyses")["n"][0]
    cases = [
        (["1", "1"], "RUN_A and RUN_B are both run 1"),
        (["1", "2", "--method", "jaccard"], "unknown --method 'jaccard'"),
        (["1", "2", "--max-docs", "1"], "--max-docs must be at least 2"),
        (["1", "5"], "embedding run 5 does not exist"),
        (["1", "2", "--report", "pairs.txt"], "--report must end in .html"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as exited:
            main(["concepts", "match", *args, "--db", str(db)])
        err = capsys.readouterr().err
        assert exited.value.code == 2, err
        assert message in err and err.count("error:") == 1
    with Store.open(db, read_only=True) as store:
        assert store.query("SELECT count(*) AS n FROM analyses")["n"][0] == before


def test_two_itda_dictionaries_are_compared_by_the_jaccard_similarity_of_their_atoms(tmp_path):
    generator = torch.Generator().manual_seed(3)
    acts = torch.randn(3000, 16, generator=generator)
    store = Store.open(tmp_path / "itda.duckdb")
    sae_ids, sources = [], []
    builds = {"wide": ItdaOptions(atoms=48, k=2, batch_size=200), "narrow": ItdaOptions(atoms=24, k=2, batch_size=200)}
    for name, options in builds.items():
        sae, _ = train_itda(acts[:2800], acts[2800:], options)
        sae.save(tmp_path / name)
        sources.append(torch.tensor(sae.cfg.meta["atom_sources"]))
        config = {**sae.cfg.__dict__, "source_format": "saeembed"}
        fingerprint = name.ljust(40, "0")
        sae_ids.append(store.register_sae(name=name, fingerprint=fingerprint, path=str(tmp_path / name), config=config))
    texts = [f"document {i}" for i in range(30)]
    run_a, docs = synthetic_corpus(store, "c", texts, sae_id=sae_ids[0])
    run_b = store.open_run(RunSettings(store.corpus_id("c"), sae_ids[1], SYNTHETIC_READER, 3, 512, True, "float32"), {})
    rng = np.random.default_rng(4)
    write_concept_lists(store, run_a, docs, [{int(f): 1.0 for f in rng.choice(48, 3, replace=False)} for _ in texts])
    write_concept_lists(store, run_b, docs, [{int(f): 1.0 for f in rng.choice(24, 3, replace=False)} for _ in texts])
    with store:
        result = match_concepts(store, run_a, run_b)
        stored = store.query("SELECT itda_jaccard FROM concept_match_summary")
    # one order of the same activations: the narrow dictionary's atoms are among the wide one's first ones
    assert result.summary.itda_jaccard == pytest.approx(jaccard(*sources)) and result.summary.itda_jaccard > 0.3
    assert stored["itda_jaccard"][0] == pytest.approx(result.summary.itda_jaccard)


def test_labels_are_carried_across_a_matching(permuted_runs, prefect_harness, capsys):
    db, new_id = permuted_runs
    assert runner.invoke(app, ["label", "--corpus", "news", "--db", str(db)]).exit_code == 0  # labels run 2
    result = runner.invoke(app, ["concepts", "match", "2", "1", "--method", "decoder", "--db", str(db), "--json"])
    analysis_id = json.loads(result.stdout)["analysis_id"]
    args = ["label", "--corpus", "news", "--from-matches", str(analysis_id), "--db", str(db), "--json"]
    carried = runner.invoke(app, args)
    assert carried.exit_code == 0, carried.output
    summary = json.loads(carried.stdout)
    with Store.open(db, read_only=True) as store:
        made = store.query("SELECT feature_id, label FROM features WHERE sae_id = 2 AND method = 'tokens'")
        rows = store.query("SELECT feature_id, label, model, run_id, details FROM features WHERE method = 'matched'")
    assert summary["labelled"] == rows.height == made.height > 0
    source = dict(zip(made["feature_id"], made["label"], strict=True))
    for feature, label, model, run_id, details in rows.iter_rows():
        origin = json.loads(details)
        assert (model, run_id, origin["from_feature"]) == (f"concept-match {analysis_id}", 1, new_id[feature])
        assert label == source[origin["from_feature"]] and origin["score"] == pytest.approx(1.0)
    again = json.loads(runner.invoke(app, args).stdout)
    assert (again["labelled"], again["skipped"]) == (0, summary["labelled"])

    for bad, message in [
        (["--from-matches", "999"], "analysis 999 does not exist"),
        (["--from-matches", str(analysis_id), "--method", "llm"], "--from-matches carries labels over"),
    ]:
        with pytest.raises(SystemExit) as exited:
            main(["label", "--corpus", "news", *bad, "--db", str(db)])
        assert exited.value.code == 2 and message in capsys.readouterr().err
