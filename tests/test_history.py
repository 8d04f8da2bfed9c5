"""History of an analysis across runs, on real DuckDB stores whose data change between runs."""

from __future__ import annotations

import polars as pl
import pytest

from saeembed.analysis.correlate import correlate_pairs
from saeembed.analysis.diff import diff
from saeembed.analysis.history import analysis_history
from saeembed.errors import SaeembedError
from saeembed.storage.store import Store
from saeembed.storage.synthetic import rewrite_run


def test_a_concepts_delta_across_runs_of_one_diff(two_corpora):
    with Store.open(two_corpora) as store:
        other = diff(store, "a", "b", min_delta=0.1).analysis_id  # other parameters: another analysis
        first = diff(store, "a", "b").analysis_id
        # Concept 7 disappears from 20 of A's 60 documents with it: freq_a 0.30 → 0.20.
        run_a = store.latest_run("a").run_id
        lost = (pl.col("feature_id") == 7) & pl.col("doc_id").is_in(
            store.query(
                "SELECT doc_id FROM doc_features WHERE run_id = $r AND feature_id = 7 ORDER BY doc_id LIMIT 20",
                {"r": run_a},
            )["doc_id"].implode()
        )
        rewrite_run(store, run_a, lambda rows: rows.filter(~lost))
        second = diff(store, "a", "b").analysis_id
        history = analysis_history(store, "diff", concepts=[7])
        by_id = analysis_history(store, first, top=1)
        alone = analysis_history(store, other)
    assert history.kind == "diff" and history.params["a"] == "a"
    assert history.runs["analysis_id"].to_list() == [first, second]
    seven = history.series.filter(history.series["feature_id"] == 7)
    assert seven["analysis_id"].to_list() == [first, second]
    assert seven["delta"].to_list() == pytest.approx([0.25, 0.15])
    assert seven["freq_a"].to_list() == pytest.approx([0.30, 0.20])
    # By default the latest run's top concepts are followed: concept 7 ranks first in both.
    assert by_id.series["feature_id"].unique().to_list() == [7]
    assert alone.runs["analysis_id"].to_list() == [other]


def test_pairs_npmi_across_runs_of_one_correlation(tmp_path):
    from tests.support import CORRELATE_DOCS as DOCS
    from tests.support import CORRELATE_PEAK as PEAK
    from tests.support import build_store

    with Store.open(build_store(tmp_path / "c.duckdb", {"c": DOCS}, peak=PEAK)) as store:
        first = correlate_pairs(store, "c", min_npmi=0.3, min_count=2).analysis_id
        # One document loses concept 2: the pair (1, 2) co-occurs in 5 documents instead of 6.
        first_doc = store.query("SELECT min(doc_id) AS d FROM documents")["d"][0]
        lost = (pl.col("feature_id") == 2) & (pl.col("doc_id") == first_doc)
        rewrite_run(store, 1, lambda rows: rows.filter(~lost))
        second = correlate_pairs(store, "c", min_npmi=0.3, min_count=2).analysis_id
        history = analysis_history(store, "correlate")
    pair = history.series.filter((history.series["feature_a"] == 1) & (history.series["feature_b"] == 2))
    assert history.runs["analysis_id"].to_list() == [first, second]
    assert pair["n_ab"].to_list() == [6, 5]
    assert pair["npmi"][0] > pair["npmi"][1]


def test_history_errors(two_corpora):
    with Store.open(two_corpora) as store:
        with pytest.raises(SaeembedError, match="no 'diff' analysis"):
            analysis_history(store, "diff")
        with pytest.raises(SaeembedError, match="analysis 42 does not exist"):
            analysis_history(store, 42)
        analysis_id = diff(store, "a", "b").analysis_id
        with pytest.raises(SaeembedError, match="--top must be at least 1"):
            analysis_history(store, analysis_id, top=0)


def test_history_command_prints_delta_per_run(two_corpora):
    import json

    from typer.testing import CliRunner

    from saeembed.cli import app

    with Store.open(two_corpora) as store:
        first, second = diff(store, "a", "b").analysis_id, diff(store, "a", "b").analysis_id
    runner = CliRunner()
    shown = runner.invoke(app, ["history", "diff", "--db", str(two_corpora), "--concepts", "7"])
    assert shown.exit_code == 0, shown.output
    assert "2 runs" in shown.stdout and f"{first}" in shown.stdout and "0.25" in shown.stdout
    payload = json.loads(runner.invoke(app, ["history", str(second), "--db", str(two_corpora), "--json"]).stdout)
    assert [run["analysis_id"] for run in payload["runs"]] == [first, second]
    refused = runner.invoke(app, ["history", "diff", "--db", str(two_corpora), "--concepts", "7,x"])
    assert refused.exit_code != 0 and "comma-separated concept ids" in str(refused.exception)
