"""Concept-correlation mining on real DuckDB stores with known concept vectors, against hand-computed NPMI,
a dense co-occurrence count, and scipy's statistics."""

from __future__ import annotations

import itertools
import json

import numpy as np
import polars as pl
import pytest
from scipy import stats

import saeembed.analysis.correlate as correlate
from saeembed.analysis.correlate import correlate_column, correlate_pairs, count_pairs, npmi
from saeembed.errors import SaeembedError
from saeembed.storage.store import Store
from saeembed.storage.synthetic import rewrite_run, synthetic_corpus, synthetic_sae, write_concepts
from tests.support import CORRELATE_DOCS as DOCS
from tests.support import CORRELATE_PEAK as PEAK
from tests.support import build_store


@pytest.fixture()
def store_path(tmp_path):
    return build_store(tmp_path / "corr.duckdb", {"c": DOCS}, peak=PEAK)


def pairs_of(result: correlate.CorrelationResult) -> set[tuple[int, int]]:
    return set(zip(result.pairs["feature_a"].to_list(), result.pairs["feature_b"].to_list(), strict=True))


def add_label(store: Store, feature_id: int, label: str, vector: list[float] | None, model: str | None) -> None:
    store.query(
        "INSERT INTO features (sae_id, feature_id, method, model, label, run_id, embedding, embedding_model) "
        "VALUES (1, ?, 'tokens', 'm', ?, 1, ?, ?)",
        [feature_id, label, vector, model],
    )


# -- counting ---------------------------------------------------------------------------------------


def random_vectors(rng: np.random.Generator, n_docs: int, n_concepts: int) -> np.ndarray:
    """Concepts of long-tailed frequency, with correlated triples planted (b ≈ a, c often with a)."""
    present = rng.random((n_docs, n_concepts)) < rng.random(n_concepts) ** 2
    for first in range(0, n_concepts - 3, 7):
        present[:, first + 1] = present[:, first] ^ (rng.random(n_docs) < 0.01)
        present[:, first + 2] |= present[:, first] & (rng.random(n_docs) < 0.5)
    return present


def expected_pairs(present: np.ndarray, min_npmi: float, min_count: int) -> dict[tuple[int, int], int]:
    together = present.T.astype(np.int64) @ present.astype(np.int64)
    n = np.diag(together)
    a, b = np.nonzero(np.triu(together >= min_count, k=1))
    keep = npmi(together[a, b], n[a], n[b], present.shape[0]) >= min_npmi
    return {(int(i), int(j)): int(together[i, j]) for i, j in zip(a[keep], b[keep], strict=True)}


EVERY_THRESHOLD = list(itertools.product((-1.0, 0.0, 0.3, 0.6, 1.0), (1, 5)))


@pytest.mark.parametrize(
    ("n_docs", "layout", "thresholds"),
    [
        (300, {}, EVERY_THRESHOLD),  # one chunk, sparse products
        # dense products, many chunks, narrow blocks
        (300, {"DENSE_PRODUCT": 0.0, "CHUNK_NNZ": 50, "BLOCKS": 3, "MAX_BLOCK_WIDTH": 4}, EVERY_THRESHOLD),
        (300, {"CHUNK_NNZ": 7, "BLOCKS": 5, "MAX_BLOCK_WIDTH": 3}, [(0.3, 1)]),  # chunks of about one document
        # frequent concepts screened on the sample, then recounted; the rare ones counted everywhere
        (40_000, {"CHUNK_NNZ": 50_000}, [(0.0, 5), (0.3, 5), (0.6, 5)]),
        (40_000, {"DENSE_PRODUCT": 0.0, "CHUNK_NNZ": 200_000, "BLOCKS": 4, "MAX_BLOCK_WIDTH": 16}, [(0.6, 5)]),
    ],
)
def test_count_pairs_finds_exactly_the_pairs_of_a_dense_count(monkeypatch, n_docs, layout, thresholds):
    for name, value in layout.items():
        monkeypatch.setattr(correlate, name, value)
    recounted = []
    recount = correlate._recount
    monkeypatch.setattr(correlate, "_recount", lambda *args: recounted.append(1) or recount(*args))
    rng = np.random.default_rng(n_docs)
    present = random_vectors(rng, n_docs, 40 if n_docs < 1000 else 60)
    docs, features = np.nonzero(present)
    order = rng.permutation(docs.size)  # any order of rows is accepted
    for min_npmi, min_count in thresholds:
        counts = count_pairs(docs[order], features[order], n_docs, min_npmi=min_npmi, min_count=min_count)
        expected = expected_pairs(present, min_npmi, min_count)
        pairs = zip(counts.feature_a.tolist(), counts.feature_b.tolist(), strict=True)
        found = dict(zip(pairs, counts.n_ab.tolist(), strict=True))
        assert found == expected and counts.total == len(expected)
        n = present.sum(axis=0)
        assert (counts.n_a == n[counts.feature_a]).all() and (counts.n_b == n[counts.feature_b]).all()
        assert counts.npmi.tolist() == pytest.approx(npmi(counts.n_ab, counts.n_a, counts.n_b, n_docs).tolist())
        assert (np.diff(counts.npmi) <= 1e-12).all()  # best first
    assert bool(recounted) == (n_docs > 1000)  # the screen is used only where it can exclude pairs


def test_npmi_bound_and_thresholds():
    # NPMI never exceeds log max(p) / log min(p), reached when the rarer concept always comes with the other.
    n_docs, n_a, n_b = 1000, 400, 50
    assert npmi(np.array([n_b]), n_a, n_b, n_docs)[0] == pytest.approx(np.log(n_a / n_docs) / np.log(n_b / n_docs))
    # least_count is where NPMI crosses the threshold.
    least = correlate.least_count(np.array([n_a]), np.array([n_b]), n_docs, 0.3, 1)[0]
    assert npmi(np.array([least]), n_a, n_b, n_docs)[0] == pytest.approx(0.3)
    assert npmi(np.array([20]), np.array([20]), np.array([20]), 20)[0] == 1.0  # both in every document


# -- pairs on a store -------------------------------------------------------------------------------


def test_npmi_pairs_with_hand_computed_values_and_filters(store_path):
    with Store.open(store_path) as store:
        result = correlate_pairs(store, "c", min_npmi=0.3, min_count=2)
        stored = store.query(
            "SELECT * FROM correlations WHERE analysis_id = $a ORDER BY rank", {"a": result.analysis_id}
        )
        analysis = store.query(
            "SELECT kind, params, inputs FROM analyses WHERE analysis_id = $a", {"a": result.analysis_id}
        )
    assert result.n_docs == 20
    row = result.pairs.row(0, named=True)
    # 1 and 2: in 7 and 7 documents of 20, together in 6.
    assert (row["feature_a"], row["feature_b"], row["n_ab"], row["n_a"], row["n_b"]) == (1, 2, 6, 7, 7)
    assert row["npmi"] == pytest.approx(np.log((6 / 20) / ((7 / 20) * (7 / 20))) / -np.log(6 / 20))
    assert row["p_b_given_a"] == pytest.approx(6 / 7) and row["p_a_given_b"] == pytest.approx(6 / 7)
    assert row["same_token_share"] == 0.0 and row["rank"] == 1
    assert row["example_doc_id"] in store_doc_ids(store_path, range(6))  # a document with both
    assert (3, 4) not in pairs_of(result)  # always on the same token: one phenomenon seen twice
    assert all(9 not in pair for pair in pairs_of(result))  # in every document: NPMI 0 with anything
    assert stored.drop("analysis_id").to_dicts() == result.pairs.select(stored.drop("analysis_id").columns).to_dicts()
    assert analysis["kind"][0] == "correlate" and json.loads(analysis["inputs"][0])["n_docs"] == 20
    assert json.loads(analysis["params"][0])["min_npmi"] == 0.3


def store_doc_ids(store_path, positions) -> set[int]:
    with Store.open(store_path, read_only=True) as store:
        ids = store.query("SELECT doc_id FROM documents ORDER BY doc_id")["doc_id"].to_list()
    return {ids[i] for i in positions}


def test_every_pair_of_the_example_against_a_direct_computation(store_path):
    with Store.open(store_path) as store:
        result = correlate_pairs(store, "c", min_npmi=-1, min_count=1, max_same_token=1.0, top=100)
    present = np.zeros((20, 10), dtype=bool)
    for i, (_, _, features) in enumerate(DOCS):
        present[i, features] = True
    expected = expected_pairs(present, -1.0, 1)
    assert {pair: n for pair, n in zip(pairs_of_rows(result), result.pairs["n_ab"].to_list(), strict=True)} == expected
    row = result.pairs.filter((pl.col("feature_a") == 3) & (pl.col("feature_b") == 4)).row(0, named=True)
    assert row["same_token_share"] == 1.0 and row["npmi"] == pytest.approx(
        np.log((5 / 20) / ((5 / 20) * (5 / 20))) / -np.log(5 / 20)
    )
    assert result.candidates == len(expected)


def pairs_of_rows(result: correlate.CorrelationResult) -> list[tuple[int, int]]:
    return list(zip(result.pairs["feature_a"].to_list(), result.pairs["feature_b"].to_list(), strict=True))


def test_a_planted_pair_comes_first(tmp_path):
    rng = np.random.default_rng(3)
    docs = []
    for i in range(400):
        features = {int(f) for f in np.flatnonzero(rng.random(40) < np.linspace(0.02, 0.5, 40)) + 10}
        if i % 25 == 0:  # 4%: concepts 60 and 61 always together, nowhere else
            features |= {60, 61}
        docs.append((f"doc {i}", {}, sorted(features)))
    path = build_store(tmp_path / "planted.duckdb", {"p": docs}, peak={60: 3, 61: 7})
    with Store.open(path) as store:
        result = correlate_pairs(store, "p")
    assert pairs_of_rows(result)[0] == (60, 61)
    assert result.pairs.row(0, named=True)["npmi"] == pytest.approx(1.0)
    assert result.pairs["npmi"].min() >= 0.6 and result.pairs["n_ab"].min() >= 5


def test_pair_details_of_long_documents_need_no_more_than_their_rows(tmp_path):
    """~720 concepts in every document: pairing each document's concepts with one another (half a million
    rows a document) would overflow the memory limit set here, with spilling to disk forbidden."""
    rng = np.random.default_rng(5)
    n_docs, dense = 300, 800
    planted = np.arange(n_docs) % 10 == 0  # concepts 800 and 801 together in 30 documents, nowhere else
    present = [np.flatnonzero(rng.random(dense) < 0.9) for _ in range(n_docs)]  # independent of one another
    present = [np.append(f, [dense, dense + 1]) if p else f for f, p in zip(present, planted, strict=True)]
    counts = np.array([f.size for f in present])
    features = np.concatenate(present).astype(np.int32)
    argmax = rng.integers(0, 4, features.size).astype(np.int32)
    argmax[features == dense + 1] = np.where(np.arange(planted.sum()) < 12, 7, 8)  # 800 always peaks on 7
    argmax[features == dense] = 7
    max_act = rng.random(features.size, dtype=np.float32)
    max_act[features == dense] = np.linspace(1, 2, planted.sum(), dtype=np.float32)  # strongest in the last
    max_act[features == dense + 1] = 1.0
    with Store.open(tmp_path / "long.duckdb") as store:
        run, doc_ids = synthetic_corpus(
            store, "long", [f"doc {i}" for i in range(n_docs)], sae_id=synthetic_sae(store, 1024)
        )
        write_concepts(store, run, doc_ids, counts, features, max_act, argmax_pos=argmax)
        store.con.execute("SET memory_limit = '256MB'")
        store.con.execute("SET max_temp_directory_size = '0B'")
        result = correlate_pairs(store, "long", max_same_token=1.0)
    row = result.pairs.row(0, named=True)
    assert (row["feature_a"], row["feature_b"], row["n_ab"]) == (dense, dense + 1, 30)
    assert row["same_token_share"] == pytest.approx(12 / 30)
    assert row["example_doc_id"] == doc_ids[planted][-1]


def test_rows_stored_out_of_document_order_give_the_same_pairs(store_path):
    with Store.open(store_path) as store:
        before = correlate_pairs(store, "c", min_npmi=-1, min_count=1, max_same_token=1.0, top=100)
        rewrite_run(store, 1, lambda rows: rows.sample(fraction=1.0, shuffle=True, seed=0))
        after = correlate_pairs(store, "c", min_npmi=-1, min_count=1, max_same_token=1.0, top=100)
    assert after.pairs.drop("example_doc_id").to_dicts() == before.pairs.drop("example_doc_id").to_dicts()


class FakeEmbedder:
    """A sentence model that knows a few labels (the label filter's only use of one)."""

    model_id = "fake-model"
    dim = 2

    def encode(self, texts: list[str]) -> np.ndarray:
        vectors = {"sports": [1.0, 0.0], "football": [0.8, 0.6]}
        return np.asarray([vectors[t] for t in texts], dtype=np.float32).reshape(len(texts), 2)


def test_pairs_with_near_identical_labels_are_dropped(store_path):
    with Store.open(store_path) as store:
        add_label(store, 1, "sports", [1.0, 0.0, 0.0], "e")
        add_label(store, 2, "football", [1.0, 0.0, 0.0], "e")
        assert (1, 2) not in pairs_of(correlate_pairs(store, "c", min_npmi=0.3, min_count=2))
        kept = correlate_pairs(store, "c", min_npmi=0.3, min_count=2, max_label_sim=1.0)
        row = kept.pairs.filter((pl.col("feature_a") == 1) & (pl.col("feature_b") == 2)).row(0, named=True)
        assert row["label_similarity"] == pytest.approx(1.0)
        assert (row["label_a"], row["label_b"]) == ("sports", "football")
        # With a sentence model, labels embedded by another are embedded again: cos(sports, football) = 0.8.
        again = correlate_pairs(store, "c", min_npmi=0.3, min_count=2, max_label_sim=0.9, embedder=FakeEmbedder())
        row = again.pairs.filter(pl.col("feature_a") == 1).row(0, named=True)
        assert row["label_similarity"] == pytest.approx(0.8)
        assert (1, 2) not in pairs_of(correlate_pairs(store, "c", min_npmi=0.3, min_count=2, embedder=FakeEmbedder()))


def add_token_label(store: Store, feature_id: int, label: str, top_tokens: list[tuple[str, int]]) -> None:
    store.query(
        "INSERT INTO features (sae_id, feature_id, method, model, label, run_id, details, embedding, "
        "embedding_model) VALUES (1, ?, 'tokens', 'm', ?, 1, ?::JSON, [1.0, 0.0, 0.0], 'e')",
        [feature_id, label, json.dumps({"top_tokens": top_tokens, "top_words": [], "n_top_docs": 20})],
    )


def test_token_labels_are_compared_by_their_peak_tokens(store_path):
    with Store.open(store_path) as store:
        # Same words (same top documents), same label embedding, but different peak tokens: kept.
        add_token_label(store, 1, "recipe, violin", [(" saffron", 12), ("card", 8)])
        add_token_label(store, 2, "recipe, violin", [(" violin", 15), (" cello", 5)])
        row = correlate_pairs(store, "c", min_npmi=0.3, min_count=2).pairs.row(0, named=True)
        assert (row["feature_a"], row["feature_b"], row["label_similarity"]) == (1, 2, 0.0)
        # " Saffron" (3) and "saffron" (12) are one token, 15: cosine 12·15 / (√(12² + 8²)·15) ≈ 0.83.
        add_token_label(store, 2, "saffron", [(" Saffron", 3), ("saffron", 12)])
        dropped = correlate_pairs(store, "c", min_npmi=0.3, min_count=2)
        kept = correlate_pairs(store, "c", min_npmi=0.3, min_count=2, max_label_sim=1.0)
    assert (1, 2) not in pairs_of(dropped)
    expected = 12 * 15 / (np.hypot(12, 8) * np.hypot(15, 0))
    assert kept.pairs.row(0, named=True)["label_similarity"] == pytest.approx(expected)


def test_labels_without_comparable_embeddings_keep_the_pair(store_path):
    with Store.open(store_path) as store:
        add_label(store, 1, "sports", [1.0, 0.0, 0.0], "e")
        add_label(store, 2, "football", [1.0, 0.0], "other-model")  # another sentence model: not comparable
        result = correlate_pairs(store, "c", min_npmi=0.3, min_count=2)
    row = result.pairs.row(0, named=True)
    assert (row["feature_a"], row["feature_b"]) == (1, 2) and row["label_similarity"] is None
    assert row["label_b"] == "football"


def test_same_token_pairs_are_dropped_unless_allowed(store_path):
    with Store.open(store_path) as store:
        assert (3, 4) not in pairs_of(correlate_pairs(store, "c", min_npmi=0.3, min_count=2))
        allowed = correlate_pairs(store, "c", min_npmi=0.3, min_count=2, max_same_token=1.0)
    row = allowed.pairs.filter(pl.col("feature_a") == 3).row(0, named=True)
    assert (row["feature_b"], row["n_ab"], row["same_token_share"]) == (4, 5, 1.0)


def test_where_restricts_the_documents(store_path):
    with Store.open(store_path) as store:
        second = correlate_pairs(
            store, "c", where="meta->>'half' = 'second'", min_npmi=0.3, min_count=2, max_same_token=1
        )
    assert second.n_docs == 10 and pairs_of_rows(second) == [(3, 4)]
    row = second.pairs.row(0, named=True)
    # Among the 10 documents of the second half: 3 and 4 in 5, always together.
    assert (row["n_ab"], row["n_a"], row["n_b"]) == (5, 5, 5) and row["npmi"] == pytest.approx(1.0)


def test_bad_input_is_refused_before_anything_is_written(store_path):
    with Store.open(store_path) as store:
        before = store.query("SELECT count(*) AS n FROM analyses")["n"][0]
        with pytest.raises(SaeembedError, match="may not contain a subquery"):
            correlate_pairs(store, "c", where="doc_id IN (SELECT 1)")
        with pytest.raises(SaeembedError, match="--where failed"):
            correlate_pairs(store, "c", where="meta->>'half' > 3::DATE")
        with pytest.raises(SaeembedError, match="no embedded documents in corpus 'c' that satisfy --where"):
            correlate_pairs(store, "c", where="meta->>'half' = 'third'")
        with pytest.raises(SaeembedError, match="--min-npmi must be between -1 and 1"):
            correlate_pairs(store, "c", min_npmi=3)
        with pytest.raises(SaeembedError, match="--min-count must be at least 1, got 0"):
            correlate_pairs(store, "c", min_count=0)
        with pytest.raises(SaeembedError, match="no corpus named 'nope'"):
            correlate_pairs(store, "nope")
        assert store.query("SELECT count(*) AS n FROM analyses")["n"][0] == before


def test_no_pair_is_an_empty_result_not_an_error(store_path):
    with Store.open(store_path) as store:
        result = correlate_pairs(store, "c", min_count=1000)
    assert result.pairs.height == 0 and result.candidates == 0


# -- concepts against a column ----------------------------------------------------------------------


def test_a_categorical_column_matches_scipy_chi_square(store_path):
    with Store.open(store_path) as store:
        result = correlate_column(store, "c", "half", min_count=2)
        stored = store.query("SELECT * FROM column_correlations WHERE analysis_id = $a", {"a": result.analysis_id})
    assert (result.kind, result.n_docs) == ("categorical", 20)
    present = {f: [i for i, (_, _, features) in enumerate(DOCS) if f in features] for f in (1, 2, 3, 4, 5, 9)}
    for feature_id, docs in present.items():
        first = sum(i < 10 for i in docs)
        table = np.array([[first, len(docs) - first], [10 - first, 10 - (len(docs) - first)]])
        row = stored.filter(pl.col("feature_id") == feature_id).row(0, named=True)
        if feature_id == 9:  # in every document: nothing to test
            assert row["p_value"] == pytest.approx(1.0)
            continue
        chi2, p_value, _, _ = stats.chi2_contingency(table, correction=False)
        assert row["p_value"] == pytest.approx(p_value) and row["statistic"] == pytest.approx(np.sqrt(chi2 / 20))
        assert row["level"] == ("first" if first > len(docs) - first else "second")
        assert json.loads(row["detail"]) == {"first": first / 10, "second": (len(docs) - first) / 10}
    assert result.table.row(0, named=True)["feature_id"] == 5 and result.table["rank"][0] == 1
    stored = stored.sort("feature_id")
    assert stored["q_value"].to_list() == pytest.approx(stats.false_discovery_control(stored["p_value"].to_numpy()))


def test_a_numeric_column_matches_scipy_spearman(store_path):
    with Store.open(store_path) as store:
        result = correlate_column(store, "c", "score", min_count=2)
        stored = store.query(
            "SELECT feature_id, statistic, p_value, q_value, test FROM column_correlations ORDER BY feature_id"
        )
    assert result.kind == "numeric" and set(stored["test"]) == {"spearman"}
    scores = np.arange(20)
    for feature_id in (1, 2, 3, 4, 5):
        presence = np.array([feature_id in features for _, _, features in DOCS], dtype=float)
        expected = stats.spearmanr(scores, presence)
        row = stored.filter(pl.col("feature_id") == feature_id).row(0, named=True)
        assert row["statistic"] == pytest.approx(expected.statistic)
        assert row["p_value"] == pytest.approx(expected.pvalue)
    assert stored["q_value"].to_list() == pytest.approx(stats.false_discovery_control(stored["p_value"].to_numpy()))


def test_spearman_with_tied_values_matches_scipy(tmp_path):
    rng = np.random.default_rng(5)
    values = rng.integers(0, 4, 60)  # many ties
    docs = [
        (f"d{i}", {"v": int(v) / 2}, sorted({1} | ({2} if rng.random() < 0.3 + 0.1 * v else set())))
        for i, v in enumerate(values)
    ]
    path = build_store(tmp_path / "ties.duckdb", {"t": docs})
    with Store.open(path) as store:
        result = correlate_column(store, "t", "v", min_count=1)
    row = result.table.filter(pl.col("feature_id") == 2).row(0, named=True)
    presence = np.array([2 in features for _, _, features in docs], dtype=float)
    expected = stats.spearmanr(values, presence)
    assert row["statistic"] == pytest.approx(expected.statistic) and row["p_value"] == pytest.approx(expected.pvalue)


def test_column_where_restricts_the_documents(store_path):
    with Store.open(store_path) as store:
        result = correlate_column(store, "c", "score", where="meta->>'half' = 'first'", min_count=2)
    assert result.n_docs == 10
    row = result.table.filter(pl.col("feature_id") == 1).row(0, named=True)
    presence = np.array([i < 7 for i in range(10)], dtype=float)
    assert row["statistic"] == pytest.approx(stats.spearmanr(np.arange(10), presence).statistic)


def test_column_errors(store_path):
    with Store.open(store_path) as store:
        with pytest.raises(SaeembedError, match="no embedded document of 'c' has it in its meta"):
            correlate_column(store, "c", "nope")
        with pytest.raises(SaeembedError, match="--top must be at least 1, got 0"):
            correlate_column(store, "c", "half", top=0)
        store.query("UPDATE documents SET meta = json_object('same', 'x')")
        before = store.query("SELECT count(*) AS n FROM analyses")["n"][0]
        with pytest.raises(SaeembedError, match="every document has the same value"):
            correlate_column(store, "c", "same")
        mixed = "CASE WHEN doc_id % 2 = 0 THEN to_json(3) ELSE to_json('x') END"
        store.query(f"UPDATE documents SET meta = json_object('mixed', {mixed})")
        with pytest.raises(SaeembedError, match="mixes numbers with other values"):
            correlate_column(store, "c", "mixed")
        assert store.query("SELECT count(*) AS n FROM analyses")["n"][0] == before


def test_results_are_json_serialisable(store_path):
    with Store.open(store_path) as store:
        pairs = correlate_pairs(store, "c", min_npmi=0.3, min_count=2)
        column = correlate_column(store, "c", "half", min_count=2)
    for result in (pairs, column):
        json.dumps({k: v.to_dicts() if isinstance(v, pl.DataFrame) else v for k, v in result._asdict().items()})


def test_correlate_flow_and_command(prefect_harness, store_path):
    from saeembed_flows.correlate import correlate_flow

    pairs = correlate_flow(corpus="c", db=str(store_path), min_npmi=0.3, min_count=2)
    assert pairs["pairs"][0]["feature_a"] == 1 and pairs["n_docs"] == 20
    report = store_path.parent / "out" / "half.html"
    column = correlate_flow(corpus="c", with_column="half", db=str(store_path), min_count=2, report=str(report))
    assert column["kind"] == "categorical" and column["table"][0]["feature_id"] == 5
    assert column["report"] == str(report) and "chi-square" in report.read_text()
    with Store.open(store_path, read_only=True) as store:
        kinds = store.query("SELECT kind FROM analyses ORDER BY analysis_id")["kind"].to_list()
    assert kinds == ["correlate", "correlate-column"]
