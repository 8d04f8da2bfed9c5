"""Marking tokens «like this» with the reader's tokenizer read on its own (no torch, no model)."""

from __future__ import annotations

from saeembed.model.tokens import load_tokenizer, mark_context, mark_positions, token_at

TEXTS = ["The dollar made slight gains on Monday.", "Héllo wörld — naïve café!\nNew line.", ""]


def test_offsets_match_the_readers_own_tokens(reader):
    tokenizer = load_tokenizer(reader.model_id)
    offsets = tokenizer.offsets(TEXTS)
    tokenized = reader.tokenize(TEXTS, max_tokens=512)
    assert [len(o) for o in offsets] == [len(ids) for ids in tokenized.ids]
    for text, text_offsets in zip(TEXTS, offsets, strict=True):
        pieces = [token_at(text, text_offsets, p) for p in range(len(text_offsets))]
        assert "".join(pieces) == text


def test_mark_positions_marks_exactly_the_given_tokens_and_merges_neighbours(reader):
    text = TEXTS[0]
    offsets = load_tokenizer(reader.model_id).offsets([text])[0]
    words = [token_at(text, offsets, p) for p in range(len(offsets))]
    assert words[:4] == ["The", " dollar", " made", " slight"]
    assert mark_positions(text, offsets, [1]) == "The «dollar» made slight gains on Monday."
    assert mark_positions(text, offsets, [1, 2, 4]) == "The «dollar made» slight «gains» on Monday."
    assert mark_positions(text, offsets, []) == text
    assert mark_positions(text, offsets, [999]) == text


def test_mark_context_and_positions_past_the_end(reader):
    text = TEXTS[0]
    offsets = load_tokenizer(reader.model_id).offsets([text])[0]
    assert mark_context(text, offsets, 2, context=1) == "… dollar« made» slight…"
    assert token_at(text, offsets, 10_000) == "."
    assert mark_context("", [], 0) == ""
