"""Embedding end to end on the real SmolLM2 reader (layer 3) with a small SAE, into a real DuckDB file."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import torch

from saeembed.errors import SaeembedError
from saeembed.jobs import embed, ingest
from saeembed.model.pooling import EmbedOptions
from saeembed.model.sae import SparseAutoencoder
from saeembed.storage.store import Store
from tests.support import TEXTS, small_sae


@pytest.fixture()
def corpus_db(tmp_path: Path) -> Path:
    source = tmp_path / "docs.jsonl"
    pl.DataFrame({"id": [f"d{i}" for i in range(len(TEXTS))], "text": TEXTS}).write_ndjson(source)
    db = tmp_path / "embed.duckdb"
    with Store.open(db) as store:
        ingest(store, source, corpus="news")
    return db


def test_embedding_matches_a_direct_computation(tmp_path, corpus_db, reader):
    sae_dir = small_sae(tmp_path / "sae")
    options = EmbedOptions(max_tokens=16, batch_size=3)
    with Store.open(corpus_db) as store:
        summary = embed(store, "news", sae=str(sae_dir), device="cpu", dtype="float32", options=options)
        docs = store.query(
            "SELECT d.doc_id, d.text, e.n_tokens, e.n_tokens_total, e.truncated, e.n_features "
            "FROM documents d JOIN embedded_documents e USING (doc_id) ORDER BY d.doc_id"
        )
        features = store.query("SELECT * FROM doc_features WHERE doc_id = (SELECT min(doc_id) FROM documents)")
        # The run's percentiles are kept as it finishes, so the first diff or search does not compute them.
        kept = store.query("SELECT runs, feature_id, p90 FROM concept_percentiles ORDER BY feature_id")
        p90 = store.query(
            "SELECT feature_id, quantile_cont(max_act, 0.9) AS p90 FROM doc_features GROUP BY ALL ORDER BY 1"
        )
    assert kept["runs"].unique().to_list() == [str(summary.run_id)]
    assert kept["feature_id"].to_list() == p90["feature_id"].to_list()
    assert kept["p90"].to_list() == pytest.approx(p90["p90"].to_list())
    assert summary.status == "complete"
    assert summary.documents == len(TEXTS)
    assert docs.height == len(TEXTS)
    assert docs["n_features"].min() >= 8  # k latents fire on every token
    assert docs["n_tokens"].to_list() == [min(16, n) for n in docs["n_tokens_total"]]
    assert docs["truncated"].to_list() == [n > 16 for n in docs["n_tokens_total"]]
    assert summary.truncated == sum(n > 16 for n in docs["n_tokens_total"])

    # The first document by hand: residuals one document at a time, dense codes, pooled in numpy.
    sae = SparseAutoencoder.load(sae_dir)
    ids = reader.tokenize([docs["text"][0]], 16).ids[0]
    residuals = reader.residuals([ids], reader.prefix_ids(chat_template=True))[0]
    codes = sae.encode(residuals)
    present = (codes > 0).any(0).nonzero().flatten().tolist()
    stored = features.sort("feature_id")
    assert stored["feature_id"].to_list() == present
    expected_max = codes.max(0).values[present]
    torch.testing.assert_close(torch.tensor(stored["max_act"].to_list()), expected_max, atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(torch.tensor(stored["mean_act"].to_list()), codes.mean(0)[present], atol=2e-3, rtol=1e-3)
    assert stored["n_active_tokens"].to_list() == (codes > 0).sum(0)[present].tolist()
    assert stored["argmax_pos"].to_list() == codes.argmax(0)[present].tolist()


def test_a_run_killed_mid_way_resumes_with_each_document_exactly_once(tmp_path, corpus_db):
    sae_dir = str(small_sae(tmp_path / "sae"))
    options = EmbedOptions(max_tokens=16, batch_size=2)
    batches_done = []

    def crash_after_two_batches(documents: int, tokens: int) -> None:
        batches_done.append(documents)
        if len(batches_done) == 2:
            raise KeyboardInterrupt  # as if the process were killed between two batches

    with Store.open(corpus_db) as store:
        with pytest.raises(KeyboardInterrupt):
            embed(store, "news", sae=sae_dir, device="cpu", options=options, on_batch=crash_after_two_batches)
        assert store.query("SELECT count(*) AS n FROM embedded_documents")["n"][0] == 4
        summary = embed(store, "news", sae=sae_dir, device="cpu", options=options)
        per_doc = store.query("SELECT doc_id, count(*) AS n FROM embedded_documents GROUP BY doc_id")
        duplicates = store.query(
            "SELECT count(*) AS n FROM (SELECT doc_id, feature_id FROM doc_features GROUP BY ALL HAVING count(*) > 1)"
        )
        runs = store.query("SELECT count(*) AS n FROM embed_runs")["n"][0]
    assert summary.documents == len(TEXTS) - 4  # only the missing documents
    assert summary.status == "complete"
    assert per_doc.height == len(TEXTS) and per_doc["n"].max() == 1
    assert duplicates["n"][0] == 0
    assert runs == 1


def test_mismatched_or_missing_inputs_fail_before_writing(tmp_path, corpus_db):
    cases = [
        (dict(corpus="nope", sae=str(small_sae(tmp_path / "ok"))), r"no corpus named 'nope'"),
        (dict(corpus="news", sae=str(tmp_path / "missing")), "SAE not found"),
        (dict(corpus="news", sae=str(small_sae(tmp_path / "wide", d_in=100))), "input width 100 does not match"),
        (
            dict(corpus="news", sae=str(small_sae(tmp_path / "gpt", reader="gpt2")), reader="smollm2-135m-instruct"),
            "SAE was trained on gpt2",
        ),
        (dict(corpus="news", sae=str(small_sae(tmp_path / "l5", layer=5)), layer=3), "reads layer 5, but --layer 3"),
    ]
    with Store.open(corpus_db) as store:
        for kwargs, message in cases:
            with pytest.raises(SaeembedError, match=message):
                embed(store, device="cpu", **kwargs)
        assert store.query("SELECT count(*) AS n FROM embed_runs")["n"][0] == 0
        assert store.query("SELECT count(*) AS n FROM doc_features")["n"][0] == 0
