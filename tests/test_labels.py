"""Concept examples, token labels, label scores, label storage and concept search, on a real store: 240
AG News articles embedded by SmolLM2-135M-Instruct with the default SAE."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from saeembed.concepts.dense import SentenceEmbedder
from saeembed.concepts.examples import concept_examples, load_run_models
from saeembed.concepts.labels import (
    WORD_PATTERN,
    HeldOut,
    embedding_auroc,
    export_labels,
    label_concepts,
    select_features,
    token_labels,
)
from saeembed.concepts.search import concept_index, search_concepts
from saeembed.errors import SaeembedError
from saeembed.jobs import DEFAULT_SAE_DIR, embed, ingest
from saeembed.model.pooling import EmbedOptions
from saeembed.storage.corpora import demo_corpus
from saeembed.storage.store import Store, copy_database

N_DOCS = 240


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    return SentenceEmbedder.load()


@pytest.fixture(scope="module")
def news_db(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("labels")
    source = folder / "news.parquet"
    demo_corpus(n=N_DOCS, seed=3).write_parquet(source)
    db = folder / "news.duckdb"
    with Store.open(db) as store:
        ingest(store, source, corpus="news")
        embed(store, "news", device="cpu", options=EmbedOptions(max_tokens=64))
    return db


@pytest.fixture(scope="module")
def labelled_db(news_db: Path, embedder: SentenceEmbedder, tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("labelled") / "labelled.duckdb"
    copy_database(news_db, db)
    with Store.open(db) as store:
        summary = label_concepts(store, "news", embedder=embedder)
    assert summary.labelled == summary.requested > 1000
    return db


def test_marked_tokens_are_where_the_concept_fires(news_db):
    with Store.open(news_db, read_only=True) as store:
        run = store.latest_run("news")
        feature_id = store.query(
            "SELECT feature_id FROM concept_frequency WHERE run_id = $r AND n_docs BETWEEN 5 AND 60 "
            "ORDER BY n_docs DESC, feature_id LIMIT 1",
            {"r": run.run_id},
        )["feature_id"][0]
        models = load_run_models(store, run.run_id, device="cpu")
        examples = concept_examples(store, feature_id, run_id=run.run_id, top=4, negatives=5, models=models)
        stored_only = concept_examples(store, feature_id, run_id=run.run_id, top=4, negatives=5)
    positives = examples.positives
    assert positives["max_act"].to_list() == sorted(positives["max_act"].to_list(), reverse=True)
    # Direct computation: the SAE code of this concept on every token of each top document.
    reader, sae = models.reader, models.sae
    for text, marked, argmax_pos in positives.select("text", "marked", "argmax_pos").iter_rows():
        ids = reader.tokenize([text], models.max_tokens).ids
        tokens = reader.document_residuals(ids, reader.prefix_ids(models.chat_template))
        with torch.inference_mode(), torch.autocast("cpu", dtype=reader.dtype, enabled=reader.dtype != torch.float32):
            codes = sae.encode(tokens.residuals)[:, feature_id].float()
        firing = (codes > 0).nonzero().ravel().tolist()
        assert argmax_pos in firing
        pieces = [reader.tokenizer.decode([ids[0][p]]).strip() for p in firing]
        inside = "".join(part.split("»")[0] for part in marked.split("«")[1:])
        assert "".join(pieces).replace(" ", "") == inside.replace(" ", "")
    # Without the model only the stored max is marked, and it is the same token.
    for token, marked in stored_only.positives.select("token", "marked").iter_rows():
        assert marked.count("«") == 1 and f"«{token.strip()}»" in marked
    # Negatives are documents where the concept is absent.
    with Store.open(news_db, read_only=True) as store:
        present = set(
            store.query("SELECT doc_id FROM doc_features WHERE feature_id = $f", {"f": feature_id})["doc_id"].to_list()
        )
    assert examples.negatives.height == 5 and not present & set(examples.negatives["doc_id"].to_list())


def test_token_labels_come_from_peak_tokens_and_recurring_words(news_db):
    with Store.open(news_db, read_only=True) as store:
        run = store.latest_run("news")
        ids = select_features(store, run.run_id, "top:50")
        labels = token_labels(store, run.run_id, ids)
        assert sorted(labels["feature_id"].to_list()) == sorted(ids)
        for feature_id, label, details in labels.select("feature_id", "label", "details").head(10).iter_rows():
            details = json.loads(details)
            top_docs = store.query(
                "SELECT lower(d.text) AS text FROM doc_features f JOIN documents d USING (doc_id) "
                "WHERE f.run_id = $r AND f.feature_id = $f ORDER BY f.max_act DESC, f.doc_id LIMIT 20",
                {"r": run.run_id, "f": feature_id},
            )["text"].to_list()
            assert sum(count for _, count in details["top_tokens"]) <= details["n_top_docs"] == len(top_docs)
            words_of = [set(re.findall(WORD_PATTERN, text)) for text in top_docs]
            for word, share in details["top_words"]:
                in_docs = sum(word in words for words in words_of)
                assert in_docs >= 2
                assert share == pytest.approx(in_docs / len(top_docs), abs=0.01)
            assert label


def test_auroc_matches_scikit_learn_and_is_nan_without_examples(labelled_db, embedder):
    from sklearn.metrics import roc_auc_score

    with Store.open(labelled_db, read_only=True) as store:
        docs = store.query("SELECT doc_id FROM documents ORDER BY doc_id LIMIT 12")["doc_id"].to_list()
        labels = pl.DataFrame({"feature_id": [1, 2, 3], "label": ["sports", "oil prices", "elections"]})
        held_out = HeldOut(
            positives=pl.DataFrame({"feature_id": [1] * 4 + [2] * 3, "doc_id": docs[:4] + docs[4:7]}),
            negatives=pl.DataFrame({"feature_id": [1] * 3 + [2] * 5, "doc_id": docs[7:10] + docs[7:12]}),
        )
        scores = embedding_auroc(store, labels, held_out, embedder)
        vectors = embedder.encode(labels["label"].to_list())
        from saeembed.concepts.dense import document_embeddings

        doc_vectors = dict(zip(docs, document_embeddings(store, docs, embedder), strict=True))
    for row, (pos, neg) in enumerate([(docs[:4], docs[7:10]), (docs[4:7], docs[7:12])]):
        cosines = [float(doc_vectors[d] @ vectors[row]) for d in pos + neg]
        assert scores[row] == pytest.approx(roc_auc_score([1] * len(pos) + [0] * len(neg), cosines))
    assert np.isnan(scores[2])


def test_relabelling_skips_labelled_concepts_keeps_history_and_force_relabels(labelled_db, embedder, tmp_path):
    db = tmp_path / "again.duckdb"
    copy_database(labelled_db, db)
    with Store.open(db) as store:
        before = store.query("SELECT count(*) AS n FROM features")["n"][0]
        again = label_concepts(store, "news", embedder=embedder)
        assert (again.labelled, again.skipped) == (0, again.requested)
        forced = label_concepts(store, "news", features="top:5", force=True, embedder=embedder)
        assert (forced.labelled, forced.skipped) == (5, 0)
        # Labels made from this corpus (the SAE's shipped labels, run_id NULL, are history of their own).
        history = store.query(
            "SELECT feature_id, count(*) AS n FROM features WHERE run_id IS NOT NULL GROUP BY feature_id HAVING n > 1"
        )
        assert store.query("SELECT count(*) AS n FROM features")["n"][0] == before + 5
        assert history.height == 5
        assert store.query("SELECT count(*) AS n FROM label_history")["n"][0] == before + 5


def test_feature_selection_errors(labelled_db):
    with Store.open(labelled_db, read_only=True) as store:
        run = store.latest_run("news")
        assert select_features(store, run.run_id, "all") is None
        assert select_features(store, run.run_id, "3, 7") == [3, 7]
        for spec, message in [
            ("top:0", "top:N needs a positive whole number"),
            ("top:x", "top:N needs a positive whole number"),
            ("a,b", "use all, top:N or a comma-separated list"),
            ("9000", r"outside this SAE's 0..8191"),
        ]:
            with pytest.raises(SaeembedError, match=message):
                select_features(store, run.run_id, spec)
        with pytest.raises(SaeembedError, match="unknown --method 'magic'"):
            label_concepts(store, "news", method="magic")
        with pytest.raises(SaeembedError, match="--method llm needs an LLM"):
            label_concepts(store, "news", method="llm")


def test_concept_search_finds_sports_concepts_and_rebuilds_its_index_when_labels_change(
    labelled_db, embedder, tmp_path
):
    db = tmp_path / "search.duckdb"
    copy_database(labelled_db, db)
    with Store.open(db) as store:
        hits = search_concepts(store, "sports", corpus="news", top=5, embedder=embedder)
        assert hits.columns == [
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
        assert hits["similarity"].to_list() == sorted(hits["similarity"].to_list(), reverse=True)
        assert (hits["score"] >= 0.6).all()
        run = store.latest_run("news")
        majority = []
        for feature_id in hits["feature_id"]:
            topics = store.query(
                "SELECT d.meta->>'topic' AS topic FROM doc_features f JOIN documents d USING (doc_id) "
                "WHERE f.run_id = $r AND f.feature_id = $f ORDER BY f.max_act DESC LIMIT 10",
                {"r": run.run_id, "f": feature_id},
            )["topic"]
            majority.append((topics == "Sports").mean() > 0.5)
        assert sum(majority) >= 3, hits
        corpus_id = store.corpus_id("news")
        assert concept_index(store, run.sae_id, corpus_id, embedder).rebuilt is False
        label_concepts(store, "news", features="top:1", force=True, embedder=embedder)
        assert concept_index(store, run.sae_id, corpus_id, embedder).rebuilt is True
        with pytest.raises(SaeembedError, match="empty query"):
            search_concepts(store, "  ", corpus="news", embedder=embedder)


def test_labels_shipped_with_an_sae_are_loaded_once_and_yield_to_corpus_labels(labelled_db, embedder, tmp_path):
    sae_dir = tmp_path / "sae"
    sae_dir.mkdir()
    for file in DEFAULT_SAE_DIR.iterdir():
        if file.is_file() and file.name != "labels.parquet":
            (sae_dir / file.name).write_bytes(file.read_bytes())
    with Store.open(labelled_db, read_only=True) as store:
        assert export_labels(store, "news", tmp_path / "labels.parquet") > 1000
    # A few hundred are enough to check loading, and keep the index build short.
    pl.read_parquet(tmp_path / "labels.parquet").head(300).write_parquet(sae_dir / "labels.parquet")
    source = tmp_path / "other.parquet"
    demo_corpus(n=30, seed=9).write_parquet(source)
    with Store.open(tmp_path / "fresh.duckdb") as store:
        ingest(store, source, corpus="other")
        embed(store, "other", sae=str(sae_dir), device="cpu", options=EmbedOptions(max_tokens=32))
        shipped = store.query("SELECT count(*) AS n FROM features WHERE run_id IS NULL")["n"][0]
        assert shipped == 300
        embed(store, "other", sae=str(sae_dir), device="cpu", options=EmbedOptions(max_tokens=16))
        assert store.query("SELECT count(*) AS n FROM features")["n"][0] == shipped
        hits = search_concepts(store, "baseball", corpus="other", top=3, embedder=embedder)
        assert hits.height == 3


def test_llm_labels_through_an_openai_compatible_endpoint(labelled_db, embedder, tmp_path):
    from saeembed.concepts.llm import CachedChat, OpenAICompatible
    from tests.support import ChatServer, completion

    def script(number: int, request: dict) -> object:
        prompt = request["messages"][-1]["content"]
        if "concept is described as" in prompt:
            return completion(json.dumps({"applies": "game" in prompt.split("Text:")[1].lower()}))
        if number == 2:
            return completion("These texts are about sport, I think.")  # not JSON: this concept stays unlabelled
        return completion(json.dumps({"label": "sports game results", "description": "Match reports."}))

    db = tmp_path / "llm.duckdb"
    copy_database(labelled_db, db)
    server = ChatServer(script)
    try:
        with Store.open(db) as store:
            # Concepts in 40–150 of the 240 documents: enough held-out positives and negatives to score.
            ids = store.query(
                "SELECT feature_id FROM concept_frequency WHERE n_docs BETWEEN 40 AND 150 ORDER BY feature_id LIMIT 6"
            )["feature_id"].to_list()
            first, later = ",".join(map(str, ids[:3])), ",".join(map(str, ids))
            chat = CachedChat(OpenAICompatible(server.base_url, "test-model", retry_base_delay=0.01), store)
            summary = label_concepts(store, "news", method="llm", features=first, chat=chat, embedder=embedder)
            assert (summary.labelled, summary.failed, summary.model) == (2, 1, "test-model")
            assert summary.failures == {"not JSON": 1}
            assert summary.first_failure == "label answer is not JSON: 'These texts are about sport, I think.'"
            rows = store.query("SELECT label, auroc, detection FROM features WHERE method = 'llm'")
            assert rows["label"].to_list() == ["sports game results"] * 2
            assert rows["auroc"].is_not_null().all() and rows["detection"].is_between(0, 1).all()
            calls = len(server.requests)
            again = label_concepts(
                store, "news", method="llm", features=first, force=True, chat=chat, embedder=embedder
            )
            # Every usable answer came from the cache; the unusable one was asked again (usable now: the
            # script's second request), then the judge's 5 + 5 verdicts on its new label.
            assert len(server.requests) == calls + 1 + 2 * 5 and again.labelled == 3
            assert (again.failures, again.first_failure) == ({}, None)

            closed = CachedChat(
                OpenAICompatible("http://127.0.0.1:9/v1", "test-model", retry_base_delay=0.01, max_retries=1), store
            )
            with pytest.raises(SaeembedError, match="unreachable after 2 attempts"):
                label_concepts(store, "news", method="llm", features=later, chat=closed)
            assert store.query("SELECT count(*) AS n FROM features WHERE method = 'llm'")["n"][0] == 5
    finally:
        server.close()


def test_llm_labels_that_failed_are_asked_again_once_the_endpoint_answers_json(labelled_db, embedder, tmp_path):
    from saeembed.concepts.llm import CachedChat, OpenAICompatible
    from tests.support import ChatServer, completion

    mode = {"answer": "prose"}

    def script(number: int, request: dict) -> object:
        prompt = request["messages"][-1]["content"]
        if "concept is described as" in prompt:
            return completion(json.dumps({"applies": True}))
        if mode["answer"] == "prose":  # e.g. a chat template that makes the model chat instead of answering
            return completion("Sure! The concept is about sport and games.")
        return completion(json.dumps({"label": "sports game results", "description": "Match reports."}))

    db = tmp_path / "fixed.duckdb"
    copy_database(labelled_db, db)
    server = ChatServer(script)
    try:
        with Store.open(db) as store:
            ids = store.query(
                "SELECT feature_id FROM concept_frequency WHERE n_docs BETWEEN 40 AND 150 ORDER BY feature_id LIMIT 3"
            )["feature_id"].to_list()
            features = ",".join(map(str, ids))
            chat = CachedChat(OpenAICompatible(server.base_url, "test-model", retry_base_delay=0.01), store)
            with pytest.raises(SaeembedError) as caught:
                label_concepts(store, "news", method="llm", features=features, chat=chat, embedder=embedder)
            assert str(caught.value) == (
                "no concept labelled: 3 of 3 LLM answers were unusable (3 not JSON), "
                "e.g. label answer is not JSON: 'Sure! The concept is about sport and games.'"
            )
            assert (chat.calls, chat.cache_hits, len(server.requests)) == (3, 0, 3)
            assert store.query("SELECT count(*) AS n FROM llm_cache")["n"][0] == 0
            mode["answer"] = "json"
            fixed = label_concepts(store, "news", method="llm", features=features, chat=chat, embedder=embedder)
            assert (fixed.labelled, fixed.failed, fixed.failures) == (3, 0, {})
            # Three label requests made again (not read from the cache), then the judge's 2 × 5 per label.
            assert (chat.calls, chat.cache_hits) == (3 + 3 + 3 * 10, 0)
            labels = store.query("SELECT feature_id, label FROM features WHERE method = 'llm' ORDER BY feature_id")
            assert labels.rows() == [(feature_id, "sports game results") for feature_id in ids]
    finally:
        server.close()


def token_rows(store: Store) -> pl.DataFrame:
    return store.query(
        "SELECT feature_id, label, description, auroc FROM features "
        "WHERE method = 'tokens' AND run_id IS NOT NULL ORDER BY feature_id"
    )


def test_token_labels_commit_in_batches_so_a_killed_run_keeps_them_and_a_rerun_labels_the_rest(
    labelled_db, embedder, tmp_path
):
    copies = {name: tmp_path / f"{name}.duckdb" for name in ("at_once", "batched", "killed")}
    for path in copies.values():
        copy_database(labelled_db, path)
        # The corpus's token labels go; its held-out documents' sentence embeddings (seconds to make) stay.
        with Store.open(path) as store:
            store.query("DELETE FROM features WHERE method = 'tokens' AND run_id IS NOT NULL")
    with Store.open(copies["at_once"]) as store:
        label_concepts(store, "news", features="top:150", batch_size=500, embedder=embedder)
        at_once = token_rows(store)
    with Store.open(copies["batched"]) as store:
        stages = []
        label_concepts(
            store,
            "news",
            features="top:150",
            batch_size=50,
            embedder=embedder,
            on_progress=lambda stage, done, total: stages.append((stage, done, total)),
        )
        batched = token_rows(store)
    assert [entry for entry in stages if entry[0] == "label"] == [("label", n, 150) for n in (50, 100, 150)]
    # Batches score as labelling all at once does: held-out documents are drawn and embedded once.
    assert at_once.height == 150
    assert batched.select("feature_id", "label", "description").equals(
        at_once.select("feature_id", "label", "description")
    )
    np.testing.assert_allclose(batched["auroc"].to_numpy(), at_once["auroc"].to_numpy(), atol=1e-6)

    def interrupt(stage: str, done: int, total: int) -> None:
        if stage == "label":  # the first batch is committed: stop as a Ctrl-C would
            raise KeyboardInterrupt

    with Store.open(copies["killed"]) as store:
        with pytest.raises(KeyboardInterrupt):
            label_concepts(store, "news", features="top:150", batch_size=50, embedder=embedder, on_progress=interrupt)
        kept = token_rows(store)
        assert kept.equals(batched.head(50))
        rerun = label_concepts(store, "news", features="top:150", batch_size=50, embedder=embedder)
        assert (rerun.labelled, rerun.skipped, rerun.failed) == (100, 50, 0)
        resumed = token_rows(store)
    assert resumed.select("feature_id", "label").equals(at_once.select("feature_id", "label"))


def test_concepts_never_active_are_counted_as_failures_and_alone_raise(labelled_db, embedder, tmp_path):
    db = tmp_path / "absent.duckdb"
    copy_database(labelled_db, db)
    with Store.open(db) as store:
        present = set(store.query("SELECT DISTINCT feature_id FROM doc_features")["feature_id"].to_list())
        absent = min(set(range(8192)) - present)
        active = min(present)
        summary = label_concepts(store, "news", features=f"{active},{absent}", force=True, embedder=embedder)
        assert (summary.labelled, summary.failed) == (1, 1)
        assert summary.failures == {"never active in this corpus": 1}
        assert summary.first_failure == f"concept {absent} is never active in this corpus"
        with pytest.raises(SaeembedError) as caught:
            label_concepts(store, "news", features=str(absent), embedder=embedder)
    assert str(caught.value) == (
        "no concept labelled: 1 of 1 concepts could not be labelled (1 never active in this corpus), "
        f"e.g. concept {absent} is never active in this corpus"
    )


@pytest.mark.slow
def test_llm_labels_with_the_local_smollm2(labelled_db, embedder, tmp_path):
    from saeembed.concepts.llm import CachedChat, LocalTransformers

    db = tmp_path / "local.duckdb"
    copy_database(labelled_db, db)
    with Store.open(db) as store:
        ids = store.query(
            "SELECT feature_id FROM concept_frequency WHERE n_docs BETWEEN 40 AND 150 ORDER BY feature_id LIMIT 2"
        )["feature_id"].to_list()
        chat = CachedChat(LocalTransformers("smollm2-135m-instruct"), store)
        assert chat.model == "HuggingFaceTB/SmolLM2-135M-Instruct"
        # A 135M model often answers in prose instead of JSON: each concept is labelled or counted as failed,
        # and when none is labelled the run says why.
        try:
            summary = label_concepts(
                store, "news", method="llm", features=",".join(map(str, ids)), chat=chat, embedder=embedder
            )
        except SaeembedError as error:
            assert str(error).startswith("no concept labelled: 2 of 2 LLM answers were unusable ("), error
            labelled = 0
        else:
            assert summary.labelled + summary.failed == 2 and summary.labelled >= 1
            labelled = summary.labelled
        assert chat.calls >= 2
        # Only label answers that parse are cached: a prose answer is asked again by the next run.
        cached = store.query("SELECT count(*) AS n FROM llm_cache WHERE request->>'$.max_tokens' = '200'")["n"][0]
        assert cached == labelled


def test_a_corpus_without_labels_of_its_own_takes_shipped_labels_before_another_corpus(labelled_db, embedder, tmp_path):
    """Labels resolve this corpus → shipped with the SAE → another corpus (said so), and every listing that
    shows a label says which, with what the concept peaks on in the corpus at hand."""
    from saeembed.analysis.cluster import cluster_documents
    from saeembed.analysis.correlate import correlate_column, correlate_pairs
    from saeembed.analysis.diff import diff
    from saeembed.analysis.lookup import show_concept, show_document, top_concepts
    from saeembed.analysis.retrieve import search_documents, search_like
    from saeembed.concepts.provenance import current_labels
    from saeembed.model.tokens import load_tokenizer, token_at

    db = tmp_path / "two.duckdb"
    copy_database(labelled_db, db)
    source = tmp_path / "other.parquet"
    demo_corpus(n=30, seed=9).write_parquet(source)
    sports, rest = "meta->>'topic' = 'Sports'", "meta->>'topic' <> 'Sports'"
    with Store.open(db) as store:
        ingest(store, source, corpus="other")
        embed(store, "other", device="cpu", options=EmbedOptions(max_tokens=32))
        run = store.latest_run("other")
        for_other = current_labels(store, run.sae_id, store.corpus_id("other"))
        for_news = current_labels(store, run.sae_id, store.corpus_id("news"))
        shipped = set(store.query("SELECT feature_id FROM features WHERE run_id IS NULL")["feature_id"])
        strongest = store.query(
            "SELECT feature_id, argmax_pos, text FROM doc_features JOIN documents USING (doc_id) "
            "WHERE run_id = $run ORDER BY feature_id, max_act DESC, doc_id",
            {"run": run.run_id},
        )
        other_ids = store.query(
            "SELECT doc_id FROM documents WHERE corpus_id = $c ORDER BY doc_id", {"c": store.corpus_id("other")}
        )
        shown = show_concept(store, int(for_other["feature_id"][0]), corpus="other").labels
        listings = {
            "diff": diff(store, "other", "other", where_a=sports, where_b=rest, rank_by="delta", min_delta=0.0).table,
            "correlate": correlate_pairs(store, "other", min_npmi=0.0, min_count=2, top=10, embedder=embedder).pairs,
            "correlate-column": correlate_column(store, "other", "topic", min_count=2, top=10).table,
            "cluster": cluster_documents(store, "other", about="sports", embedder=embedder, n_concepts=10).concepts,
            "concepts top": top_concepts(store, "other", top=10),
            "docs show": show_document(store, int(other_ids["doc_id"][0]), top=10).concepts,
            "search": search_documents(store, "sports", corpus="other", embedder=embedder).concepts,
            "search --like": search_like(store, other_ids["doc_id"].head(3).to_list(), corpus="other").concepts,
        }
    sources = dict(zip(for_other["feature_id"], for_other["label_source"], strict=True))
    assert sources and all(sources[f] == "shipped" for f in shipped if f in sources)
    assert set(sources.values()) <= {"shipped", "corpus news"}
    assert all(source == "corpus news" for f, source in sources.items() if f not in shipped)
    assert set(for_news["label_source"]) == {"this corpus"} | ({"shipped"} if for_news.height > 1000 else set())
    news_labelled = for_news.filter(pl.col("label_source") == "this corpus")["feature_id"].to_list()
    assert len(news_labelled) > 1000
    assert shown["label_source"][0] == sources[int(for_other["feature_id"][0])]
    for name, table in listings.items():
        pairs = [("feature_a", "_a"), ("feature_b", "_b")] if name == "correlate" else [("feature_id", "")]
        for column, suffix in pairs:
            rows = table.select(column, "label" + suffix, "label_source" + suffix).rows() if table.height else []
            assert rows, name
            assert all(source == sources.get(f) for f, _, source in rows), (name, rows[:3])
    # Peak tokens are this corpus's: the most common token at the stored argmax of each concept's strongest
    # documents of 'other', re-found with the reader's tokenizer.
    tokenizer = load_tokenizer(run.reader_model)
    for feature_id, peaks in listings["diff"].select("feature_id", "peak_tokens").head(5).iter_rows():
        top = strongest.filter(pl.col("feature_id") == feature_id).head(10)
        offsets = tokenizer.offsets(top["text"].to_list())
        tokens = [token_at(t, o, p).strip() for t, o, p in zip(top["text"], offsets, top["argmax_pos"], strict=True)]
        assert peaks.split(", ")[0] in tokens, (feature_id, peaks, tokens)


def test_a_release_comparison_beside_a_labelled_corpus_labels_the_releases_and_shows_no_label_of_that_corpus(
    labelled_db, prefect_harness, tmp_path
):
    """The issue's case: releases compared in a database whose other corpus is labelled. Too large to label
    (--label-max-docs below its size), the releases go by the SAE's shipped labels, with a warning; labelled
    (the default), by labels of their own that name the list markers of v2 and the French of v3."""
    from saeembed_flows.compare_releases import compare_releases_flow

    from saeembed.analysis.releases import load_comparison

    db = tmp_path / "with-news.duckdb"
    copy_database(labelled_db, db)
    report = tmp_path / "releases.html"
    options = {"max_tokens": 64, "device": "cpu", "db": str(db), "report": str(report)}  # the bundled example
    unlabelled = compare_releases_flow(**options, label_max_docs=100)
    assert unlabelled["labels"]["labelled"] == 0
    assert unlabelled["labels"]["warning"].startswith("corpus 'releases' has 144 documents, more than --label-max")
    with Store.open(db, read_only=True) as store:
        changes = load_comparison(store, unlabelled["analysis_id"]).changes
    assert changes.height and set(changes["label_source"].drop_nulls()) == {"shipped"}
    assert "label: shipped" in report.read_text(encoding="utf-8")

    labelled = compare_releases_flow(**options)
    assert labelled["labels"]["labelled"] > 1000 and labelled["labels"]["warning"] is None
    with Store.open(db, read_only=True) as store:
        changes = load_comparison(store, labelled["analysis_id"]).changes
    page = report.read_text(encoding="utf-8")
    assert "label: this corpus" in page and "corpus news" not in page
    assert set(changes["label_source"].drop_nulls()) <= {"this corpus", "shipped"}
    top = changes.filter(pl.col("against_kind") == "previous", pl.col("rank") <= 3)
    assert set(top["label_source"]) == {"this corpus"}
    rising_v2 = top.filter(pl.col("release") == "v2")
    marker = re.compile(r'^"?([-*•.]|\d+)"?$')  # a token label of a list marker: "-", ".", "1", "3"…
    assert marker.match(rising_v2["label"][0]), rising_v2["label"].to_list()
    assert sum(bool(marker.match(label)) for label in rising_v2["label"]) >= 2, rising_v2["label"].to_list()
    french = {"est", "les", "pour", "pas", "ne", "une", "des", "que", "cela", "être", "qui", "dans"}
    rising_v3 = top.filter(pl.col("release") == "v3")["label"].to_list()
    assert all(french & set(re.findall(r"\w+", label)) for label in rising_v3), rising_v3


def test_concept_search_says_where_each_label_was_made(labelled_db, embedder):
    with Store.open(labelled_db, read_only=True) as store:
        hits = search_concepts(store, "baseball", corpus="news", top=5, embedder=embedder)
    assert hits.height == 5 and set(hits["label_source"]) == {"this corpus"}


def test_search_by_five_sports_articles_returns_mostly_sports_articles(labelled_db, embedder):
    """Search by example on real AG News articles: five Sports articles (not themselves returned) find mostly
    Sports articles in every mode, and the concepts chosen are those the five share more than the rest."""
    from saeembed.analysis.retrieve import search_like

    with Store.open(labelled_db) as store:
        topics = store.query("SELECT doc_id, meta->>'topic' AS topic FROM documents ORDER BY doc_id")
        sports = topics.filter(pl.col("topic") == "Sports")["doc_id"]
        examples = sports.sample(5, seed=0).to_list()
        found = {
            mode: search_like(store, examples, corpus="news", mode=mode, top=10, embedder=embedder)
            for mode in ("sae", "dense", "fused")
        }
    topic = dict(topics.iter_rows())
    for mode, result in found.items():
        returned = result.documents["doc_id"].to_list()
        assert len(returned) == 10 and not set(returned) & set(examples), mode
        assert sum(topic[d] == "Sports" for d in returned) >= 7, (mode, [topic[d] for d in returned])
    concepts = found["sae"].concepts
    assert concepts.height and (concepts["like_share"] > concepts["background_share"]).all()
    assert concepts["delta"].is_sorted(descending=True)
    assert set(concepts["label_source"].drop_nulls()) == {"this corpus"} and concepts["peak_tokens"].is_not_null().all()


def marked_spans(text: str) -> list[tuple[int, int]]:
    """The character spans of the original text that `mark_positions` put between « and »."""
    spans, cursor, start = [], 0, None
    for char in text:
        if char == "«":
            start = cursor
        elif char == "»":
            spans.append((start, cursor))
        else:
            cursor += 1
    return spans


def test_concept_pages_of_the_top_concepts_mark_every_firing_token(labelled_db, tmp_path, capsys):
    """The pages of the corpus's two most frequent concepts (one from the library, one from the command):
    every top document's stored peak token is marked (the reader re-read them), the histogram counts every
    document where the concept fires, and the co-occurring concepts' NPMI and the frequency by topic are the
    store's, computed by hand."""
    from saeembed.analysis.lookup import HISTOGRAM_BINS, concept_profile, top_concepts
    from saeembed.cli import main
    from saeembed.model.tokens import load_tokenizer
    from saeembed.reports.concept import concept_report

    with Store.open(labelled_db, read_only=True) as store:
        run = store.latest_run("news")
        first, second = top_concepts(store, "news", top=2)["feature_id"].to_list()
        profile = concept_profile(store, first, corpus="news", top=5, by="topic")
        rows = store.query(
            "SELECT f.feature_id, f.doc_id, f.argmax_pos, d.text, d.meta->>'topic' AS topic FROM doc_features f "
            "JOIN documents d USING (doc_id) WHERE f.run_id = $r",
            {"r": run.run_id},
        )
        topics = store.query("SELECT meta->>'topic' AS topic, count(*) AS n FROM documents GROUP BY 1")
        with pytest.raises(SaeembedError, match="meta column 'genre'"):
            concept_profile(store, first, corpus="news", by="genre")
    html = concept_report(profile)
    assert "http" not in html and html.count("class='bin'") == HISTOGRAM_BINS and "this corpus" in html
    page = tmp_path / "concept.html"
    command = ["concepts", "show", str(second), "--corpus", "news", "--html", str(page), "--by", "topic"]
    with pytest.raises(SystemExit) as done:
        main([*command, "--db", str(labelled_db), "--json", "--top", "5"])
    assert done.value.code == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["html"] == str(page.resolve()) and page.read_text(encoding="utf-8").count("class='bin'") == 20
    pages = {
        first: (profile.view.documents.to_dicts(), profile.histogram.to_dicts(), profile.cooccurring.to_dicts(),
                profile.by_column.to_dicts(), profile.view.n_docs),
        second: (shown["documents"], shown["histogram"], shown["cooccurring"], shown["by_column"], shown["n_docs"]),
    }  # fmt: skip
    tokenizer = load_tokenizer(run.reader_model)
    docs_of = {f: set(d) for f, d in rows.group_by("feature_id").agg("doc_id").iter_rows()}
    n_docs = rows["doc_id"].n_unique()
    for feature_id, (documents, histogram, cooccurring, by_column, present_in) in pages.items():
        mine = rows.filter(pl.col("feature_id") == feature_id)
        for document in documents:
            text, position = mine.filter(pl.col("doc_id") == document["doc_id"]).select("text", "argmax_pos").row(0)
            start, end = tokenizer.offsets([text])[0][position]
            start += len(text[start:end]) - len(text[start:end].lstrip())  # marks leave the leading space out
            assert any(a <= start and end <= b for a, b in marked_spans(document["marked"])), document["doc_id"]
        assert sum(b["n"] for b in histogram) == mine.height == present_in
        for other in cooccurring:
            both = len(docs_of[feature_id] & docs_of[other["feature_id"]])
            p_ab, p_a, p_b = (
                both / n_docs,
                len(docs_of[feature_id]) / n_docs,
                len(docs_of[other["feature_id"]]) / n_docs,
            )
            # NPMI is 1 for two concepts in every document (Bouma's limit), else log[p_ab/(p_a p_b)] / −log p_ab.
            expected_npmi = 1.0 if p_ab == 1 else np.log(p_ab / (p_a * p_b)) / -np.log(p_ab)
            assert other["n_ab"] == both and other["npmi"] == pytest.approx(expected_npmi)
        assert [c["npmi"] for c in cooccurring] == sorted((c["npmi"] for c in cooccurring), reverse=True)
        by_hand = mine.group_by("topic").len().join(topics, on="topic")
        expected = {topic: present / n for topic, present, n in by_hand.iter_rows()}
        assert {row["level"]: row["share"] for row in by_column} == {t: expected.get(t, 0.0) for t in topics["topic"]}
