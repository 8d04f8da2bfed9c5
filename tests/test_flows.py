"""The Prefect flows, run for real against a temporary Prefect API, writing a real DuckDB file."""

from __future__ import annotations

import json

import polars as pl
import pytest

from saeembed.storage.store import Store
from tests.support import TEST_LAYER, TEXTS, small_sae


@pytest.fixture()
def source(tmp_path):
    path = tmp_path / "docs.csv"
    pl.DataFrame(
        {"id": range(len(TEXTS)), "text": TEXTS, "topic": ["sports", "business"] * (len(TEXTS) // 2)}
    ).write_csv(path)
    return path


def test_ingest_and_embed_flows_fill_the_database(prefect_harness, tmp_path, source):
    from saeembed_flows.embed import embed_flow
    from saeembed_flows.ingest import ingest_flow

    db = str(tmp_path / "flows.duckdb")
    ingested = ingest_flow(path=str(source), corpus="news", db=db)
    again = ingest_flow(path=str(source), corpus="news", db=db)
    assert (ingested["inserted"], again["inserted"], again["already_present"]) == (len(TEXTS), 0, len(TEXTS))

    sae_dir = small_sae(tmp_path / "sae")
    summary = embed_flow(corpus="news", sae=str(sae_dir), db=db, device="cpu", max_tokens=32, shard_docs=3)
    assert summary["status"] == "complete"
    assert summary["documents"] == len(TEXTS)
    assert summary["layer"] == TEST_LAYER
    rerun = embed_flow(corpus="news", sae=str(sae_dir), db=db, device="cpu", max_tokens=32)
    assert rerun["documents"] == 0  # nothing left to embed

    with Store.open(db, read_only=True) as store:
        per_topic = store.query(
            "SELECT d.meta->>'topic' AS topic, count(DISTINCT f.doc_id) AS docs "
            "FROM doc_features f JOIN documents d USING (doc_id) GROUP BY topic ORDER BY topic"
        )
        per_doc = store.query(
            "SELECT e.doc_id, e.n_features, count(f.feature_id) AS rows FROM embedded_documents e "
            "LEFT JOIN doc_features f USING (run_id, doc_id) GROUP BY ALL"
        )
    assert per_topic.to_dicts() == [{"topic": "business", "docs": 4}, {"topic": "sports", "docs": 4}]
    # Each document's recorded count of concepts is its number of rows, and k = 8 latents fire on every
    # token, so even a one-token document has at least 8 concepts.
    assert per_doc.height == len(TEXTS) and (per_doc["n_features"] == per_doc["rows"]).all()
    assert per_doc["rows"].min() >= 8


@pytest.fixture()
def training_db(prefect_harness, tmp_path) -> str:
    """A database holding corpus 'train': 120 demo articles, ingested by the ingest flow."""
    from saeembed_flows.ingest import ingest_flow

    from saeembed.storage.corpora import demo_corpus

    db = str(tmp_path / "train.duckdb")
    source = tmp_path / "train.parquet"
    demo_corpus(n=120, seed=5).write_parquet(source)
    ingest_flow(path=str(source), corpus="train", db=db)
    return db


def test_train_sae_flow_writes_a_loadable_sae_with_its_report(training_db, tmp_path):
    from saeembed_flows.train_sae import train_sae_flow

    from saeembed.jobs import resolve_sae

    db = training_db
    out = tmp_path / "sae"
    report = train_sae_flow(
        corpus="train",
        layer=TEST_LAYER,
        out=str(out),
        latents=128,
        k=8,
        db=db,
        max_tokens=32,
        train_tokens=2048,
        heldout_docs=20,
        batch_size=256,
        epochs=2,
        device="cpu",
    )
    assert report["train_tokens"] == 2048
    assert report["mean_l0"] == 8.0
    assert json.loads((out / "training_report.json").read_text())["steps"] == 16
    sae = resolve_sae(str(out)).sae
    assert (sae.cfg.layer, sae.cfg.reader_model, sae.cfg.d_sae) == (
        TEST_LAYER,
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        128,
    )
    assert sae.cfg.meta["training_report"]["fvu"] == pytest.approx(report["fvu"], abs=1e-4)


def test_train_sae_flow_builds_an_itda_dictionary(training_db, tmp_path):
    from saeembed_flows.train_sae import train_sae_flow

    from saeembed.jobs import resolve_sae

    db = training_db
    out = tmp_path / "itda"
    report = train_sae_flow(
        corpus="train",
        layer=TEST_LAYER,
        out=str(out),
        arch="itda",
        atoms=96,
        k=8,
        db=db,
        max_tokens=32,
        train_tokens=2048,
        heldout_docs=20,
        batch_size=256,
        device="cpu",
    )
    assert (report["arch"], report["latents"]) == ("itda", 96)
    assert report["mean_l0"] <= 8.0 and 0 < report["fvu"] < 1
    assert report["train_tokens"] <= 2048  # the pass stops once the dictionary is full
    sae = resolve_sae(str(out)).sae
    assert (sae.cfg.arch, sae.cfg.k, sae.cfg.d_sae, sae.cfg.layer) == ("itda", 8, 96, TEST_LAYER)
    assert len(set(sae.cfg.meta["atom_sources"])) == 96


def test_train_sae_flow_on_sentence_means_makes_a_step_level_sae_that_embeds_sentences(training_db, tmp_path, reader):
    """RISE's setting: an SAE trained on each sentence's mean activation, which then encodes each sentence's
    mean (its codes are the stored activations) and refuses to embed anything but sentences."""
    import torch
    from saeembed_flows.embed import embed_flow
    from saeembed_flows.train_sae import train_sae_flow

    from saeembed.errors import SaeembedError
    from saeembed.jobs import resolve_sae
    from saeembed.model.units import parse_unit, token_units, unit_spans

    db, out = training_db, tmp_path / "step-sae"
    settings = {"db": db, "max_tokens": 48, "device": "cpu", "dtype": "float32"}
    report = train_sae_flow(
        corpus="train", layer=TEST_LAYER, out=str(out), latents=64, k=4, unit="Sentence", heldout_docs=20,
        batch_size=64, epochs=30, train_tokens=10**6, **settings,
    )  # fmt: skip
    sae = resolve_sae(str(out)).sae.float()
    assert (report["unit"], sae.cfg.input_unit) == ("sentence", "sentence")
    assert report["mean_l0"] <= 4 and 0 < report["fvu"] < 1
    # 100 training articles read to 48 tokens: rows are their sentences (a headline, a sentence or two), not
    # their ≈ 4,000 tokens.
    assert 100 < report["train_tokens"] < 400
    with pytest.raises(SaeembedError, match="was trained on sentence means: embed with --unit sentence"):
        embed_flow(corpus="train", sae=str(out), **settings)
    summary = embed_flow(corpus="train", sae=str(out), unit="sentence", **settings)
    assert summary["corpus"] == "train:sentence" and summary["status"] == "complete"

    with Store.open(db, read_only=True) as store:
        unit = store.query(
            "SELECT u.doc_id, u.char_start, u.char_end, p.text FROM units u JOIN documents p "
            "ON p.doc_id = u.parent_doc_id WHERE u.unit_index = 1 ORDER BY u.doc_id LIMIT 1"
        ).row(0, named=True)
        rows = store.query(
            f"SELECT feature_id, max_act, mean_act, n_active_tokens, argmax_pos FROM doc_features "
            f"WHERE doc_id = {unit['doc_id']} ORDER BY feature_id"
        )
    # The sentence's mean residual, read in its document, encoded by the SAE: the stored codes.
    ids = reader.tokenize([unit["text"]], 48).ids[0]
    offsets = reader.token_offsets([unit["text"]])[0]
    owner = token_units(offsets[: len(ids)], unit_spans(unit["text"], parse_unit("sentence"), offsets))
    residuals = reader.document_residuals([ids], reader.prefix_ids(True)).residuals
    mine = torch.as_tensor(owner == 1)
    codes = sae.encode(residuals[mine].mean(0, keepdim=True))[0]
    assert rows["feature_id"].to_list() == codes.nonzero().flatten().tolist()
    assert rows["max_act"].to_numpy() == pytest.approx(codes[codes > 0].numpy(), rel=1e-2, abs=1e-3)
    assert (rows["max_act"] == rows["mean_act"]).all()
    # Each concept's strongest token is the sentence token with the largest own pre-activation.
    pre = sae.pre_activations(residuals[mine])
    assert rows["argmax_pos"].to_list() == [int(pre[:, f].argmax()) for f in rows["feature_id"].to_list()]
    assert rows["n_active_tokens"].to_list() == [int((pre[:, f] > 0).sum()) for f in rows["feature_id"].to_list()]


def test_label_flow_labels_every_concept_then_skips_them(prefect_harness, tmp_path, source):
    from saeembed_flows.embed import embed_flow
    from saeembed_flows.ingest import ingest_flow
    from saeembed_flows.label import label_flow

    db = str(tmp_path / "label.duckdb")
    ingest_flow(path=str(source), corpus="news", db=db)
    embed_flow(corpus="news", sae=str(small_sae(tmp_path / "sae")), db=db, device="cpu", max_tokens=32)
    first = label_flow(corpus="news", db=db)
    with Store.open(db, read_only=True) as store:
        present = store.query("SELECT count(DISTINCT feature_id) AS n FROM doc_features")["n"][0]
        stored = store.query("SELECT count(*) AS n, count(embedding) AS embedded FROM features WHERE method = 'tokens'")
    assert (first["method"], first["requested"], first["labelled"], first["skipped"]) == ("tokens", present, present, 0)
    assert stored.row(0) == (present, present)
    second = label_flow(corpus="news", db=db)
    assert (second["labelled"], second["skipped"]) == (0, present)
