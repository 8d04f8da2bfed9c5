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
