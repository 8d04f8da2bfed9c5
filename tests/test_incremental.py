"""A pipeline left running: new documents arrive between scheduled runs of ingest → embed → diff. Real
flows (temporary Prefect API), a real DuckDB file, the real reader (a 4-layer cut) with a small SAE."""

from __future__ import annotations

import json

import polars as pl

from saeembed.analysis.history import analysis_history
from saeembed.storage.store import Store
from tests.support import TEXTS, small_sae


def write_batch(path, texts: list[str], first_id: int) -> None:
    pl.DataFrame(
        {
            "id": range(first_id, first_id + len(texts)),
            "text": texts,
            "half": ["first" if i % 2 == 0 else "second" for i in range(first_id, first_id + len(texts))],
        }
    ).write_ndjson(path)


def test_a_second_round_embeds_only_the_new_documents_and_history_shows_both_diffs(prefect_harness, tmp_path):
    from saeembed_flows.diff import diff_flow
    from saeembed_flows.embed import embed_flow
    from saeembed_flows.ingest import ingest_flow

    incoming, db = tmp_path / "incoming", str(tmp_path / "live.duckdb")
    incoming.mkdir()
    sae = str(small_sae(tmp_path / "sae"))
    glob = str(incoming / "*.jsonl")
    diff_args = {"a": "live", "b": "live", "where_a": "meta->>'half' = 'first'", "where_b": "meta->>'half' = 'second'"}

    write_batch(incoming / "monday.jsonl", TEXTS[:4], first_id=0)
    first = ingest_flow(path=glob, corpus="live", db=db)
    embedded_first = embed_flow(corpus="live", sae=sae, db=db, device="cpu", max_tokens=32)
    diff_first = diff_flow(**diff_args, db=db)

    write_batch(incoming / "tuesday.jsonl", TEXTS[4:], first_id=4)
    second = ingest_flow(path=glob, corpus="live", db=db)
    embedded_second = embed_flow(corpus="live", sae=sae, db=db, device="cpu", max_tokens=32)
    diff_second = diff_flow(**diff_args, db=db)

    assert (first["inserted"], second["inserted"], second["already_present"]) == (4, 4, 4)
    assert (embedded_first["documents"], embedded_second["documents"]) == (4, 4)
    assert (diff_first["n_a"], diff_second["n_a"]) == (2, 4)
    with Store.open(db, read_only=True) as store:
        history = analysis_history(store, "diff")
        runs = store.query("SELECT count(*) AS n FROM embed_runs")["n"][0]
    assert runs == 1  # one run, extended: the first four documents were not embedded again
    assert history.runs["analysis_id"].to_list() == [diff_first["analysis_id"], diff_second["analysis_id"]]
    assert [json.loads(inputs)["n_a"] for inputs in history.runs["inputs"]] == [2, 4]
