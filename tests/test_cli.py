"""The `saeembed` command: look-ups answer from the library; bad input gives one line and exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import polars as pl
import pytest
from typer.testing import CliRunner

from saeembed.cli import app
from saeembed.jobs import embed, ingest
from saeembed.model.pooling import EmbedOptions
from saeembed.storage.store import Store, copy_database
from tests.support import TEXTS, small_sae

runner = CliRunner()


@pytest.fixture(scope="module")
def embedded_db(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    source = folder / "docs.parquet"
    pl.DataFrame({"id": [f"n{i}" for i in range(len(TEXTS))], "text": TEXTS}).write_parquet(source)
    db = folder / "cli.duckdb"
    with Store.open(db) as store:
        ingest(store, source, corpus="news")
        embed(store, "news", sae=str(small_sae(folder / "sae")), device="cpu", options=EmbedOptions(max_tokens=32))
    return db


def saeembed(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "saeembed.cli", *args], capture_output=True, text=True, timeout=300)


def test_docs_show_marks_where_each_concept_fired(embedded_db):
    result = runner.invoke(app, ["docs", "show", "1", "--db", str(embedded_db), "--json", "--top", "5"])
    assert result.exit_code == 0, result.output
    view = json.loads(result.stdout)
    assert (view["doc_id"], view["external_id"], view["corpus"]) == (1, "n0", "news")
    assert len(view["concepts"]) == 5
    strongest = view["concepts"][0]
    assert strongest["max_act"] == max(c["max_act"] for c in view["concepts"])
    assert "«" in strongest["context"] and strongest["token"] in view["text"]


def test_concepts_top_lists_the_most_frequent_concepts(embedded_db):
    result = runner.invoke(app, ["concepts", "top", "--corpus", "news", "--db", str(embedded_db), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 20
    assert [r["n_docs"] for r in rows] == sorted((r["n_docs"] for r in rows), reverse=True)
    assert all(0 < r["freq"] <= 1 and r["top_tokens"] for r in rows)
    with Store.open(embedded_db, read_only=True) as store:
        most = store.query("SELECT max(n) AS n FROM (SELECT count(*) AS n FROM doc_features GROUP BY feature_id)")
    assert rows[0]["n_docs"] == most["n"][0]


def test_lookups_of_missing_things_are_one_line_errors(embedded_db, tmp_path):
    for args, message in (
        (["docs", "show", "999", "--db", str(embedded_db)], "document 999 does not exist"),
        (["concepts", "top", "--corpus", "nope", "--db", str(embedded_db)], "no corpus named 'nope'"),
        (["corpora", "list", "--db", str(tmp_path / "none.duckdb")], "no database at"),
        (
            ["ingest", str(tmp_path / "missing.csv"), "--corpus", "x", "--db", str(tmp_path / "new.duckdb")],
            "no such file or directory",
        ),
    ):
        result = saeembed(*args)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "new.duckdb").exists()


def test_flow_errors_reach_the_user_as_one_line(tmp_path):
    """Through a real flow run (ephemeral Prefect server, ≈10 s): an unknown column writes nothing."""
    source = tmp_path / "docs.csv"
    pl.DataFrame({"body": ["a"]}).write_csv(source)
    result = saeembed("ingest", str(source), "--corpus", "x", "--db", str(tmp_path / "db.duckdb"))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert errors == ["error: column 'text' not found in docs.csv; columns are: body"]
    assert not (tmp_path / "db.duckdb").exists()


@pytest.fixture(scope="module")
def labelled_cli_db(embedded_db, tmp_path_factory):
    from saeembed.concepts.labels import label_concepts

    db = tmp_path_factory.mktemp("cli-labels") / "labelled.duckdb"
    copy_database(embedded_db, db)
    with Store.open(db) as store:
        label_concepts(store, "news")
    return db


def test_concepts_show_gives_the_label_and_marked_top_documents(labelled_cli_db):
    with Store.open(labelled_cli_db, read_only=True) as store:
        feature_id = store.query("SELECT feature_id FROM concept_frequency ORDER BY n_docs DESC LIMIT 1")["feature_id"][
            0
        ]
    result = runner.invoke(app, ["concepts", "show", str(feature_id), "--db", str(labelled_cli_db), "--json"])
    assert result.exit_code == 0, result.output
    view = json.loads(result.stdout)
    assert (view["feature_id"], view["corpus"], view["corpus_docs"]) == (feature_id, "news", len(TEXTS))
    assert view["labels"][0]["method"] == "tokens" and view["labels"][0]["label"]
    assert [d["rank"] for d in view["documents"]] == list(range(1, view["n_docs"] + 1))
    assert all("«" in d["marked"] for d in view["documents"])


def test_concepts_search_returns_scored_concepts_as_json(labelled_cli_db):
    result = runner.invoke(
        app,
        [
            "concepts",
            "search",
            "football match",
            "--db",
            str(labelled_cli_db),
            "--json",
            "--min-score",
            "0",
            "--top",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 3
    assert list(rows[0]) == [
        "feature_id",
        "label",
        "label_source",
        "score",
        "similarity",
        "freq",
        "peak_tokens",
        "method",
        "description",
    ]
    assert rows[0]["similarity"] >= rows[1]["similarity"] >= rows[2]["similarity"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["concepts", "show", "99999"], "concept 99999 does not exist: this SAE has concepts 0..255"),
        (["concepts", "search", "sports", "--corpus", "nope"], "no corpus named 'nope'"),
    ],
)
def test_concept_lookups_name_the_problem(labelled_cli_db, args, message):
    result = saeembed(*args, "--db", str(labelled_cli_db))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_cluster_command_runs_the_flow_and_summarises_the_clusters(prefect_harness, tmp_path):
    from tests.support import labelled_store

    path = labelled_store(tmp_path / "cluster.duckdb")
    report = tmp_path / "c.html"
    args = ["cluster", "c", "--concepts", "1,2,3,4,5,6", "--db", str(path), "--report", str(report)]
    shown = runner.invoke(app, args)
    assert shown.exit_code == 0, shown.output
    assert "hdbscan on concepts" in shown.stdout and report.read_text().startswith("<!doctype html>")
    spectral = runner.invoke(app, [*args, "--method", "spectral", "--k", "2", "--json"])
    assert spectral.exit_code == 0, spectral.exception
    payload = json.loads(spectral.stdout)
    assert payload["method"] == "spectral" and payload["n_clusters"] == 2
    refused = runner.invoke(app, ["cluster", "c", "--concepts", "1,2", "--report", "x.txt", "--db", str(path)])
    assert refused.exit_code != 0 and "--report must end in .html" in str(refused.exception)
