"""Concept-correlation mining on a real DuckDB store with known concept vectors, against hand-computed
and scipy statistics."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from scipy import stats

from saeembed.analysis.correlate import cooccurrence, correlate_column, correlate_pairs, npmi
from saeembed.errors import SaeembedError
from saeembed.store import Store
from tests.test_diff import build_store

# 20 documents: concepts 1 and 2 together in 6, 1 alone in 1, 2 alone in 1; 3 and 4 together in 5 but
# always on the same token; 9 in every document; 5 in the first 10 (meta half = 'first').
DOCS = [
    (
        f"doc {i}",
        {"half": "first" if i < 10 else "second", "score": i},
        sorted(
            {9}
            | ({1, 2} if i < 6 else set())
            | ({1} if i == 6 else set())
            | ({2} if i == 7 else set())
            | ({3, 4} if 10 <= i < 15 else set())
            | ({5} if i < 10 else set())
        ),
    )
    for i in range(20)
]
PEAK = {1: 1, 2: 2, 3: 4, 4: 4, 5: 5, 9: 9}


@pytest.fixture()
def store_path(tmp_path):
    return build_store(tmp_path / "corr.duckdb", {"c": DOCS}, peak=PEAK)


def test_cooccurrence_counts_match_a_dense_computation():
    rng = np.random.default_rng(0)
    dense = rng.random((50, 12)) < 0.3
    docs, features = np.nonzero(dense)
    for density in (0.0, 1.0):  # the sparse and the dense chunk paths
        import saeembed.analysis.correlate as module

        module.DENSE_DENSITY, saved = density, module.DENSE_DENSITY
        try:
            counts = cooccurrence(docs, features, 50, 12)
        finally:
            module.DENSE_DENSITY = saved
        assert (counts == dense.T.astype(int) @ dense.astype(int)).all()


def test_npmi_pairs_with_hand_computed_values_and_filters(store_path):
    with Store.open(store_path) as store:
        result = correlate_pairs(store, "c", min_npmi=0.3, min_count=2)
        stored = store.query("SELECT * FROM correlations WHERE analysis_id = $a", {"a": result.analysis_id})
    pairs = {(r["feature_a"], r["feature_b"]): r for r in result.pairs.to_dicts()}
    # 1 and 2: 7 and 7 documents of 20, 6 together.
    expected = np.log((6 / 20) / ((7 / 20) * (7 / 20))) / -np.log(6 / 20)
    row = pairs[(1, 2)]
    assert row["npmi"] == pytest.approx(expected) and (row["n_ab"], row["n_a"], row["n_b"]) == (6, 7, 7)
    assert row["p_b_given_a"] == pytest.approx(6 / 7) and row["same_token_share"] == 0.0
    assert row["example_doc_id"] is not None and row["rank"] == 1
    assert (3, 4) not in pairs  # always on the same token: one phenomenon seen twice
    assert all(9 not in key for key in pairs)  # present everywhere: NPMI 0
    assert npmi(np.array([20]), np.array([20]), np.array([20]), 20)[0] == 1.0
    assert stored.height == result.pairs.height


def test_pairs_with_near_identical_labels_are_dropped(store_path):
    with Store.open(store_path) as store:
        vector = [1.0, 0.0, 0.0]
        for feature_id in (1, 2):
            store.con.execute(
                "INSERT INTO features (sae_id, feature_id, method, model, label, run_id, embedding, embedding_model) "
                "VALUES (1, ?, 'tokens', 'm', ?, 1, ?, 'e')",
                [feature_id, f"label {feature_id}", vector],
            )
        result = correlate_pairs(store, "c", min_npmi=0.3, min_count=2)
        assert (1, 2) not in set(zip(result.pairs["feature_a"], result.pairs["feature_b"], strict=True))
        kept = correlate_pairs(store, "c", min_npmi=0.3, min_count=2, max_label_sim=1.0)
        row = kept.pairs.filter((pl.col("feature_a") == 1) & (pl.col("feature_b") == 2)).row(0, named=True)
        assert row["label_similarity"] == pytest.approx(1.0) and row["label_a"] == "label 1"


def test_where_restricts_the_documents_and_bad_predicates_write_nothing(store_path):
    with Store.open(store_path) as store:
        second = correlate_pairs(store, "c", where="meta->>'half' = 'second'", min_npmi=0.3, min_count=2)
        assert second.n_docs == 10 and (1, 2) not in set(
            zip(second.pairs["feature_a"], second.pairs["feature_b"], strict=True)
        )
        before = store.query("SELECT count(*) AS n FROM analyses")["n"][0]
        with pytest.raises(SaeembedError, match="may not contain a subquery"):
            correlate_pairs(store, "c", where="doc_id IN (SELECT 1)")
        with pytest.raises(SaeembedError, match="--min-npmi must be between -1 and 1"):
            correlate_pairs(store, "c", min_npmi=3)
        assert store.query("SELECT count(*) AS n FROM analyses")["n"][0] == before


def test_a_categorical_column_matches_scipy_chi_square(store_path):
    with Store.open(store_path) as store:
        result = correlate_column(store, "c", "half", min_count=2)
    assert (result.kind, result.n_docs) == ("categorical", 20)
    row = result.table.filter(pl.col("feature_id") == 5).row(0, named=True)
    table = [[10, 0], [0, 10]]  # concept 5 present / absent × first / second
    chi2, p_value, _, _ = stats.chi2_contingency(table, correction=False)
    assert row["p_value"] == pytest.approx(p_value) and row["statistic"] == pytest.approx(np.sqrt(chi2 / 20))
    assert row["level"] == "first" and row["rank"] == 1
    assert 9 not in result.table["feature_id"].to_list() or result.table.filter(pl.col("feature_id") == 9)["p_value"][
        0
    ] == pytest.approx(1.0)


def test_a_numeric_column_matches_scipy_spearman(store_path):
    with Store.open(store_path) as store:
        result = correlate_column(store, "c", "score", min_count=2)
        detail = store.query("SELECT feature_id, statistic, p_value FROM column_correlations")
    assert result.kind == "numeric"
    scores = np.arange(20)
    for feature_id, members in ((5, range(10)), (1, range(7))):
        presence = np.isin(scores, list(members)).astype(float)
        expected = stats.spearmanr(scores, presence)
        row = detail.filter(pl.col("feature_id") == feature_id).row(0, named=True)
        assert row["statistic"] == pytest.approx(expected.statistic) and row["p_value"] == pytest.approx(
            expected.pvalue
        )


def test_column_errors(store_path):
    with Store.open(store_path) as store:
        with pytest.raises(SaeembedError, match="no document of 'c' has 'nope' in its meta"):
            correlate_column(store, "c", "nope")
        store.con.execute("UPDATE documents SET meta = json_object('same', 'x')")
        with pytest.raises(SaeembedError, match="a single value"):
            correlate_column(store, "c", "same")


def test_results_are_json_serialisable(store_path):
    with Store.open(store_path) as store:
        result = correlate_pairs(store, "c", min_npmi=0.3, min_count=2)
    json.dumps(result.pairs.to_dicts())


def test_correlate_flow_and_command(prefect_harness, store_path):
    from saeembed_flows.correlate import correlate_flow

    pairs = correlate_flow(corpus="c", db=str(store_path), min_npmi=0.3, min_count=2)
    assert pairs["pairs"][0]["feature_a"] == 1 and pairs["n_docs"] == 20
    column = correlate_flow(corpus="c", with_column="half", db=str(store_path), min_count=2)
    assert column["kind"] == "categorical" and column["table"][0]["feature_id"] == 5
    with Store.open(store_path, read_only=True) as store:
        kinds = store.query("SELECT kind FROM analyses ORDER BY analysis_id")["kind"].to_list()
    assert kinds == ["correlate", "correlate-column"]
