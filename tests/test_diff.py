"""Dataset diffing on a real DuckDB store filled with known concept vectors, against hand-computed and
independently computed statistics."""

from __future__ import annotations

import asyncio

import numpy as np
import polars as pl
import pytest
from scipy import stats

from saeembed.analysis.diff import diff, diff_by, independent_statistics, paired_statistics
from saeembed.analysis.presence import count_present
from saeembed.errors import SaeembedError
from saeembed.storage.store import RunSettings, Store
from saeembed.storage.synthetic import synthetic_corpus, synthetic_sae, write_concept_lists, write_concepts
from tests.support import READER, build_store, planted


def test_counts_and_statistics_match_hand_and_scipy_computations(two_corpora):
    with Store.open(two_corpora) as store:
        result = diff(store, "a", "b", top=10)
        stored = store.query("SELECT * FROM diff_results WHERE analysis_id = $a", {"a": result.analysis_id})
    assert (result.n_a, result.n_b, result.test) == (200, 200, "independent")
    row = result.table.filter(pl.col("feature_id") == 7).row(0, named=True)
    assert (row["n_a"], row["n_b"], row["freq_a"], row["freq_b"]) == (60, 10, 0.30, 0.05)
    assert row["delta"] == pytest.approx(0.25) and row["ratio"] == pytest.approx(6.0)
    assert row["ci_low"] < 0.25 < row["ci_high"] and row["rank"] == 1
    # Score test for a difference of proportions = pooled z statistic with the N/(N-1) factor
    # (Miettinen–Nurminen); compare with a direct computation.
    pooled = 70 / 400
    z = 0.25 / np.sqrt(pooled * (1 - pooled) * (1 / 200 + 1 / 200) * 400 / 399)
    assert row["p_value"] == pytest.approx(2 * stats.norm.sf(z), rel=1e-6)
    # Concept 1 is everywhere on both sides, concept 2 in half: no difference.
    same = result.table.filter(pl.col("feature_id").is_in([1, 2]))
    assert same.height == 0  # not among the shown rows: they fail the filters
    assert stored.filter(pl.col("feature_id") == 1)["p_value"].item() == 1.0
    assert stored.height == 3 and stored["q_value"].to_list() == pytest.approx(
        stats.false_discovery_control(stored["p_value"].to_numpy()).tolist()
    )


def test_fisher_for_small_counts_and_bh_q_values():
    counts = pl.DataFrame({"feature_id": [0, 1, 2], "n_a": [3, 40, 0], "n_b": [0, 20, 0]})
    table = independent_statistics(counts, 50, 60)
    assert table["test"].to_list() == ["fisher", "two-proportion score", "fisher"]
    assert table["p_value"][0] == pytest.approx(stats.fisher_exact([[3, 47], [0, 60]]).pvalue)
    assert table["p_value"][2] == 1.0
    assert table["q_value"].to_list() == pytest.approx(stats.false_discovery_control(table["p_value"].to_numpy()))


def test_paired_diff_uses_mcnemar_on_discordant_pairs():
    # 100 pairs: concept present on both sides in 30, only on A in 12, only on B in 2.
    counts = pl.DataFrame({"feature_id": [5], "n_a": [42], "n_b": [32], "n_both": [30]})
    row = paired_statistics(counts, 100).row(0, named=True)
    assert row["delta"] == pytest.approx(0.10)
    assert row["test"] == "mcnemar exact"
    assert row["p_value"] == pytest.approx(stats.binomtest(2, 14, 0.5).pvalue)
    se = np.sqrt(14 - 10**2 / 100) / 100
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((0.10 - 1.959964 * se, 0.10 + 1.959964 * se), rel=1e-5)


def test_paired_diff_pairs_documents_by_a_metadata_column(tmp_path):
    a = [(f"answer a {i}", {"prompt": f"p{i}"}, [3] + ([9] if i < 30 else [])) for i in range(50)]
    b = [(f"answer b {i}", {"prompt": f"p{i}"}, [3] + ([9] if i < 5 else [])) for i in range(50)]
    db = build_store(tmp_path / "paired.duckdb", {"v1": a, "v2": b})
    with Store.open(db) as store:
        result = diff(store, "v1", "v2", paired_on="prompt")
    assert (result.n_a, result.test) == (50, "paired")
    row = result.table.filter(pl.col("feature_id") == 9).row(0, named=True)
    assert (row["freq_a"], row["freq_b"], row["test"]) == (0.6, 0.1, "mcnemar")
    assert row["p_value"] == pytest.approx(stats.chi2.sf((25 - 1) ** 2 / 25, 1))


def test_presence_threshold_counts_a_concept_where_it_fires_at_half_its_pooled_p90(tmp_path):
    # Concept 3 fires in every document of both corpora: at 1…20 in a, at 0.5…10 in b.
    strong = [(f"a {i}", {}, [(3, float(i))]) for i in range(1, 21)]
    weak = [(f"b {i}", {}, [(3, i / 2)]) for i in range(1, 21)]
    db = build_store(tmp_path / "strength.duckdb", {"a": strong, "b": weak})
    pooled = np.array([float(i) for i in range(1, 21)] + [i / 2 for i in range(1, 21)])
    threshold = 0.5 * np.percentile(pooled, 90)  # numpy's linear interpolation, as quantile_cont
    with Store.open(db) as store:
        anything = diff(store, "a", "b", presence_threshold=0).table
        assert anything.height == 0  # present everywhere on both sides: no difference
        row = diff(store, "a", "b", min_delta=0).table.row(0, named=True)
        assert (row["n_a"], row["n_b"]) == ((pooled[:20] >= threshold).sum(), (pooled[20:] >= threshold).sum())
        # p90 of the 40 pooled values: 16.1, so the threshold is 8.05: a's 9…20 and b's 8.5…10.
        assert (row["n_a"], row["n_b"]) == (12, 4)
        assert row["example_b"] == "b« »20"  # the strongest of b, its peak token (1) marked
        cached = store.query("SELECT runs, feature_id, p90 FROM concept_percentiles")
        assert cached.rows() == [("1,2", 3, pytest.approx(np.percentile(pooled, 90)))]
        params = store.query("SELECT params->>'presence_threshold' AS t FROM analyses ORDER BY analysis_id")["t"]
        assert params.to_list() == ["0", "0.5"]
        with pytest.raises(SaeembedError, match="--presence-threshold must be between 0 and 1"):
            diff(store, "a", "b", presence_threshold=1.5)


def test_p90_cache_follows_the_runs_it_was_computed_on(tmp_path):
    from saeembed.storage.percentiles import concept_p90

    db = build_store(tmp_path / "cache.duckdb", {"a": [(f"a {i}", {}, [(3, float(i))]) for i in range(1, 11)]})
    with Store.open(db) as store:
        assert concept_p90(store, 1)["p90"].to_list() == pytest.approx([np.percentile(np.arange(1, 11), 90)])
        store.query("UPDATE concept_percentiles SET p90 = 99")  # what a cached read returns
        assert concept_p90(store, 1)["p90"].to_list() == [99.0]
        run = store.open_run(RunSettings(store.corpus_id("a"), 1, READER, 3, 512, True, "float32"), {})
        store.add_documents(
            "a", pl.DataFrame({"external_id": ["new"], "text": ["new"], "meta": ["{}"], "content_hash": ["new"]})
        )
        (doc_id,) = store.pending_documents(run)["doc_id"].to_list()
        write_concept_lists(store, run, np.asarray([doc_id]), [{3: 11.0}], peak={3: 0})
        # The run gained a document: recomputed over all 11, and the stale entry replaced.
        assert concept_p90(store, 1)["p90"].to_list() == pytest.approx([np.percentile(np.arange(1, 12), 90)])
        assert store.query("SELECT count(*) AS n FROM concept_percentiles")["n"][0] == 1
    with Store.open(db, read_only=True) as store:
        assert concept_p90(store, 1)["n_docs"].to_list() == [11]


def test_paired_diff_with_the_presence_threshold_sees_a_concept_fire_more_strongly(tmp_path):
    # Every answer of both releases has concept 4; v2's fire at 10, v1's at 1 (one pooled p90: 10).
    v1 = [(f"v1 answer {i}", {"prompt": f"p{i}"}, [(4, 1.0)]) for i in range(30)]
    v2 = [(f"v2 answer {i}", {"prompt": f"p{i}"}, [(4, 10.0)]) for i in range(30)]
    db = build_store(tmp_path / "strength.duckdb", {"v1": v1, "v2": v2})
    with Store.open(db) as store:
        assert diff(store, "v2", "v1", paired_on="prompt", presence_threshold=0).table.height == 0
        row = diff(store, "v2", "v1", paired_on="prompt").table.row(0, named=True)
    assert (row["freq_a"], row["freq_b"], row["test"]) == (1.0, 0.0, "mcnemar")
    assert row["p_value"] == pytest.approx(stats.chi2.sf((30 - 1) ** 2 / 30, 1))


def test_slices_of_one_corpus_and_one_vs_rest(tmp_path):
    rng = np.random.default_rng(1)
    docs = planted(100, 0.4, rng, "x") + planted(100, 0.0, rng, "y")
    db = build_store(tmp_path / "one.duckdb", {"mixed": docs})
    with Store.open(db) as store:
        sliced = diff(store, "mixed", "mixed", where_a="meta->>'side' = 'x'", where_b="meta->>'side' = 'y'")
        assert (sliced.n_a, sliced.n_b) == (100, 100)
        assert sliced.table["feature_id"][0] == 7
        by = diff_by(store, "mixed", "side")
        assert set(by.table["grp"].to_list()) == {"x", "y"} and by.test == "one-vs-rest"
        top_x = by.table.filter(pl.col("grp") == "x").row(0, named=True)
        assert (top_x["feature_id"], top_x["freq_a"], top_x["freq_b"]) == (7, 0.4, 0.0)
        with pytest.raises(SaeembedError, match="sides A and B share 200 documents"):
            diff(store, "mixed", "mixed")
        with pytest.raises(SaeembedError, match="--by nope: needs at least two levels, found 0"):
            diff_by(store, "mixed", "nope")


@pytest.mark.parametrize(
    ("predicate", "message"),
    [
        ("1=1; DROP TABLE documents", "must be a single expression, not several statements"),
        ("doc_id IN (SELECT doc_id FROM doc_features)", "may not contain a subquery"),
        ("read_csv('/etc/passwd') IS NOT NULL", r"may not call read_csv\(\)"),
        ("nextval('doc_id_seq') > 0", r"may not call nextval\(\)"),
        ("feature_id = 3", "refers to unknown column 'feature_id'"),
        ("text LIKE", "is not a valid SQL expression"),
        ("   ", "is empty"),
    ],
)
def test_bad_predicates_are_refused_before_anything_runs(two_corpora, predicate, message):
    with Store.open(two_corpora) as store:
        with pytest.raises(SaeembedError, match=message):
            diff(store, "a", "b", where_a=predicate)
        assert store.query("SELECT count(*) AS n FROM analyses")["n"][0] == 0


def test_other_bad_input(two_corpora):
    with Store.open(two_corpora) as store:
        for kwargs, message in [
            ({"min_delta": 2}, "--min-delta must be between 0 and 1"),
            ({"top": 0}, "--top must be at least 1"),
            ({"rank_by": "size"}, "unknown --rank-by 'size'"),
            ({"where_a": "meta->>'side' = 'nothing'"}, "side A has no documents"),
            ({"paired_on": "side"}, "side A has 200 documents sharing a value"),
        ]:
            with pytest.raises(SaeembedError, match=message):
                diff(store, "a", "b", **kwargs)
        with pytest.raises(SaeembedError, match="no corpus named 'c'"):
            diff(store, "a", "c")


def test_diff_flow_stores_results_and_writes_a_self_contained_report(prefect_harness, two_corpora, tmp_path):
    from saeembed_flows.diff import diff_flow

    report = tmp_path / "diff.html"
    result = diff_flow(a="a", b="b", db=str(two_corpora), report=str(report), top=5)
    assert result["rows"][0]["feature_id"] == 7 and result["test"] == "independent"
    page = report.read_text()
    assert page.startswith("<!doctype html>") and "<svg" in page and "http" not in page
    # The run's artifact in Prefect links to the page.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def latest_summary() -> str:
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["diff-summary"]))
            )
            return max(found, key=lambda artifact: artifact.created).data

    assert f"report: [diff.html]({report.resolve().as_uri()})" in asyncio.run(latest_summary())
    with Store.open(two_corpora, read_only=True) as store:
        analyses = store.query("SELECT kind, params->>'a' AS a, inputs->>'n_a' AS n_a FROM analyses")
        assert analyses.rows() == [("diff", "a", "200")]
        assert store.query("SELECT count(*) AS n FROM diff_results")["n"][0] == 3


def test_diff_command_refuses_contradictory_options(two_corpora):
    from typer.testing import CliRunner

    from saeembed.cli import app

    runner = CliRunner()
    for args, message in [
        (["diff", "a"], "give corpus B"),
        (["diff", "a", "b", "--by", "side"], "give corpus B"),
        (["diff", "a", "--by", "side", "--paired-on", "prompt"], "with --by use --where"),
        (["diff", "a", "b", "--report", "out.txt"], "--report must end in .html"),
        (["diff", "a", "b", "--presence-threshold", "-0.1"], "--presence-threshold must be between 0 and 1"),
        (["compare-releases", "--presence-threshold", "1.5"], "--presence-threshold must be between 0 and 1"),
    ]:
        result = runner.invoke(app, [*args, "--db", str(two_corpora)])
        assert result.exit_code != 0 and message in str(result.exception)


def test_stored_diffs_load_as_they_were_returned(tmp_path):
    from saeembed.analysis.diff import load_diff

    rng = np.random.default_rng(1)
    docs = planted(100, 0.4, rng, "x") + planted(100, 0.0, rng, "y")
    with Store.open(build_store(tmp_path / "one.duckdb", {"mixed": docs})) as store:
        made = [
            diff(store, "mixed", "mixed", where_a="meta->>'side' = 'x'", where_b="meta->>'side' = 'y'", top=5),
            diff(
                store,
                "mixed",
                "mixed",
                where_a="meta->>'side' = 'x'",
                where_b="meta->>'side' = 'y'",
                paired_on="prompt",
            ),
            diff_by(store, "mixed", "side", top=5),
        ]
        loaded = [load_diff(store, result.analysis_id, top=5 if i != 1 else 50) for i, result in enumerate(made)]
        with pytest.raises(SaeembedError, match="analysis 99 does not exist"):
            load_diff(store, 99)
    for result, again in zip(made, loaded, strict=True):
        assert (again.n_a, again.n_b, again.test) == (result.n_a, result.n_b, result.test)
        assert again.table.equals(result.table.select(again.table.columns))


def test_presence_counts_match_a_direct_count_over_two_runs(tmp_path):
    """count_present against polars over the same rows: two corpora (two runs of one SAE), thresholds
    for some concepts only, documents in no group, groups of both runs."""
    rng = np.random.default_rng(11)
    with Store.open(tmp_path / "presence.duckdb") as store:
        sae = synthetic_sae(store, 64)
        written = []
        for corpus in ("x", "y"):
            run, doc_ids = synthetic_corpus(store, corpus, [f"{corpus} {i}" for i in range(120)], sae_id=sae)
            counts = rng.integers(0, 20, doc_ids.size)
            features = np.concatenate([np.sort(rng.choice(64, n, replace=False)) for n in counts])
            max_act = rng.random(features.size).astype(np.float16).astype(np.float32)  # as the shards keep it
            write_concepts(store, run, doc_ids, counts, features, max_act)
            written.append(
                pl.DataFrame({"doc_id": np.repeat(doc_ids, counts), "feature_id": features, "max_act": max_act})
            )
        run_x, run_y = store.latest_run("x"), store.latest_run("y")
        rows = pl.concat(written)
        doc_ids = rows["doc_id"].unique().sort().to_numpy()
        chosen = doc_ids[rng.random(doc_ids.size) < 0.7]
        groups = pl.DataFrame({"doc_id": chosen, "group": rng.integers(0, 3, chosen.size)})
        thresholds = pl.DataFrame({"feature_id": np.arange(0, 64, 3, dtype=np.int32), "min_act": 0.4})
        counted = count_present(store, run_x, run_y, groups, thresholds)
    expected = (
        rows.join(groups, on="doc_id")
        .join(thresholds, on="feature_id", how="left")
        .filter(pl.col("max_act") >= pl.col("min_act").fill_null(0))
        .group_by("group", "feature_id")
        .len()
    )
    direct = np.zeros((3, 64), dtype=np.int64)
    direct[expected["group"].to_numpy(), expected["feature_id"].to_numpy()] = expected["len"].to_numpy()
    assert counted.groups.to_list() == [0, 1, 2]
    assert counted.n.shape == (3, 64) and direct.sum() > 500
    np.testing.assert_array_equal(counted.n, direct)
