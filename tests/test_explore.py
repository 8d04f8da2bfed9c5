"""The explore map on a real store with planted topics: what the page carries, the colours, and the command's
one-line errors. The page in a browser: tests/test_browser.py."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from saeembed.analysis.cluster import cluster_documents
from saeembed.analysis.explore import PAGE_CONCEPTS, explore_map
from saeembed.cli import main
from saeembed.storage.store import Store, copy_database
from tests.support import build_store, explore_docs


@pytest.fixture(scope="module")
def topics_db(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("explore") / "topics.duckdb", {"c": explore_docs()})


def test_the_map_carries_each_documents_concepts_and_colours_by_a_column(topics_db):
    with Store.open(topics_db, read_only=True) as store:
        found = explore_map(store, "c", color_by="topic")
        stored = store.query(
            "SELECT f.doc_id, list(f.feature_id ORDER BY f.feature_id) AS concepts, "
            "any_value(d.meta->>'topic') AS topic FROM doc_features f JOIN documents d USING (doc_id) GROUP BY 1"
        )
    points = found.points.join(stored, on="doc_id")
    assert found.points.height == stored.height == 120 and found.n_unmapped == 0
    assert found.color_kind == "categories" and (points["color"] == points["topic"]).all()
    # Every planted concept is present (activations 1–2, p90 ≤ 2); a document has fewer than PAGE_CONCEPTS.
    assert all(sorted(p) == c for p, c in points.select("present", "concepts").iter_rows())
    assert points["present"].list.len().max() < PAGE_CONCEPTS
    assert np.isfinite(found.points["x"].to_numpy()).all() and found.points["x"].n_unique() > 100
    counts = points["present"].explode().value_counts()
    assert dict(found.concepts.select("feature_id", "n_docs").iter_rows()) == dict(counts.iter_rows())
    # The documents of a topic sit nearer each other than the rest: UMAP kept the planted structure.
    xy = found.points.select("x", "y").to_numpy()
    same = points["topic"].to_numpy()[:, None] == points["topic"].to_numpy()[None, :]
    distance = np.linalg.norm(xy[:, None] - xy[None, :], axis=2)
    assert distance[same].mean() < 0.5 * distance[~same].mean()


def test_colours_by_a_clustering_or_a_concepts_activation(topics_db, tmp_path):
    db = copy_database(topics_db, tmp_path / "colours.duckdb")
    with Store.open(db) as store:
        clusters = cluster_documents(store, "c", concepts=[10, 11, 20, 21], method="spectral", k=2)
        by_cluster = explore_map(store, "c", color_by=f"cluster:{clusters.analysis_id}")
        by_concept = explore_map(store, "c", color_by="concept:10", concepts=[10, 20, 30, 40])
    assigned = dict(clusters.assignments.select("doc_id", "cluster").iter_rows())
    expected = {d: None if c is None else f"cluster {c}" for d, c in assigned.items()}
    assert dict(by_cluster.points.select("doc_id", "color").iter_rows()) == expected
    assert by_concept.color_kind == "values" and by_concept.representation == "concepts 10, 20, 30, 40"
    has_10 = by_concept.points.filter(pl.col("present").list.contains(10))
    assert (has_10["color"] > 0).all() and by_concept.points.filter(~pl.col("present").list.contains(10))[
        "color"
    ].max() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--about", "sport", "--dense"], "give at most one of --about, --concepts and --dense"),
        (["--color-by", "genre"], "--color-by genre: no embedded document of corpus 'c' has that meta column"),
        (["--color-by", "cluster:999"], "analysis 999 does not exist"),
        (["--color-by", "concept:99999"], "--color-by concept:99999: this SAE has concepts 0..63"),
        (["--html", "{tmp}/map.txt"], "--html must end in .html"),
        (["--concepts", "1,x"], "--concepts takes comma-separated concept ids"),
    ],
)
def test_bad_input_is_one_line(topics_db, tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as done:
        main(["explore", "c", *[a.format(tmp=tmp_path) for a in args], "--db", str(topics_db)])
    err = capsys.readouterr().err
    assert done.value.code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not list(tmp_path.glob("*.html")) and not list(tmp_path.glob("*.txt"))


def test_explore_command_writes_the_page(topics_db, tmp_path, capsys):
    page = tmp_path / "map.html"
    with pytest.raises(SystemExit) as done:
        main(["explore", "c", "--color-by", "topic", "--html", str(page), "--db", str(topics_db), "--json"])
    assert done.value.code == 0
    result = json.loads(capsys.readouterr().out)
    assert (
        result["points"] == 120 and result["html"] == str(page.resolve()) and result["bytes"] == len(page.read_bytes())
    )
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!doctype html>") and "<script src" not in html and "<link" not in html
