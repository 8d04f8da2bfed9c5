"""Reports of stored analyses, written later by id: the command, the flow, and what the pages hold."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from saeembed.analysis.correlate import correlate_column, correlate_pairs
from saeembed.analysis.diff import diff
from saeembed.analysis.releases import compare_releases
from saeembed.cli import app
from saeembed.errors import SaeembedError
from saeembed.reports.pages import analysis_report
from saeembed.storage.store import Store
from tests.support import CORRELATE_DOCS as DOCS
from tests.support import CORRELATE_PEAK as PEAK
from tests.support import build_store, release_docs


@pytest.fixture()
def path(tmp_path):
    return build_store(tmp_path / "rep.duckdb", {"c": DOCS, "r": release_docs()}, peak=PEAK)


def self_contained(page: str) -> bool:
    return page.startswith("<!doctype html>") and "http" not in page and "src=" not in page


def test_every_kind_of_analysis_gets_a_page(path):
    with Store.open(path) as store:
        made = {
            "diff": diff(store, "c", "c", where_a="meta->>'half' = 'first'", where_b="meta->>'half' = 'second'"),
            "correlate": correlate_pairs(store, "c", min_npmi=0.3, min_count=2),
            "correlate-column": correlate_column(store, "c", "half", min_count=2),
            "compare-releases": compare_releases(store, "r", top=5),
        }
        pages = {kind: analysis_report(store, result.analysis_id)[1] for kind, result in made.items()}
        assert analysis_report(store, "compare-releases")[0] == made["compare-releases"].analysis_id  # the latest
    assert all(self_contained(page) for page in pages.values())
    # Concept 5 is in every document of the first half and none of the second: its row says so.
    # (the label cell: the label, then where it was made and what the concept peaks on here)
    row_of_5 = (
        r"<td class='num concept' data-concept='5'>5</td><td>(?:(?!</td>).)*</td>"
        r"<td class='num'>1\.000</td><td class='num'>0\.000</td>"
    )
    assert "<svg" in pages["diff"] and re.search(row_of_5 + r"<td class='num'>\+1\.000</td>", pages["diff"])
    assert "fires here on: " in pages["diff"] and "fires here on: " in pages["correlate"]
    results = pages["correlate"].split("<table>")[2]  # after the parameters' table
    assert results.count("<tr>") == 1 + made["correlate"].pairs.height
    assert "chi-square" in pages["correlate-column"]
    assert "<polyline" in pages["compare-releases"] and "v2 vs v1" in pages["compare-releases"]


def test_report_command_and_its_errors(path, tmp_path):
    with Store.open(path) as store:
        analysis_id = diff(
            store, "c", "c", where_a="meta->>'half' = 'first'", where_b="meta->>'half' = 'second'"
        ).analysis_id
    runner = CliRunner()
    out = tmp_path / "d.html"
    result = runner.invoke(app, ["report", str(analysis_id), "--html", str(out), "--db", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["bytes"] == len(out.read_text()) and self_contained(out.read_text())
    for args, message in [
        (["report", "99", "--html", str(out)], "analysis 99 does not exist"),
        (["report", "cluster", "--html", str(out)], "no 'cluster' analysis"),
        (["report", str(analysis_id), "--html", str(tmp_path / "d.txt")], "--html must end in .html"),
        (["report", str(analysis_id), "--html", str(tmp_path / "no" / "d.html")], "folder"),
    ]:
        refused = runner.invoke(app, [*args, "--db", str(path)])
        assert refused.exit_code != 0 and message in str(refused.exception), args


def test_unsupported_kinds_are_named(path):
    with Store.open(path) as store:
        analysis_id = store.record_analysis("correlate-later", {}, {}, 0.1)
        with pytest.raises(SaeembedError, match="is a 'correlate-later'"):
            analysis_report(store, analysis_id)


def test_a_stored_clustering_gets_the_page_the_flow_wrote(tmp_path):
    from saeembed.analysis.cluster import cluster_documents
    from tests.support import CLUSTER_DOCS as DOCS

    with Store.open(build_store(tmp_path / "cl.duckdb", {"c": DOCS})) as store:
        result = cluster_documents(store, "c", concepts=[1, 2, 3, 4, 5, 6])
        _, page = analysis_report(store, "cluster")
    assert self_contained(page) and "<circle" in page
    for row in result.summaries.iter_rows(named=True):
        name = "Noise" if row["cluster"] < 0 else f"Cluster {row['cluster']}"
        assert f"{name}: {row['size']} documents" in page


def test_report_flow_writes_the_latest_diff(prefect_harness, path, tmp_path):
    from saeembed_flows.report import report_flow

    with Store.open(path) as store:
        analysis_id = diff(
            store, "c", "c", where_a="meta->>'half' = 'first'", where_b="meta->>'half' = 'second'"
        ).analysis_id
    written = report_flow(analysis="diff", html=str(tmp_path / "reports" / "latest.html"), db=str(path))
    assert written["analysis_id"] == analysis_id
    assert self_contained((tmp_path / "reports" / "latest.html").read_text())
