"""Units below the document: sentences, paragraphs or chunks of N tokens, as character spans.

A unit has its own pooled concept vector, but the reader still reads the whole document (context
matters, as in RISE's sentence-level steps): only pooling is per unit. The spans of a document's units
partition its text (no gap, no overlap, in order), so every token of the document belongs to exactly
one unit (`token_units`), and a one-unit document pools exactly as the document does.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from saeembed.errors import SaeembedError

UNIT_KINDS = ("document", "sentence", "paragraph", "chunk:N")
TOKEN_INPUT = "token"
"""An SAE input that is one token's residual, as opposed to a unit's mean residual (`train-sae --unit`)."""
MAX_CHUNK_TOKENS = 1_048_576

Span = tuple[int, int]

# A blank line (spaces and tabs allowed on it) ends a paragraph; the blank run stays with the paragraph before.
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
# A list marker alone ("1.", "b)", "iv.", "-"): sentencex ends a sentence after "1." before a capital, but the
# marker belongs to the item it opens.
_LIST_MARKER = re.compile(r"\s*(?:(?:\d{1,3}|[A-Za-z]|[ivxlcIVXLC]{1,6})[.)]|[-*•–])\s*")


class UnitSpec(NamedTuple):
    kind: str
    """'document', 'sentence', 'paragraph' or 'chunk'."""
    tokens: int = 0
    """Tokens per chunk (kind 'chunk' only)."""

    def __str__(self) -> str:
        return f"chunk:{self.tokens}" if self.kind == "chunk" else self.kind

    @property
    def is_document(self) -> bool:
        return self.kind == "document"


def parse_unit(spec: str, option: str = "--unit") -> UnitSpec:
    """'document', 'sentence', 'paragraph' or 'chunk:N' (N tokens of the reader, N ≥ 1)."""
    text = str(spec).strip().lower()
    if text in ("document", "sentence", "paragraph"):
        return UnitSpec(text)
    match = re.fullmatch(r"chunk:(-?\d+)", text)
    if match is None:
        raise SaeembedError(f"{option} must be one of {', '.join(UNIT_KINDS)}, got {spec!r}")
    tokens = int(match.group(1))
    if not 1 <= tokens <= MAX_CHUNK_TOKENS:
        raise SaeembedError(f"{option} chunk size must be between 1 and {MAX_CHUNK_TOKENS:,} tokens, got {tokens:,}")
    return UnitSpec("chunk", tokens)


def unit_spans(text: str, spec: UnitSpec, offsets: Sequence[Span] | None = None) -> list[Span]:
    """The (start, end) character spans of `text`'s units, partitioning it; a span is never only
    whitespace (whitespace between units goes to the unit before it, or after it at the start).

    Sentences come from sentencex (Wikimedia's rule-based segmenter: abbreviations, numbers and quotes
    handled, line breaks end a sentence, so each item of a list is a unit, its marker "1." or "-" with it).
    Chunks need the token `offsets` of the reader's tokenizer: a chunk starts where its first token starts.
    """
    if not text:
        return []
    if spec.kind == "document":
        cuts = [0]
    elif spec.kind == "sentence":
        from sentencex import get_sentence_boundaries

        pieces = get_sentence_boundaries("en", text)
        cuts = [0] + [
            after["start_index"]
            for before, after in itertools.pairwise(pieces)
            if not _LIST_MARKER.fullmatch(text[before["start_index"] : before["end_index"]])
        ]
    elif spec.kind == "paragraph":
        cuts = [0, *(m.end() for m in _PARAGRAPH_BREAK.finditer(text))]
    elif spec.kind == "chunk":
        if offsets is None:
            raise SaeembedError("chunk units need the reader's token offsets")
        cuts = [0, *(offsets[i][0] for i in range(spec.tokens, len(offsets), spec.tokens))]
    else:
        raise SaeembedError(f"unknown unit kind {spec.kind!r}")
    return _merge_blank([*sorted({c for c in cuts if 0 <= c < len(text)} | {0}), len(text)], text)


def _merge_blank(cuts: list[int], text: str) -> list[Span]:
    spans: list[Span] = []
    for start, end in itertools.pairwise(cuts):
        if text[start:end].strip() or not spans:
            spans.append((start, end))
        else:
            spans[-1] = (spans[-1][0], end)
    if len(spans) > 1 and not text[spans[0][0] : spans[0][1]].strip():
        spans[1] = (spans[0][0], spans[1][1])
        del spans[0]
    return spans


def token_units(offsets: Sequence[Span], spans: Sequence[Span]) -> np.ndarray:
    """For each token, the index of the unit holding its last character.

    Byte-level BPE tokens carry their leading space (" The"), which sits in the unit before; the token's
    last character says where its word is. A token without characters (offsets (s, s)) goes where s is.
    """
    if not offsets:
        return np.zeros(0, dtype=np.int64)
    starts = np.asarray([start for start, _ in spans], dtype=np.int64)
    ends = np.asarray([end for _, end in offsets], dtype=np.int64)
    begins = np.asarray([start for start, _ in offsets], dtype=np.int64)
    last_char = np.maximum(ends - 1, begins)
    return np.clip(np.searchsorted(starts, last_char, side="right") - 1, 0, len(spans) - 1)
