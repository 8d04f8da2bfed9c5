"""Release comparison: reading and storing a releases table, paired diffs across releases, the trend of
concepts, on real DuckDB stores with known concept vectors."""

from __future__ import annotations

import json

import polars as pl
import pytest

from saeembed.analysis.releases import (
    check_releases,
    compare_releases,
    example_releases,
    ingest_releases,
    read_releases,
)
from saeembed.errors import SaeembedError
from saeembed.storage.store import Store
from tests.support import build_store, release_docs


@pytest.fixture()
def store(tmp_path):
    with Store.open(build_store(tmp_path / "r.duckdb", {"r": release_docs()})) as opened:
        yield opened


def test_each_release_against_the_previous_and_the_baseline(store):
    result = compare_releases(store, "r", top=5)
    steps = result.steps.select("release", "against", "against_kind", "pairs", "rising", "falling").rows()
    assert steps == [
        ("v2", "v1", "previous", 40, 1, 0),
        ("v3", "v2", "previous", 40, 0, 1),
        ("v3", "v1", "baseline", 40, 0, 0),  # 2 vs 4 of 40: not significant
    ]
    rise = result.changes.filter((pl.col("release") == "v2") & (pl.col("feature_id") == 5)).row(0, named=True)
    assert (rise["freq_a"], rise["freq_b"], rise["delta"]) == pytest.approx((0.8, 0.1, 0.7))
    assert rise["q_value"] < 1e-6
    trend = result.trend.filter(pl.col("feature_id") == 5).sort("released_at")
    assert trend["release"].to_list() == ["v1", "v2", "v3"]
    assert trend["freq"].to_list() == pytest.approx([0.1, 0.8, 0.05])
    recorded = store.query("SELECT kind, inputs FROM analyses WHERE analysis_id = $a", {"a": result.analysis_id})
    assert recorded["kind"][0] == "compare-releases"
    assert json.loads(recorded["inputs"][0])["diffs"] == result.steps["diff_id"].to_list()


def test_a_chosen_baseline(store):
    result = compare_releases(store, "r", baseline="v2", top=5)
    steps = result.steps.select("release", "against", "against_kind").rows()
    # Both comparisons with the baseline v2 are already comparisons with a previous release.
    assert steps == [("v2", "v1", "previous"), ("v3", "v2", "previous")]
    with pytest.raises(SaeembedError, match="'v9' is not a release of bot"):
        compare_releases(store, "r", baseline="v9")


def test_a_table_that_grows_by_a_release_adds_only_that_release(tmp_path):
    table = example_releases()
    with Store.open(tmp_path / "x.duckdb") as store:
        first = ingest_releases(store, table.filter(pl.col("release") != "v3"), corpus="rel", source="t")
        second = ingest_releases(store, table, corpus="rel", source="t")
        meta = json.loads(store.query("SELECT meta FROM documents LIMIT 1")["meta"][0])
    assert (first.inserted, second.inserted, second.already_present) == (96, 48, 96)
    assert set(meta) == {"prompt_id", "prompt", "model", "release", "released_at"}


def test_the_example_is_three_releases_of_48_prompts():
    table = example_releases()
    assert table.height == 144 and table["release"].unique().sort().to_list() == ["v1", "v2", "v3"]
    assert table.group_by("release").len()["len"].to_list() == [48, 48, 48]
    v2_lists = table.filter(pl.col("release") == "v2")["response"].str.contains(r"(?m)^\s*[-*•] ").mean()
    v1_lists = table.filter(pl.col("release") == "v1")["response"].str.contains(r"(?m)^\s*[-*•] ").mean()
    assert v2_lists > v1_lists


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop("released_at"), "lacks column"),
        (lambda f: f.with_columns(pl.lit(" ").alias("response")), "empty responses"),
        (lambda f: pl.concat([f, f.head(1)]), "appears more than once"),
        (lambda f: f.with_columns(pl.lit("soon").alias("released_at")), "released_at must be a date"),
    ],
)
def test_bad_tables_are_refused_naming_the_problem(change, message):
    frame = example_releases().with_columns(pl.col("released_at").cast(pl.Utf8))
    with pytest.raises(SaeembedError, match=message):
        check_releases(change(frame))


def test_read_releases_errors(tmp_path):
    with pytest.raises(SaeembedError, match="no releases table"):
        read_releases(tmp_path / "missing.parquet")
    (tmp_path / "t.txt").write_text("x")
    with pytest.raises(SaeembedError, match=r"\.parquet, \.csv or \.jsonl"):
        read_releases(tmp_path / "t.txt")


def test_one_release_is_nothing_to_compare(tmp_path):
    docs = [d for d in release_docs() if d[1]["release"] == "v1"]
    with Store.open(build_store(tmp_path / "one.duckdb", {"r": docs})) as store:
        with pytest.raises(SaeembedError, match="one release only"):
            compare_releases(store, "r")
        with pytest.raises(SaeembedError, match="has no releases"):
            store.add_documents(
                "plain",
                pl.DataFrame({"external_id": ["x"], "text": ["t"], "meta": ["{}"], "content_hash": ["h"]}),
            )
            compare_releases(store, "plain")


def test_a_stored_comparison_loads_as_it_was_returned(store):
    from saeembed.analysis.releases import load_comparison

    made = compare_releases(store, "r", top=5)
    loaded = load_comparison(store, made.analysis_id)
    assert loaded.steps.equals(made.steps.select(loaded.steps.columns))
    assert loaded.changes.equals(made.changes)
    assert loaded.trend.sort("release", "feature_id").equals(made.trend.sort("release", "feature_id"))
    with pytest.raises(SaeembedError, match="not a release comparison"):
        load_comparison(store, made.steps["diff_id"][0])


def test_compare_releases_flow_embeds_new_responses_only_and_writes_the_report(prefect_harness, tmp_path):
    from saeembed_flows.compare_releases import compare_releases_flow

    from tests.support import small_sae

    first_six = example_releases()["prompt_id"].unique().sort()[:6].to_list()
    table = example_releases().filter(pl.col("prompt_id").is_in(first_six))
    source = tmp_path / "releases.parquet"
    table.filter(pl.col("release") != "v3").write_parquet(source)
    options = {
        "source": str(source),
        "corpus": "rel",
        "sae": str(small_sae(tmp_path / "sae")),
        "max_tokens": 32,
        "device": "cpu",
        "db": str(tmp_path / "rel.duckdb"),
    }
    first = compare_releases_flow(**options)
    table.write_parquet(source)  # v3 appears
    report = tmp_path / "out" / "releases.html"
    second = compare_releases_flow(**options, report=str(report))
    assert (first["ingested"]["inserted"], first["embedded"]) == (12, 12)
    assert (second["ingested"]["inserted"], second["embedded"]) == (6, 6)
    assert [(s["release"], s["against"]) for s in first["steps"]] == [("v2", "v1")]
    assert [(s["release"], s["against"], s["against_kind"]) for s in second["steps"]] == [
        ("v2", "v1", "previous"),
        ("v3", "v2", "previous"),
        ("v3", "v1", "baseline"),
    ]
    assert all(s["pairs"] == 6 for s in second["steps"])
    # The corpus is small, so each run labels it; the second run skips the concepts the first labelled.
    assert first["labels"]["labelled"] > 0 and first["labels"]["warning"] is None
    assert second["labels"]["skipped"] >= first["labels"]["labelled"]
    page = report.read_text()
    assert page.startswith("<!doctype html>") and "Top concepts across releases" in page and "http" not in page
