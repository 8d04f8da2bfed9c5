"""Units below the document (`embed --unit`): the spans partition each text, every token lands in one unit,
a one-unit document pools exactly as the document does, and analyses reach the units with --level unit."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from saeembed.cli import main
from saeembed.errors import SaeembedError
from saeembed.jobs import embed, ingest
from saeembed.model.pooling import EmbedOptions
from saeembed.model.units import UnitSpec, parse_unit, token_units, unit_spans
from saeembed.storage.store import Store
from tests.support import small_sae

DOCUMENTS = {
    "one": "The cat sat on the mat.",
    "mixed": (
        "Hello world. The cat sat on Dr. Smith's mat at 3.5 p.m. today.\n\n"
        "- first point\n- second point\n\nFinally, it ends!  Really?"
    ),
    "paragraphs": "First paragraph, one sentence.\n\nSecond paragraph. It has two sentences.\n \n\nThird.",
    "spaced": "  Leading spaces. Then a question? Yes.   ",
}


def covers(text: str, spans: list[tuple[int, int]]) -> bool:
    """The spans partition the text, in order, none of them blank."""
    return (
        spans[0][0] == 0
        and spans[-1][1] == len(text)
        and all(end == start for (_, end), (start, _) in itertools.pairwise(spans))
        and all(text[start:end].strip() for start, end in spans)
    )


def test_unit_specs_parse_and_bad_ones_are_refused():
    assert parse_unit("sentence") == UnitSpec("sentence")
    assert parse_unit(" Paragraph ") == UnitSpec("paragraph")
    assert parse_unit("chunk:64") == UnitSpec("chunk", 64)
    assert str(parse_unit("chunk:64")) == "chunk:64"
    assert parse_unit("document").is_document
    for bad, message in [
        ("sentences", "--unit must be one of"),
        ("chunk", "--unit must be one of"),
        ("chunk:", "--unit must be one of"),
        ("chunk:0", "chunk size must be between 1"),
        ("chunk:-3", "chunk size must be between 1"),
        ("chunk:99999999", "chunk size must be between 1"),
    ]:
        with pytest.raises(SaeembedError, match=message):
            parse_unit(bad)


def test_sentences_and_paragraphs_of_hand_made_text():
    text = DOCUMENTS["mixed"]
    sentences = [text[s:e] for s, e in unit_spans(text, UnitSpec("sentence"))]
    assert [s.strip() for s in sentences] == [
        "Hello world.",
        "The cat sat on Dr. Smith's mat at 3.5 p.m. today.",  # abbreviations and numbers do not end it
        "- first point",  # each line of a list is a unit
        "- second point",
        "Finally, it ends!",
        "Really?",
    ]
    numbered = "1. Time is a thing. Greeks knew it.\n\n2. Chronos is time.\nb) Aion is too.\n* And so on."
    items = [numbered[s:e].strip() for s, e in unit_spans(numbered, UnitSpec("sentence"))]
    # sentencex alone ends a sentence after "1."; the marker stays with its item.
    assert items == ["1. Time is a thing.", "Greeks knew it.", "2. Chronos is time.", "b) Aion is too.", "* And so on."]
    paragraphs = DOCUMENTS["paragraphs"]
    spans = unit_spans(paragraphs, UnitSpec("paragraph"))
    assert [paragraphs[s:e].strip() for s, e in spans] == [
        "First paragraph, one sentence.",
        "Second paragraph. It has two sentences.",
        "Third.",
    ]
    for text in DOCUMENTS.values():
        for kind in ("sentence", "paragraph", "document"):
            assert covers(text, unit_spans(text, UnitSpec(kind)))
    # Leading whitespace joins the first unit, trailing whitespace the last.
    assert unit_spans(DOCUMENTS["spaced"], UnitSpec("sentence"))[0][0] == 0


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab .!?\n\t-1")), min_size=1, max_size=80).filter(str.strip))
def test_spans_partition_any_text(text):
    for kind in ("sentence", "paragraph"):
        assert covers(text, unit_spans(text, UnitSpec(kind)))


def test_chunks_hold_n_tokens_and_every_token_lands_in_one_unit(reader):
    text = DOCUMENTS["mixed"]
    offsets = reader.token_offsets([text])[0]
    spans = unit_spans(text, UnitSpec("chunk", 5), offsets)
    assert covers(text, spans)
    owner = token_units(offsets, spans)
    assert np.all(np.diff(owner) >= 0)  # a unit's tokens are consecutive
    assert np.bincount(owner).tolist()[:-1] == [5] * (len(spans) - 1)
    sentences = unit_spans(text, UnitSpec("sentence"))
    owner = token_units(offsets, sentences)
    # " The" starts with the space that ends sentence 0, but its word is in sentence 1.
    the = next(i for i, (s, e) in enumerate(offsets) if text[s:e] == " The")
    assert owner[the] == 1
    assert len(owner) == len(offsets) and set(owner.tolist()) == set(range(len(sentences)))


@pytest.fixture()
def unit_db(tmp_path: Path) -> Path:
    source = tmp_path / "docs.jsonl"
    pl.DataFrame({"id": list(DOCUMENTS), "text": list(DOCUMENTS.values())}).write_ndjson(source)
    db = tmp_path / "units.duckdb"
    with Store.open(db) as store:
        ingest(store, source, corpus="notes", id_col="id")
    return db


def test_units_are_stored_with_spans_and_pooled_from_the_whole_document(tmp_path, unit_db, reader):
    sae = str(small_sae(tmp_path / "sae"))
    options = EmbedOptions(max_tokens=64, batch_size=2)
    settings = {"sae": sae, "device": "cpu", "dtype": "float32", "options": options}
    with Store.open(unit_db) as store:
        whole = embed(store, "notes", **settings)
        units = embed(store, "notes", unit="sentence", **settings)
        spans = store.query(
            "SELECT d.external_id, u.parent_doc_id, u.unit_index, u.char_start, u.char_end, d.text, p.text AS parent "
            "FROM units u JOIN documents d USING (doc_id) JOIN documents p ON p.doc_id = u.parent_doc_id "
            "ORDER BY u.parent_doc_id, u.unit_index"
        )
        rows = store.query(
            "SELECT run_id, doc_id, feature_id, max_act, mean_act, n_active_tokens, argmax_pos FROM doc_features"
        )
        tokens = store.query("SELECT run_id, doc_id, n_tokens FROM embedded_documents")
        problems = store.check()
    assert units.corpus == "notes:sentence" and whole.corpus == "notes"
    assert units.documents == spans.height == 1 + 6 + 4 + 3
    assert units.tokens == whole.tokens  # every token of every document pooled into exactly one unit
    assert problems == []
    for _, group in spans.group_by("parent_doc_id"):
        text = group["parent"][0]
        assert covers(text, list(zip(group["char_start"], group["char_end"], strict=True)))
        assert "".join(group["text"]) == text
    assert spans.filter(pl.col("unit_index") == 1)["external_id"].to_list() == ["mixed#1", "paragraphs#1", "spaced#1"]
    # Each document's units share out its tokens.
    per_unit = tokens.filter(pl.col("run_id") == units.run_id).join(
        store_units(unit_db).select("doc_id", "parent_doc_id"), on="doc_id"
    )
    summed = per_unit.group_by("parent_doc_id").agg(pl.col("n_tokens").sum()).sort("parent_doc_id")
    per_doc = tokens.filter(pl.col("run_id") == whole.run_id).sort("doc_id")
    assert summed["n_tokens"].to_list() == per_doc["n_tokens"].to_list()
    # A one-sentence document: its one unit's vector is the document's, row for row.
    one_doc = spans.filter(pl.col("external_id") == "one#0")["parent_doc_id"][0]
    one_unit = store_units(unit_db).filter(pl.col("parent_doc_id") == one_doc)["doc_id"][0]
    by_doc = rows.filter((pl.col("run_id") == whole.run_id) & (pl.col("doc_id") == one_doc)).drop("run_id", "doc_id")
    by_unit = rows.filter((pl.col("run_id") == units.run_id) & (pl.col("doc_id") == one_unit)).drop("run_id", "doc_id")
    assert by_doc.height > 0 and by_doc.sort("feature_id").equals(by_unit.sort("feature_id"))


def store_units(db: Path) -> pl.DataFrame:
    with Store.open(db, read_only=True) as store:
        return store.query("SELECT doc_id, parent_doc_id FROM units ORDER BY doc_id")


def test_a_rerun_adds_nothing_and_new_documents_are_split_on_the_next_embed(tmp_path, unit_db, reader):
    sae = str(small_sae(tmp_path / "sae"))
    settings = {"sae": sae, "device": "cpu", "dtype": "float32", "options": EmbedOptions(max_tokens=64)}
    with Store.open(unit_db) as store:
        first = embed(store, "notes", unit="paragraph", **settings)
        again = embed(store, "notes", unit="paragraph", **settings)
        extra = tmp_path / "more.jsonl"
        extra.write_text(json.dumps({"id": "late", "text": "A late one.\n\nWith two paragraphs."}) + "\n")
        ingest(store, extra, corpus="notes", id_col="id")
        late = embed(store, "notes", unit="paragraph", **settings)
        with pytest.raises(SaeembedError, match="is a corpus of units already"):
            embed(store, "notes:paragraph", unit="sentence", **settings)
        with pytest.raises(SaeembedError, match="is a corpus of units: embed its documents with --unit"):
            embed(store, "notes:paragraph", **settings)
        counts = store.query("SELECT count(*) AS n FROM units")["n"][0]
    assert (first.documents, again.documents, late.documents) == (1 + 3 + 3 + 1, 0, 2)
    assert first.run_id == again.run_id == late.run_id
    assert counts == 10


def test_truncated_documents_keep_units_past_the_cut_with_no_tokens(tmp_path, unit_db, reader):
    sae = str(small_sae(tmp_path / "sae"))
    with Store.open(unit_db) as store:
        embed(
            store, "notes", unit="sentence", sae=sae, device="cpu", dtype="float32", options=EmbedOptions(max_tokens=4)
        )
        late = store.query(
            "SELECT e.n_tokens, e.n_tokens_total, e.truncated, e.n_features FROM embedded_documents e "
            "JOIN units u USING (doc_id) JOIN documents d USING (doc_id) WHERE d.external_id = 'mixed#5'"
        ).row(0, named=True)
    assert late == {"n_tokens": 0, "n_tokens_total": 2, "truncated": True, "n_features": 0}


def test_unit_level_search_and_docs_show_through_the_cli(tmp_path, unit_db, reader, capsys):
    sae = str(small_sae(tmp_path / "sae"))
    with Store.open(unit_db) as store:
        for unit in ("document", "sentence"):
            embed(store, "notes", unit=unit, sae=sae, device="cpu", dtype="float32", options=EmbedOptions())
        parent = store.query("SELECT doc_id FROM documents WHERE external_id = 'mixed'")["doc_id"][0]
        bullet = store.query("SELECT doc_id FROM documents WHERE external_id = 'mixed#2'")["doc_id"][0]
    page = tmp_path / "search.html"
    args = ["search", "first point", "--corpus", "notes", "--unit", "sentence", "--mode", "dense"]
    args += ["--report", str(page)]
    result = json.loads(run(capsys, args, unit_db))
    top = result["documents"][0]
    assert top["doc_id"] == bullet and top["parent_doc_id"] == parent
    assert "«- first point»\n- second point" in top["in_document"]
    html = page.read_text(encoding="utf-8")  # the page marks the sentence inside its document too
    assert f"<td class='num'>{bullet}</td><td class='num'>{parent}</td>" in html
    assert "<mark>- first point</mark>\n- second point" in html
    shown = json.loads(run(capsys, ["docs", "show", str(parent)], unit_db))
    assert [u["unit_index"] for u in shown["units"]] == list(range(6))
    assert shown["units"][2]["doc_id"] == bullet and shown["units"][2]["text"] == "- first point\n"
    assert all(u["concepts"].count("«") == 3 for u in shown["units"])
    for u in shown["units"]:  # each concept's peak token is a token of its own unit
        assert len(u["feature_ids"]) == len(u["peak_tokens"]) == 3
        assert all(token and token.strip() in u["text"] for token in u["peak_tokens"])
    unit = json.loads(run(capsys, ["docs", "show", str(bullet)], unit_db))
    assert unit["parent_doc_id"] == parent and "«- first point»" in unit["in_document"]


def run(capsys: pytest.CaptureFixture, args: list[str], db: Path) -> str:
    with pytest.raises(SystemExit) as done:
        main([*args, "--db", str(db), "--json"])
    captured = capsys.readouterr()
    assert done.value.code == 0, captured.err
    return captured.out


def test_step_level_training_rows_are_each_sentences_mean_activation(reader):
    """`train-sae --unit sentence` collects one row per sentence: the mean of its tokens' residuals, read in
    the whole document (RISE)."""
    import torch

    from saeembed.model.train import collect_activations

    texts = [DOCUMENTS["one"], DOCUMENTS["mixed"]]  # shortest first: the order they are read in
    rows = collect_activations(reader, texts, max_tokens=64, unit=parse_unit("sentence"), batch_size=1)
    tokens = collect_activations(reader, texts, max_tokens=64, batch_size=1)
    expected = []
    offsets = reader.token_offsets(texts)
    start = 0
    for text, offset in zip(texts, offsets, strict=True):
        owner = token_units(offset, unit_spans(text, parse_unit("sentence"), offset))
        mine = tokens[start : start + len(offset)].float()
        expected += [mine[torch.as_tensor(owner == u)].mean(0) for u in range(owner.max() + 1)]
        start += len(offset)
    assert rows.shape == (1 + 6, reader.hidden_size)
    assert torch.allclose(rows.float(), torch.stack(expected), rtol=1e-2, atol=1e-2)


def test_a_step_level_sae_names_its_unit_as_embed_spells_it(tmp_path):
    """`train-sae --unit Sentence` is stored as 'sentence', which `embed --unit sentence` matches; an SAE
    file whose input_unit is spelled otherwise is refused on load rather than never matching."""
    from saeembed.model.sae import SaeConfig
    from saeembed.options import TrainSaeOptions

    options = TrainSaeOptions(corpus="c", layer=3, out=str(tmp_path / "sae"), unit=" Sentence ")
    assert options.unit == "sentence"
    assert TrainSaeOptions(corpus="c", layer=3, out=str(tmp_path / "sae"), unit="CHUNK:64").unit == "chunk:64"
    assert SaeConfig(arch="topk", d_in=4, d_sae=8, k=2, input_unit="chunk:64").input_unit == "chunk:64"
    refused = [("Sentence", "input_unit must be 'token' or a unit"), ("step", "SAE input_unit must be one of")]
    for bad, message in refused:
        with pytest.raises(SaeembedError, match=message):
            SaeConfig(arch="topk", d_in=4, d_sae=8, k=2, input_unit=bad)
