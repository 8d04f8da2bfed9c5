"""Concept-filtered clustering on real DuckDB stores with known concept vectors: Jaccard against hand-computed
values, HDBSCAN and spectral clustering on two obvious groups with noise, documents without the selected
concepts, the stored rows, the error messages, the HTML report and the Prefect flow."""

from __future__ import annotations

import json
import re

import numpy as np
import polars as pl
import pytest
from scipy import sparse

from saeembed.analysis.cluster import (
    MAX_DOCUMENTS,
    cluster_documents,
    jaccard_distances,
    renumber,
)
from saeembed.errors import SaeembedError
from saeembed.reports.html import cluster_report
from saeembed.storage.store import Store
from tests.support import CLUSTER_DOCS as DOCS
from tests.support import CLUSTER_LABELS as LABELS
from tests.support import SPORTS, labelled_store

ALL = list(range(1, 9))


@pytest.fixture()
def store_path(tmp_path):
    return labelled_store(tmp_path / "cluster.duckdb")


def kinds(store: Store) -> dict[int, str]:
    return dict(store.query("SELECT doc_id, meta->>'kind' AS kind FROM documents").iter_rows())


def clusters_by_kind(result, doc_kinds: dict[int, str]) -> dict[str, set]:
    found: dict[str, set] = {}
    for doc_id, cluster in result.assignments.select("doc_id", "cluster").iter_rows():
        found.setdefault(doc_kinds[doc_id], set()).add(cluster)
    return found


# -- distances ---------------------------------------------------------------------------------------


def test_jaccard_distances_match_hand_computed_values():
    # Rows: {a, b, c}, {a, b}, {b, c}, {d}.
    rows = [[1, 1, 1, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]]
    distances = jaccard_distances(sparse.csr_matrix(np.array(rows, dtype=np.float32)))
    expected = np.array(
        [
            [0, 1 - 2 / 3, 1 - 2 / 3, 1],
            [1 - 2 / 3, 0, 1 - 1 / 3, 1],
            [1 - 2 / 3, 1 - 1 / 3, 0, 1],
            [1, 1, 1, 0],
        ]
    )
    np.testing.assert_allclose(distances, expected, atol=1e-6)
    assert distances.dtype == np.float32


def test_jaccard_distances_equal_scipy_on_random_sets():
    from scipy.spatial.distance import pdist, squareform

    rng = np.random.default_rng(0)
    dense = rng.random((40, 12)) < 0.3
    dense[:, 0] = True  # no empty row
    distances = jaccard_distances(sparse.csr_matrix(dense.astype(np.float32)))
    np.testing.assert_allclose(distances, squareform(pdist(dense, "jaccard")), atol=1e-6)


def test_renumber_orders_clusters_by_size_and_keeps_noise():
    assert renumber(np.array([3, 3, -1, 0, 3, 0, 5])).tolist() == [0, 0, -1, 1, 0, 1, 2]


# -- clustering --------------------------------------------------------------------------------------


def test_hdbscan_finds_the_two_groups_keeps_noise_and_leaves_out_documents_without_concepts(store_path):
    with Store.open(store_path) as store:
        result = cluster_documents(store, "c", concepts=ALL, min_cluster_size=4)
        doc_kinds = kinds(store)
        stored = store.query(
            "SELECT cluster, has_concepts, x IS NOT NULL AS mapped, count(*) AS n FROM clusters "
            "WHERE analysis_id = $a GROUP BY ALL ORDER BY cluster NULLS LAST",
            {"a": result.analysis_id},
        )
        summaries = store.query(
            "SELECT cluster, size, top_concepts, typical_docs FROM cluster_summaries WHERE analysis_id = $a "
            "ORDER BY cluster",
            {"a": result.analysis_id},
        )
        analysis = store.query(
            "SELECT kind, params, inputs FROM analyses WHERE analysis_id = $a", {"a": result.analysis_id}
        )
    by_kind = clusters_by_kind(result, doc_kinds)
    assert len(by_kind["sports"]) == 1 and len(by_kind["finance"]) == 1
    assert by_kind["sports"] != by_kind["finance"] and by_kind["sports"] | by_kind["finance"] == {0, 1}
    assert by_kind["other"] == {-1}
    assert by_kind["alone"] == {None}
    assert (result.method, result.representation, result.n_docs, result.n_without_concepts) == (
        "hdbscan",
        "concepts",
        20,
        2,
    )
    assert (result.n_clusters, result.min_cluster_size) == (2, 4)
    assert result.concepts["feature_id"].to_list() == ALL
    assert result.concepts["label"].to_list() == [LABELS[i] for i in ALL]
    # Concept 1 is in 7 of the 18 documents that have a selected concept.
    assert result.concepts["freq"][0] == pytest.approx(7 / 18)
    assert stored.rows() == [(-1, True, True, 2), (0, True, True, 8), (1, True, True, 8), (None, False, False, 2)]
    assert summaries["cluster"].to_list() == [-1, 0, 1] and summaries["size"].to_list() == [2, 8, 8]
    assert json.loads(analysis["params"][0])["concepts"] == ALL
    assert analysis["kind"][0] == "cluster" and json.loads(analysis["inputs"][0])["n_clustered"] == 18

    sports = result.summaries.filter(pl.col("cluster") == next(iter(by_kind["sports"]))).row(0, named=True)
    top = {c["feature_id"]: c for c in sports["top_concepts"]}
    # Concept 2: in 7 of the 8 sports documents and none of the 10 other clustered ones.
    assert top[2]["freq_in"] == pytest.approx(7 / 8) and top[2]["freq_out"] == 0.0
    assert top[2]["delta"] == pytest.approx(7 / 8)
    assert {c["feature_id"] for c in sports["top_concepts"][:3]} == {1, 2, 3}
    # The most typical sports documents carry all of {1, 2, 3} (closest on average to the others).
    typical = [d["doc_id"] for d in sports["typical_docs"]]
    full = {doc_id for doc_id, (_, _, c) in zip(sorted(doc_kinds), DOCS, strict=True) if c == [1, 2, 3, 9]}
    assert set(typical[:5]) == full
    assert sports["typical_docs"][0]["text"] in SPORTS
    stored_sports = summaries.filter(pl.col("cluster") == sports["cluster"]).row(0, named=True)
    assert json.loads(stored_sports["typical_docs"]) == typical
    assert json.loads(stored_sports["top_concepts"])[0]["feature_id"] == sports["top_concepts"][0]["feature_id"]


def test_spectral_with_k_splits_the_groups_and_assigns_every_clustered_document(store_path):
    with Store.open(store_path) as store:
        result = cluster_documents(store, "c", concepts=[1, 2, 3, 4, 5, 6], method="spectral", k=2, mapped=False)
        by_kind = clusters_by_kind(result, kinds(store))
    assert by_kind["sports"] in ({0}, {1}) and by_kind["finance"] == {0, 1} - by_kind["sports"]
    assert by_kind["other"] == {None} and by_kind["alone"] == {None}
    assert (result.n_clusters, result.min_cluster_size, result.n_without_concepts) == (2, None, 4)
    assert result.assignments["x"].null_count() == result.assignments.height


def test_where_narrows_the_documents(store_path):
    with Store.open(store_path) as store:
        result = cluster_documents(
            store,
            "c",
            concepts=ALL,
            min_cluster_size=4,
            mapped=False,
            where="meta->>'kind' IN ('sports', 'finance', 'alone')",
        )
        only_sports = cluster_documents(
            store, "c", concepts=ALL, min_cluster_size=4, mapped=False, where="meta->>'kind' = 'sports'"
        )
    assert (result.n_docs, result.n_without_concepts, result.n_clusters) == (18, 2, 2)
    assert result.summaries["size"].to_list() == [8, 8]
    # HDBSCAN does not call one group a clustering (allow_single_cluster is off): all of it is noise.
    assert (only_sports.n_clusters, only_sports.summaries["cluster"].to_list()) == (0, [-1])


def test_concepts_selected_by_about_with_minilm(store_path):
    with Store.open(store_path) as store:
        result = cluster_documents(store, "c", about="sports", n_concepts=3, method="spectral", k=2)
        both = cluster_documents(store, "c", about="sports; stock markets and banking", n_concepts=6)
        doc_kinds = kinds(store)
    assert set(result.concepts["feature_id"].to_list()) == {1, 2, 3}
    assert set(both.concepts["feature_id"].to_list()) == {1, 2, 3, 4, 5, 6}
    both_by_kind = clusters_by_kind(both, doc_kinds)
    assert len(both_by_kind["sports"]) == 1 and both_by_kind["sports"] | both_by_kind["finance"] == {0, 1}
    assert result.concepts["similarity"].is_sorted(descending=True)
    assert result.concepts["similarity"].min() > 0.2
    by_kind = clusters_by_kind(result, doc_kinds)
    assert by_kind["sports"] == {0, 1}  # spectral splits the only group in two: full and partial sets
    assert by_kind["finance"] == by_kind["other"] == by_kind["alone"] == {None}


def test_an_llm_expands_about_into_keyphrases_searched_as_facets(store_path):
    import json as json_module

    from saeembed.concepts.llm import CachedChat, OpenAICompatible
    from tests.support import ChatServer, completion, last_user_text

    answers = iter(
        [
            {"keyphrases": ["football matches", "stock market shares", "Football  matches", "a;b"]},
            "I would group them by subject.",
        ]
    )

    def script(number, request):
        assert 'group texts by this aspect: "subject"' in last_user_text(request)
        answer = next(answers)
        return completion(answer if isinstance(answer, str) else json_module.dumps(answer))

    server = ChatServer(script)
    try:
        with Store.open(store_path) as store:
            chat = CachedChat(OpenAICompatible(server.base_url, "test-model", retry_base_delay=0.01), store)
            expanded = cluster_documents(store, "c", about="subject", n_concepts=6, chat=chat)
            chat.backend.model = "another-model"  # a new cache key: the unreadable answer comes next
            unexpanded = cluster_documents(store, "c", about="subject", n_concepts=6, chat=chat)
            recorded = store.query("SELECT inputs->'keyphrases' AS k FROM analyses ORDER BY analysis_id")["k"]
    finally:
        server.close()
    assert expanded.keyphrases == ("football matches", "stock market shares", "a,b")
    # Each facet's best concept comes first, in facet order: football (1; also the best for "subject"),
    # stock market (4), then the letter e (9) for "a,b"; then each facet's second best.
    assert expanded.concepts["feature_id"].to_list()[:3] == [1, 4, 9]
    assert unexpanded.keyphrases == ()  # an unreadable answer: the clustering goes on with --about alone
    assert [json_module.loads(k) for k in recorded] == [list(expanded.keyphrases), []]


def test_dense_clusters_the_same_documents_on_sentence_embeddings(store_path):
    with Store.open(store_path) as store:
        sae = cluster_documents(store, "c", concepts=[1, 2, 3, 4, 5, 6], method="spectral", k=2)
        dense = cluster_documents(store, "c", concepts=[1, 2, 3, 4, 5, 6], method="spectral", k=2, dense=True)
        by_kind = clusters_by_kind(dense, kinds(store))
        embedded = store.query("SELECT count(*) AS n FROM doc_embeddings")["n"][0]
        inputs = json.loads(
            store.query("SELECT inputs FROM analyses WHERE analysis_id = $a", {"a": dense.analysis_id})["inputs"][0]
        )
    assert dense.representation == "sentence-transformers/all-MiniLM-L6-v2" == inputs["representation"]
    assert dense.assignments.filter("has_concepts")["doc_id"].to_list() == (
        sae.assignments.filter("has_concepts")["doc_id"].to_list()
    )
    assert embedded == 16  # only the clustered documents were embedded
    # MiniLM separates sports from finance news as well.
    assert len(by_kind["sports"]) == 1 and len(by_kind["finance"]) == 1 and by_kind["sports"] != by_kind["finance"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "exactly one of --about TEXT or --concepts"),
        ({"about": "sports", "concepts": [1]}, "exactly one of --about TEXT or --concepts"),
        ({"concepts": []}, "--concepts is empty"),
        ({"about": "  "}, "--about is empty"),
        ({"concepts": [1], "method": "spectral"}, "spectral clustering needs --k"),
        ({"concepts": [1], "k": 3}, "--k is for spectral clustering"),
        ({"concepts": [1], "method": "kmeans"}, "unknown --method 'kmeans'"),
        ({"concepts": [1], "method": "spectral", "k": 2, "min_cluster_size": 4}, "--min-cluster-size is for HDBSCAN"),
        ({"concepts": [70]}, "not concepts of this SAE (feature ids run 0 to 63)"),
        ({"concepts": [10, 11]}, "none of the 20 documents has any of the 2 selected concepts"),
        ({"concepts": [1], "where": "meta->>'kind' = 'nothing'"}, "no documents to cluster: corpus 'c' with that"),
        ({"concepts": [1], "where": "1; DROP TABLE documents"}, "--where must be a single expression"),
        ({"concepts": [7]}, "only 1 documents have a selected concept, fewer than --min-cluster-size 5"),
        ({"concepts": [7, 8], "method": "spectral", "k": 2}, "too few for --k 2 clusters"),
        ({"about": "sports", "n_concepts": 0}, "--n-concepts must be at least 1, got 0"),
    ],
)
def test_bad_input_gets_a_clear_message(store_path, options, message):
    with Store.open(store_path) as store, pytest.raises(SaeembedError, match=re.escape(message)):
        cluster_documents(store, "c", **options)


def test_too_many_documents_names_where(store_path, monkeypatch):
    import saeembed.analysis.cluster as cluster

    monkeypatch.setattr(cluster, "MAX_DOCUMENTS", 10)
    with Store.open(store_path) as store, pytest.raises(SaeembedError, match="at most 10 are clustered.*--where"):
        cluster_documents(store, "c", concepts=ALL)
    assert MAX_DOCUMENTS >= 10_000


# -- report and flow ---------------------------------------------------------------------------------


def test_html_report_is_self_contained_with_map_and_clusters(store_path):
    with Store.open(store_path) as store:
        result = cluster_documents(store, "c", concepts=ALL, min_cluster_size=4)
    page = cluster_report(
        "saeembed cluster c <&>",
        {"analysis_id": result.analysis_id},
        result.concepts,
        result.summaries,
        result.assignments,
    )
    assert "http" not in page and "src=" not in page and "<script" not in page
    assert "saeembed cluster c &lt;&amp;&gt;" in page
    assert page.count("<circle") == 18  # every clustered document on the map
    assert page.count("fill='#b0b0b0'") == 2  # noise in grey
    assert "Cluster 0: 8 documents (40.0%)" in page and "Noise: 2 documents (10.0%)" in page
    assert "2 of 20 documents have none of the selected concepts" in page
    assert LABELS[4] in page and SPORTS[0] in page


def test_cluster_flow_stores_the_clustering_and_writes_the_report(prefect_harness, store_path, tmp_path):
    from saeembed_flows.cluster import cluster_flow

    report = tmp_path / "out" / "cluster.html"
    summary = cluster_flow(corpus="c", concepts=ALL, min_cluster_size=4, db=str(store_path), report=str(report))
    assert (summary["method"], summary["n_docs"], summary["n_without_concepts"], summary["n_clusters"]) == (
        "hdbscan",
        20,
        2,
        2,
    )
    assert [row["size"] for row in summary["summaries"]] == [8, 8, 2]
    assert "<svg" in report.read_text()
    json.dumps(summary)  # JSON-able
    with Store.open(store_path, read_only=True) as store:
        rows = store.query("SELECT count(*) AS n FROM clusters WHERE analysis_id = $a", {"a": summary["analysis_id"]})
    assert rows["n"][0] == 20
