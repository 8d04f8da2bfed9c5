"""Property retrieval on real DuckDB stores: hand-built concept vectors and label vectors for the
arithmetic (weights, p90 normalisation, selection, fusion), the real all-MiniLM-L6-v2 for queries."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import saeembed.analysis.retrieve as retrieve
import saeembed.concepts.doc_index as doc_index
import saeembed.concepts.exemplars as exemplars_module
import saeembed.storage.concept_columns as concept_columns_module
from saeembed.analysis.retrieve import (
    concept_weights,
    reciprocal_rank_fusion,
    search_documents,
)
from saeembed.concepts.doc_index import document_index, ivf_settings, search_index
from saeembed.concepts.exemplars import exemplars_path
from saeembed.errors import SaeembedError
from saeembed.storage.percentiles import concept_p90
from saeembed.storage.store import Store
from saeembed.storage.synthetic import synthetic_corpus, synthetic_sae, write_concept_lists

READER = "HuggingFaceTB/SmolLM2-135M-Instruct"
DIM = 4
E = np.eye(DIM, dtype=np.float32)


class FixedEmbedder:
    """Sentence vectors given by hand: the arithmetic tests must not depend on a model's geometry."""

    model_id = "fixed-test-model"
    dim = DIM

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors

    def encode(self, texts: list[str], *, batch_size: int = 64) -> np.ndarray:
        return np.stack([self.vectors[t] for t in texts]).astype(np.float32)


def unit(*values: float) -> np.ndarray:
    vector = np.asarray(values + (0.0,) * (DIM - len(values)), dtype=np.float32)
    return vector / np.linalg.norm(vector)


@pytest.fixture(autouse=True)
def fresh_caches():
    """Each test starts as a new process would: nothing held in memory."""
    concept_columns_module._COLUMNS.clear()
    retrieve._CONCEPT_INDEXES.clear()
    doc_index._LOADED.clear()
    exemplars_module._LOADED.clear()


def make_store(
    path: Path, docs: list[tuple[str, dict[int, float]]], *, corpus: str = "c", embed: bool = True, peak: int = 1
) -> Path:
    """A store with one corpus whose documents (text, {concept: max_act}) are given, embedded by one run
    (mean activation a fifth of the max, 5 tokens, every concept peaking at token `peak`)."""
    with Store.open(path) as store:
        sae_id = synthetic_sae(store, 16)
        texts, concepts = [text for text, _ in docs], [acts for _, acts in docs]
        run_id, doc_ids = synthetic_corpus(
            store, corpus, texts, [{"i": i} for i in range(len(docs))], sae_id=sae_id if embed else None
        )
        if embed:
            peaks = {f: peak for acts in concepts for f in acts}
            write_concept_lists(store, run_id, doc_ids, concepts, peak=peaks, mean_share=0.2, n_tokens=5)
    return path


def add_labels(path: Path, labels: dict[int, tuple[str, float | None, np.ndarray | None]], model: str | None) -> None:
    """Labels (text, auroc, embedding or None to have it embedded at search time) for SAE 1."""
    with Store.open(path) as store:
        for feature_id, (label, auroc, vector) in labels.items():
            store.query(
                "INSERT INTO features (sae_id, feature_id, method, model, label, run_id, auroc, embedding, "
                "embedding_model) VALUES (1, ?, 'tokens', 'm', ?, 1, ?, ?, ?)",
                [feature_id, label, auroc, None if vector is None else vector.tolist(), model],
            )


# Concept 1: in 11 documents with activations 1…11 (p90 = 10); concept 2: in 2 with 2 and 4 (p90 = 2 + 0.9·2
# = 3.8); concept 3: in 1 with 5 (p90 = 5); concept 4: everywhere but far from the query; concept 5: closest
# label but a poor one (auroc 0.5); concept 6: a label for a concept no document has.
ARITH_DOCS = [
    (
        "alpha beta gamma delta epsilon",
        {1: float(i + 1), 4: 1.0} | ({2: 2.0} if i == 3 else {}) | ({3: 5.0} if i == 10 else {}),
    )
    for i in range(11)
] + [("zeta eta theta iota kappa", {2: 4.0, 4: 1.0}), ("lambda mu nu xi omicron", {4: 1.0})]
ARITH_LABELS = {
    1: ("property one", 0.9, unit(1)),
    2: ("property two", 0.9, unit(0.8, 0.6)),
    3: ("property three", 0.9, unit(0.6, 0.8)),
    4: ("fourth", 0.9, unit(0, 0, 1)),
    5: ("poor", 0.5, unit(1, 0.01)),
    6: ("absent", 0.9, unit(1, 0.001)),
}
QUERY = FixedEmbedder({"the property": unit(1)})


@pytest.fixture()
def arith_db(tmp_path: Path) -> Path:
    path = make_store(tmp_path / "arith.duckdb", ARITH_DOCS)
    add_labels(path, ARITH_LABELS, FixedEmbedder.model_id)
    return path


def test_weights_are_exp_of_minus_rank_over_k_t():
    assert concept_weights(3, 0.2) == pytest.approx([1.0, math.exp(-1 / 0.6), math.exp(-2 / 0.6)])
    assert concept_weights(1) == pytest.approx([1.0])
    with pytest.raises(SaeembedError, match="temperature must be positive"):
        concept_weights(3, 0.0)


def test_p90_is_numpys_percentile_of_nonzero_activations(arith_db):
    with Store.open(arith_db, read_only=True) as store:
        p90 = dict(concept_p90(store, 1).select("feature_id", "p90").iter_rows())
    assert p90 == pytest.approx({1: 10.0, 2: 3.8, 3: 5.0, 4: 1.0})
    assert p90[1] == pytest.approx(np.percentile(np.arange(1, 12), 90))


def test_sae_search_selects_concepts_and_scores_by_weighted_normalised_activation(arith_db):
    with Store.open(arith_db) as store:
        result = search_documents(
            store, "the property", corpus="c", n_concepts=3, top=5, embedder=QUERY, exemplar_weight=0
        )
        stored = store.query(
            "SELECT rank, doc_id, score, concepts FROM retrieval_results WHERE analysis_id = $a AND mode = 'sae' "
            "ORDER BY rank",
            {"a": result.analysis_id},
        )
        kind = store.query("SELECT kind FROM analyses WHERE analysis_id = $a", {"a": result.analysis_id})["kind"][0]
    # 5 is left out (label score 0.5 < 0.6), 6 has no documents, 4 is the fourth closest.
    assert result.concepts["feature_id"].to_list() == [1, 2, 3]
    assert result.concepts["similarity"].to_list() == pytest.approx([1.0, 0.8, 0.6], abs=1e-6)
    w1, w2, w3 = 1.0, math.exp(-1 / 0.6), math.exp(-2 / 0.6)
    assert result.concepts["weight"].to_list() == pytest.approx([w1, w2, w3])
    assert result.concepts["p90"].to_list() == pytest.approx([10.0, 3.8, 5.0])
    # Documents are doc_ids 1…13: doc 11 has concept 1 at 11 and concept 3 at 5; doc 12 only concept 2 at 4.
    expected = {d: w1 * d / 10 for d in range(1, 12)}
    expected[4] += w2 * 2 / 3.8
    expected[11] += w3 * 5 / 5
    expected[12] = w2 * 4 / 3.8
    best = sorted(expected.items(), key=lambda item: -item[1])[:5]
    assert result.documents["doc_id"].to_list() == [d for d, _ in best]
    assert result.documents["score"].to_list() == pytest.approx([s for _, s in best])
    assert result.confidence == "high" and result.message is None
    first = result.documents.row(0, named=True)
    assert first["doc_id"] == 11
    assert [m["feature_id"] for m in first["concepts"]] == [1, 3]  # by contribution: 1.1 vs 0.036
    assert first["concepts"][0]["activation"] == pytest.approx(11.0)
    assert first["snippet"] == "alpha« beta» gamma delta epsilon"
    assert first["marked"] == "alpha «beta» gamma delta epsilon"  # both concepts peak on token 1
    assert kind == "search"
    assert stored["doc_id"].to_list() == result.documents["doc_id"].to_list()
    assert stored["score"].to_list() == pytest.approx(result.documents["score"].to_list())
    assert [c["feature_id"] for c in json.loads(stored["concepts"][0])] == [1, 3]


def test_concept_columns_are_rebuilt_when_the_run_gains_documents(arith_db):
    with Store.open(arith_db) as store:
        before = retrieve.concept_columns(store, 1)
        assert (len(before.doc_ids), len(before.rows)) == (13, 11 + 2 + 1 + 13)
        store.add_documents(
            "c", pl.DataFrame({"external_id": ["new"], "text": ["new"], "meta": ["{}"], "content_hash": ["new"]})
        )
        write_concept_lists(store, 1, np.asarray([14]), [{3: 15.0}], peak={3: 0}, mean_share=1 / 15, n_tokens=5)
        after = retrieve.concept_columns(store, 1)
        assert len(after.rows) == len(before.rows) + 1
        assert after.p90[3] == pytest.approx(5 + 0.9 * 10)  # concept 3 now at 5 and 15


def test_reciprocal_rank_fusion_matches_hand_computed_scores():
    fused = reciprocal_rank_fusion([[10, 20, 30], [30, 10]])
    assert [d for d, _ in fused] == [10, 30, 20]
    assert [s for _, s in fused] == pytest.approx([1 / 61 + 1 / 62, 1 / 63 + 1 / 61, 1 / 62])


def test_fused_mode_is_rrf_of_the_sae_and_dense_rankings(arith_db):
    vectors = {"the property": unit(1)} | {text: unit(1, i + 1) for i, (text, _) in enumerate(ARITH_DOCS)}
    embedder = FixedEmbedder(vectors)
    with Store.open(arith_db) as store:
        texts = store.query("SELECT doc_id, text FROM documents ORDER BY doc_id")
        # Texts repeat, so dense vectors are stored per document: doc d gets unit(1, d), nearest the query first.
        for d in texts["doc_id"].to_list():
            store.query("INSERT INTO doc_embeddings VALUES (?, ?, ?)", [embedder.model_id, d, unit(1, d).tolist()])
        sae = search_documents(
            store, "the property", corpus="c", n_concepts=3, top=13, embedder=embedder, exemplar_weight=0
        )
        dense = search_documents(store, "the property", corpus="c", mode="dense", top=13, embedder=embedder)
        fused = search_documents(
            store, "the property", corpus="c", mode="fused", n_concepts=3, top=5, embedder=embedder, exemplar_weight=0
        )
    assert dense.documents["doc_id"].to_list() == list(range(1, 14))
    assert dense.index == "flat (exact, 13 documents)"
    expected = reciprocal_rank_fusion([sae.documents["doc_id"].to_list(), dense.documents["doc_id"].to_list()])[:5]
    assert fused.documents["doc_id"].to_list() == [d for d, _ in expected]
    assert fused.documents["score"].to_list() == pytest.approx([s for _, s in expected])
    top = fused.documents.row(0, named=True)
    assert (top["sae_rank"], top["dense_rank"]) == (
        sae.documents["doc_id"].to_list().index(top["doc_id"]) + 1,
        top["doc_id"],
    )
    assert dense.documents["concepts"].to_list()[0] == [] and dense.confidence is None


def test_empty_results_say_why(arith_db):
    with Store.open(arith_db) as store:
        nothing = search_documents(
            store,
            "the property",
            corpus="c",
            n_concepts=3,
            where="external_id = 'none'",
            embedder=QUERY,
            exemplar_weight=0,
        )
        assert nothing.documents.height == 0
        assert nothing.message == "no document of corpus 'c' matches --where external_id = 'none'"
        # Document 13 has only concept 4, which is not selected.
        unmatched = search_documents(
            store, "the property", corpus="c", n_concepts=3, where="doc_id = 13", embedder=QUERY, exemplar_weight=0
        )
        assert unmatched.documents.height == 0
        assert unmatched.message.startswith("no document of corpus 'c' matching --where doc_id = 13 has any of the 3")
        rows = store.query(
            "SELECT count(*) AS n FROM retrieval_results WHERE analysis_id = $a", {"a": unmatched.analysis_id}
        )
    assert rows["n"][0] == 0


def test_bad_input_gets_a_clear_error(tmp_path, arith_db):
    with Store.open(arith_db) as store:
        for kwargs, match in [
            ({"query": "  "}, "empty query"),
            ({"top": 0}, "--top must be at least 1"),
            ({"mode": "bm25"}, "unknown --mode 'bm25'"),
            ({"corpus": "nope"}, "no corpus named 'nope'"),
            ({"n_concepts": 0}, "--concepts must be at least 1"),
        ]:
            with pytest.raises(SaeembedError, match=match):
                search_documents(
                    store, **{"query": "the property", "corpus": "c", "embedder": QUERY, "exemplar_weight": 0} | kwargs
                )
    unembedded = make_store(tmp_path / "raw.duckdb", [("text", {})], embed=False)
    with Store.open(unembedded) as store, pytest.raises(SaeembedError, match="has not been embedded yet"):
        search_documents(store, "the property", corpus="c", embedder=QUERY, exemplar_weight=0)
    unlabelled = make_store(tmp_path / "nolabels.duckdb", [("text", {1: 1.0})])
    with Store.open(unlabelled) as store, pytest.raises(SaeembedError, match="no concept labels yet"):
        search_documents(store, "the property", corpus="c", embedder=QUERY, exemplar_weight=0)


def test_dense_index_is_flat_below_the_threshold_ivf_above_and_extended_with_new_documents(tmp_path):
    rng = np.random.default_rng(0)
    n = 400
    vectors = rng.normal(size=(n + 10, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    path = make_store(tmp_path / "dense.duckdb", [(f"doc {i}", {}) for i in range(n)], embed=False)
    embedder = FixedEmbedder({f"doc {i}": vectors[i] for i in range(n + 10)})
    with Store.open(path) as store:
        flat = document_index(store, "c", embedder, flat_below=n + 1)
        assert (flat.kind, flat.action, len(flat.doc_ids)) == ("flat", "built", n)
        ivf = document_index(store, "c", embedder, flat_below=n)
        assert (ivf.kind, ivf.nlist, ivf.nprobe, ivf.action) == ("ivf", 80, 5, "built")
        assert ivf_settings(100_000) == (1265, 80)
        assert ivf.describe() == "ivf (nlist 80, nprobe 5, 400 documents)"
        doc_index._LOADED.clear()  # as a new process: read from disk
        assert document_index(store, "c", embedder, flat_below=n).action == "loaded"
        store.add_documents(
            "c",
            pl.DataFrame(
                {
                    "external_id": [f"new-{i}" for i in range(10)],
                    "text": [f"doc {n + i}" for i in range(10)],
                    "meta": ["{}"] * 10,
                    "content_hash": [f"new-{i}" for i in range(10)],
                }
            ),
        )
        extended = document_index(store, "c", embedder, flat_below=n)
        assert (extended.kind, extended.action, len(extended.doc_ids)) == ("ivf", "extended", n + 10)
        # Each document's own vector finds it first (its list is the one probed first).
        for i in (0, 123, n + 4):
            doc_ids, scores = search_index(extended, vectors[i], 3)
            assert doc_ids[0] == extended.doc_ids[i] and scores[0] == pytest.approx(1.0, abs=1e-5)
        allowed = extended.doc_ids[:50]
        doc_ids, _ = search_index(extended, vectors[0], 10, allowed)
        assert set(doc_ids.tolist()) <= set(allowed.tolist()) and doc_ids[0] == extended.doc_ids[0]


# -- real queries (all-MiniLM-L6-v2) -------------------------------------------------------------------


TOPIC_DOCS = [
    ("The striker scored twice as the home team won the football match.", {1: 3.0, 9: 1.0}),
    ("The goalkeeper saved a penalty in the final minute of the game.", {1: 2.0, 9: 1.0}),
    ("Whisk the eggs with sugar, then bake the cake for forty minutes.", {2: 3.0, 9: 1.0}),
    ("Simmer the tomato sauce with garlic and basil before serving.", {2: 2.5, 9: 1.0}),
    ("Shares fell sharply after the bank reported weaker quarterly profits.", {3: 2.0, 9: 1.0}),
]
TOPIC_LABELS = {
    1: ("football, sports match, goal", 0.9, None),
    2: ("cooking recipe, baking, food", 0.9, None),
    3: ("stock market, shares, profits", 0.9, None),
    9: ("the, a, of", 0.9, None),
}


@pytest.fixture(scope="module")
def minilm():
    from saeembed.concepts.dense import SentenceEmbedder

    return SentenceEmbedder.load("all-minilm-l6-v2")


@pytest.fixture()
def topic_db(tmp_path: Path) -> Path:
    path = make_store(tmp_path / "topics.duckdb", TOPIC_DOCS)
    add_labels(path, TOPIC_LABELS, None)
    return path


def test_an_english_query_finds_the_documents_with_the_property(topic_db, minilm):
    with Store.open(topic_db) as store:
        sae = search_documents(store, "sports", corpus="c", n_concepts=2, top=2, embedder=minilm)
        dense = search_documents(store, "sports", corpus="c", mode="dense", top=2, embedder=minilm)
    assert sae.concepts["feature_id"][0] == 1 and sae.confidence == "high"
    assert sae.documents["doc_id"].to_list() == [1, 2]
    assert sae.documents["concepts"][0][0]["label"] == "football, sports match, goal"
    assert set(dense.documents["doc_id"].to_list()) == {1, 2}


def test_a_query_in_a_language_the_labels_do_not_cover_still_answers_with_low_confidence(topic_db, minilm):
    with Store.open(topic_db) as store:
        result = search_documents(store, "体育比赛的结果", corpus="c", n_concepts=2, top=3, embedder=minilm)
    assert result.documents.height > 0
    assert result.confidence == "low"
    assert result.message.startswith("low confidence: none of the query's words appears in any concept label")


def test_confidence_is_low_for_a_far_label_or_words_no_label_has():
    concepts = pl.DataFrame({"label": ["football, goal"], "label_similarity": [0.9]})
    vocabulary = frozenset({"football", "goal"})
    assert retrieve.query_confidence("football", concepts, vocabulary, 0.6) == ("high", None)
    low, why = retrieve.query_confidence(
        "le football", concepts.with_columns(label_similarity=pl.lit(0.2)), vocabulary, 0.6
    )
    assert low == "low" and why.startswith(
        "low confidence: the closest concept label ('football, goal') has cosine 0.20"
    )
    low, why = retrieve.query_confidence("les matchs de foot", concepts, vocabulary, 0.6)
    assert low == "low" and "none of the query's words" in why
    assert retrieve.query_confidence("x", concepts.clear(), vocabulary, 0.6)[0] == "low"


def test_search_index_flow_builds_the_dense_index_and_concept_columns(prefect_harness, topic_db):
    from saeembed_flows.search_index import search_index_flow

    summary = search_index_flow(corpus="c", db=str(topic_db))
    again = search_index_flow(corpus="c", db=str(topic_db))
    assert summary["dense"]["kind"] == "flat"
    assert (summary["dense"]["documents"], summary["dense"]["newly_embedded"], summary["dense"]["action"]) == (
        5,
        5,
        "built",
    )
    assert (again["dense"]["newly_embedded"], again["dense"]["action"]) == (0, "loaded")
    assert (summary["concepts"]["documents"], summary["concepts"]["rows"]) == (5, 10)
    assert Path(summary["concepts"]["path"]).is_dir()
    with Store.open(topic_db, read_only=True) as store:
        embedded = store.query("SELECT count(*) AS n FROM doc_embeddings")["n"][0]
        present = store.query("SELECT count(DISTINCT feature_id) AS n FROM doc_features")["n"][0]
    assert embedded == 5
    # One exemplar vector per concept that fires, from the documents the dense index embedded already.
    assert summary["concepts"]["exemplars"] == present
    assert exemplars_path(topic_db, 1).exists()


# -- the LLM concept filter (a real HTTP server with scripted replies) ----------------------------------


def test_parse_llm_choice_keeps_named_candidates_in_order():
    assert retrieve.parse_llm_choice("3, 1, 3, 99", 4) == [2, 0]
    assert retrieve.parse_llm_choice("None of them.", 4) == []
    assert retrieve.parse_llm_choice("I cannot tell.", 4) is None


def test_an_llm_chooses_and_orders_the_concepts(arith_db):
    from saeembed.concepts.llm import OpenAICompatible
    from tests.support import ChatServer, completion

    picks = ChatServer(lambda number, request: completion("3, 1"))
    refuses = ChatServer(lambda number, request: completion("none"))
    try:
        with Store.open(arith_db) as store, OpenAICompatible(picks.base_url, "test-model") as chat:
            chosen = search_documents(
                store, "the property", corpus="c", n_concepts=2, embedder=QUERY, exemplar_weight=0, chat=chat
            )
            params = json.loads(
                store.query("SELECT params FROM analyses WHERE analysis_id = $a", {"a": chosen.analysis_id})["params"][
                    0
                ]
            )
        with Store.open(arith_db) as store, OpenAICompatible(refuses.base_url, "test-model") as chat:
            kept = search_documents(
                store, "the property", corpus="c", n_concepts=2, embedder=QUERY, exemplar_weight=0, chat=chat
            )
    finally:
        picks.close()
        refuses.close()
    # Candidates: the 3·2 closest labels that pass the score and have documents, i.e. concepts 1, 2, 3, 4.
    prompt = picks.requests[0]["messages"][-1]["content"]
    assert "Property: the property" in prompt
    assert "1: property one\n2: property two\n3: property three\n4: fourth\n" in prompt
    assert chosen.concepts["feature_id"].to_list() == [3, 1]
    assert chosen.concepts["weight"].to_list() == pytest.approx([1.0, math.exp(-1 / 0.4)])
    assert chosen.documents["doc_id"][0] == 11  # the only document with concept 3 (5 / p90 5 = 1, plus 1.1·w)
    assert params["llm"] == "test-model"
    assert kept.concepts["feature_id"].to_list() == [1, 2]
    assert kept.message == "the LLM found no concept that shows this property; concepts kept in embedding order"


def test_fused_results_may_hold_documents_the_run_has_not_embedded(arith_db):
    embedder = FixedEmbedder({"the property": unit(1)})
    with Store.open(arith_db) as store:
        store.add_documents(
            "c",
            pl.DataFrame({"external_id": ["late"], "text": ["late arrival"], "meta": ["{}"], "content_hash": ["l"]}),
        )
        for d in range(1, 15):
            store.query(
                "INSERT INTO doc_embeddings VALUES (?, ?, ?)", [embedder.model_id, d, unit(1, 0.1 * d).tolist()]
            )
        fused = search_documents(
            store, "the property", corpus="c", mode="fused", n_concepts=3, top=14, embedder=embedder
        )
    late = fused.documents.filter(pl.col("doc_id") == 14).row(0, named=True)
    assert (late["sae_rank"], late["dense_rank"], late["concepts"]) == (None, 14, [])
    assert (late["snippet"], late["marked"]) == ("late arrival", None)
    assert fused.documents.height == 14


def test_search_command_prints_the_documents_and_why_they_matched(topic_db):
    from typer.testing import CliRunner

    from saeembed.cli import app

    runner = CliRunner()
    shown = runner.invoke(app, ["search", "sports", "--db", str(topic_db), "--concepts", "2", "--top", "2"])
    assert shown.exit_code == 0, shown.output
    assert "mode sae" in shown.stdout and "confidence: high" in shown.stdout and "football" in shown.stdout
    payload = json.loads(
        runner.invoke(
            app, ["search", "sports", "--corpus", "c", "--db", str(topic_db), "--mode", "fused", "--json"]
        ).stdout
    )
    assert payload["mode"] == "fused" and payload["documents"][0]["doc_id"] in (1, 2)
    refused = runner.invoke(app, ["search", "sports", "--db", str(topic_db), "--mode", "magic"])
    assert refused.exit_code != 0 and "magic" in str(refused.exception)


def test_a_search_has_a_report_page(arith_db):
    from saeembed.reports.pages import analysis_report

    with Store.open(arith_db) as store:
        result = search_documents(
            store, "the property", corpus="c", n_concepts=3, top=5, embedder=QUERY, exemplar_weight=0
        )
        analysis_id, page = analysis_report(store, result.analysis_id)
    assert analysis_id == result.analysis_id and page.startswith("<!doctype html>") and "http" not in page
    assert page.count("<td class='num'>11</td>") >= 1  # doc 11, first


def store_doc_vectors(store: Store, vectors: dict[int, np.ndarray]) -> None:
    """Dense vectors of documents (doc_id → vector) as if the fixed test model had embedded them."""
    for d, v in vectors.items():
        store.query("INSERT INTO doc_embeddings VALUES (?, ?, ?)", [FixedEmbedder.model_id, d, v.tolist()])


def test_exemplar_vector_is_the_mean_embedding_of_a_concepts_strongest_documents(arith_db):
    from saeembed.concepts.exemplars import exemplar_vectors

    vectors = {d: unit(1, d) for d in range(1, 14)}
    with Store.open(arith_db) as store:
        store_doc_vectors(store, vectors)
        columns = retrieve.concept_columns(store, 1)
        exemplars = exemplar_vectors(store, 1, columns, QUERY)
        # Concept 2 fires in documents 4 (2.0) and 12 (4.0); concept 1 in 1…11; concept 6 in none.
        mean = (vectors[4] + vectors[12]) / 2
        assert exemplars[2] == pytest.approx(mean / np.linalg.norm(mean), abs=1e-6)
        mean = np.mean([vectors[d] for d in range(1, 12)], axis=0)
        assert exemplars[1] == pytest.approx(mean / np.linalg.norm(mean), abs=1e-6)
        assert not exemplars[6].any() and exemplars.shape == (16, DIM)
        # Kept beside the database: a new process reads the file instead of recomputing.
        assert exemplars_path(arith_db, 1).exists()
        exemplars_module._LOADED.clear()
        store.query("DELETE FROM doc_embeddings")
        assert exemplar_vectors(store, 1, columns, QUERY) == pytest.approx(exemplars)


def test_exemplars_let_a_concept_whose_label_is_far_but_whose_documents_are_close_come_first(arith_db):
    # The query is unit(1). Concept 3's only document (11) is unit(1) too; every other document is unit(0, 1).
    with Store.open(arith_db) as store:
        store_doc_vectors(store, {d: unit(1) if d == 11 else unit(0, 1) for d in range(1, 14)})
        by_label = search_documents(
            store, "the property", corpus="c", n_concepts=3, embedder=QUERY, exemplar_weight=0
        ).concepts
        mixed = search_documents(store, "the property", corpus="c", n_concepts=3, embedder=QUERY).concepts
    assert by_label["feature_id"].to_list() == [1, 2, 3]
    assert by_label["exemplar_similarity"].to_list() == [None, None, None]
    # Labels: 1.0, 0.8, 0.6. Exemplars: concept 3 → 1; concept 1 → mean of ten unit(0, 1) and one unit(1);
    # concept 2 → unit(0, 1).
    concept_1 = 1 / np.sqrt(1 + 10**2)
    assert mixed["feature_id"].to_list() == [3, 1, 2]
    assert mixed["exemplar_similarity"].to_list() == pytest.approx([1.0, concept_1, 0.0], abs=1e-6)
    assert mixed["label_similarity"].to_list() == pytest.approx([0.6, 1.0, 0.8], abs=1e-6)
    assert mixed["similarity"].to_list() == pytest.approx([0.8, 0.5 + concept_1 / 2, 0.4], abs=1e-6)
    with Store.open(arith_db) as store, pytest.raises(SaeembedError, match="--exemplar-weight must be between 0 and 1"):
        search_documents(store, "the property", corpus="c", embedder=QUERY, exemplar_weight=1.5)


# Search by example. Concept 1: in the three examples and in documents 4 and 5 (2 of the other 7); concept 2:
# in example 1 only; concept 3: everywhere (no more common among the examples); concept 4: in every document,
# but in the examples at a tenth of its p90 (1.0), below the presence threshold (half the p90).
LIKE_DOCS = [
    ("alpha beta gamma delta epsilon", {1: 1.0, 2: 1.0, 3: 1.0, 4: 0.1}),
    ("alpha beta gamma delta zeta", {1: 1.0, 3: 1.0, 4: 0.1}),
    ("alpha beta gamma delta eta", {1: 1.0, 3: 1.0, 4: 0.1}),
    ("theta iota kappa lambda mu", {1: 1.0, 3: 1.0, 4: 1.0}),
    ("theta iota kappa lambda nu", {1: 1.0, 3: 1.0, 4: 1.0}),
] + [(f"omicron pi rho sigma {word}", {3: 1.0, 4: 1.0}) for word in ("tau", "upsilon", "phi", "chi", "psi")]


@pytest.fixture()
def like_db(tmp_path: Path) -> Path:
    return make_store(tmp_path / "like.duckdb", LIKE_DOCS)


def test_search_by_example_chooses_the_concepts_the_examples_share_more_than_the_rest(like_db):
    with Store.open(like_db) as store:
        found = retrieve.search_like(store, [1, 2, 3], corpus="c")
        against_unlike = retrieve.search_like(store, [1, 2, 3], unlike=[4, 6], corpus="c")
    concepts = found.concepts.to_dicts()
    assert [c["feature_id"] for c in concepts] == [1, 2]
    assert (concepts[0]["like_share"], concepts[0]["background_share"]) == (1.0, pytest.approx(2 / 7))
    assert concepts[0]["delta"] == pytest.approx(5 / 7) and concepts[1]["delta"] == pytest.approx(1 / 3)
    assert concepts[0]["why"] == "in 3 of 3 examples, 28.6% of the rest of the corpus"
    assert [c["weight"] for c in concepts] == pytest.approx(list(concept_weights(2)))
    # The examples are not results; documents 4 and 5 have concept 1 at its p90 (score w·a/p90 = 1).
    assert found.documents["doc_id"].to_list() == [4, 5] and found.documents["score"].to_list() == [1.0, 1.0]
    assert found.query == "like 1, 2, 3"
    unlike = against_unlike.concepts.to_dicts()
    assert [(c["feature_id"], c["background_share"]) for c in unlike] == [(1, 0.5), (2, 0.0)]
    assert unlike[0]["why"] == "in 3 of 3 examples, 50.0% of --unlike"
    assert against_unlike.documents["doc_id"].to_list() == [5]


def test_dense_search_by_example_ranks_by_the_mean_embedding_of_the_examples(like_db):
    rng = np.random.default_rng(1)
    vectors = {d: unit(*rng.normal(size=DIM).tolist()) for d in range(1, 11)}
    with Store.open(like_db) as store:
        store_doc_vectors(store, vectors)
        found = retrieve.search_like(store, [1, 2, 3], corpus="c", mode="dense", embedder=QUERY, top=7)
        away = retrieve.search_like(store, [1, 2], unlike=[3], corpus="c", mode="dense", embedder=QUERY, top=7)

    def expected(query: np.ndarray, left_out: set[int]) -> list[int]:
        others = [d for d in range(1, 11) if d not in left_out]
        return sorted(others, key=lambda d: -float(vectors[d] @ (query / np.linalg.norm(query))))

    mean = np.mean([vectors[d] for d in (1, 2, 3)], axis=0)
    assert found.documents["doc_id"].to_list() == expected(mean, {1, 2, 3})
    rocchio = np.mean([vectors[1], vectors[2]], axis=0) - 0.2 * vectors[3]
    assert away.documents["doc_id"].to_list() == expected(rocchio, {1, 2, 3})


def test_search_by_example_refuses_unknown_foreign_unembedded_and_missing_examples(like_db, capsys):
    from saeembed.cli import main
    from saeembed.storage.synthetic import synthetic_corpus

    with Store.open(like_db) as store:
        synthetic_corpus(store, "other", ["elsewhere entirely"], sae_id=None)  # doc 11
        late = pl.DataFrame({"external_id": ["late"], "text": ["brought in after the run"], "content_hash": ["late"]})
        store.add_documents("c", late.with_columns(pl.lit(None, dtype=pl.Utf8).alias("meta")))  # doc 12, not embedded
        searches = store.query("SELECT count(*) AS n FROM analyses")["n"][0]
    for args, message in [
        (["--like", "1,999"], "error: unknown document ids: 999"),
        (["--like", "1,11"], "error: example documents must come from corpus 'c': 1 do not (doc 11 is in corpus"),
        (["--like", "1,12"], "error: documents [12] are not embedded by run 1 of corpus 'c' yet"),
        (["--like", ""], "error: --like is empty"),
        (["--like", "1,2", "--unlike", "2"], "error: documents [2] are in both --like and --unlike"),
        (["--like", "1,x"], "error: --like takes comma-separated document ids"),
        (["--unlike", "2"], "error: --unlike needs --like"),
        (["some text", "--like", "1"], "error: give a QUERY or --like example documents, not both"),
    ]:
        with pytest.raises(SystemExit) as done:
            main(["search", *args, "--corpus", "c", "--db", str(like_db)])
        err = capsys.readouterr().err
        assert done.value.code == 2 and len(err.strip().splitlines()) == 1, (args, err)
        assert err.startswith(message), (args, err)
    with Store.open(like_db, read_only=True) as store:
        assert store.query("SELECT count(*) AS n FROM analyses")["n"][0] == searches
    from typer.testing import CliRunner

    from saeembed.cli import app

    shown = CliRunner().invoke(app, ["search", "--like", "1,2,3", "--corpus", "c", "--db", str(like_db), "--json"])
    assert shown.exit_code == 0, shown.output
    payload = json.loads(shown.stdout)
    assert [c["feature_id"] for c in payload["concepts"]] == [1, 2]
    assert [d["doc_id"] for d in payload["documents"]] == [4, 5]
