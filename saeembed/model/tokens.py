"""A reader's tokenizer without the reader, for marking where concepts fired «like this».

Token positions in the store (`argmax_pos`) index each document's own tokens (no special tokens, no
chat template), exactly as `Reader.tokenize` produced them. Look-ups only need those tokens' character
offsets, so the tokenizer is read straight from its `tokenizer.json` with the `tokenizers` library
where there is one: importing torch and transformers would cost the look-up ~3 s.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

from saeembed.errors import SaeembedError
from saeembed.model.hub import converted_gguf_dir, resolve_reader

Offsets = list[tuple[int, int]]

CONTEXT_TOKENS = 6


class TextTokenizer:
    """Character offsets of a document's own tokens, from `tokenizers` or a transformers tokenizer."""

    def __init__(self, backend: object) -> None:
        self._backend = backend

    def offsets(self, texts: Sequence[str]) -> list[Offsets]:
        """Per text, (start, end) character offsets of each token (no special tokens)."""
        from tokenizers import Tokenizer

        if isinstance(self._backend, Tokenizer):
            return [e.offsets for e in self._backend.encode_batch(list(texts), add_special_tokens=False)]
        encoded = self._backend(list(texts), add_special_tokens=False, return_offsets_mapping=True)
        return [list(map(tuple, o)) for o in encoded.offset_mapping]


@lru_cache(maxsize=4)
def load_tokenizer(model_id: str) -> TextTokenizer:
    """The tokenizer of reader `model_id` (as recorded on a run)."""
    from tokenizers import Tokenizer

    source = resolve_reader(model_id)
    folder = converted_gguf_dir(source) if source.gguf_file is not None else Path(source.location)
    if (folder / "tokenizer.json").exists():
        return TextTokenizer(Tokenizer.from_file(str(folder / "tokenizer.json")))
    # A reader not loaded on this machine yet (or a hub id): transformers can fetch or convert it.
    from transformers import AutoTokenizer

    kwargs = {"gguf_file": source.gguf_file} if source.gguf_file is not None else {}
    try:
        return TextTokenizer(AutoTokenizer.from_pretrained(source.location, **kwargs))
    except OSError as error:
        raise SaeembedError(f"cannot load the tokenizer of {model_id}: {error}".split("\n")[0]) from None


def token_at(text: str, offsets: Offsets, position: int) -> str:
    """The text of token `position` (the last token when a stored position lies past the end)."""
    if not offsets:
        return ""
    start, end = offsets[min(position, len(offsets) - 1)]
    return text[start:end]


def mark_context(text: str, offsets: Offsets, position: int, *, context: int = CONTEXT_TOKENS) -> str:
    """A snippet of ±context tokens around token `position`, the token marked «like this»."""
    if not offsets:
        return ""
    position = min(position, len(offsets) - 1)
    start, end = offsets[position]
    left = offsets[max(0, position - context)][0]
    right = offsets[min(len(offsets) - 1, position + context)][1]
    snippet = f"{text[left:start]}«{text[start:end]}»{text[end:right]}".replace("\n", " ")
    return f"{'…' if left > 0 else ''}{snippet}{'…' if right < len(text) else ''}"


def mark_positions(text: str, offsets: Offsets, positions: Iterable[int]) -> str:
    """The whole text with the tokens at `positions` marked «like this»; runs of adjacent marked tokens
    share one pair of marks, as in the auto-interp prompts of Jiang et al. (2025)."""
    marked = sorted({p for p in positions if 0 <= p < len(offsets)})
    spans: list[list[int]] = []
    for position in marked:
        start, end = offsets[position]
        if spans and (spans[-1][2] == position - 1):
            spans[-1][1], spans[-1][2] = end, position
        else:
            spans.append([start, end, position])
    pieces, cursor = [], 0
    for start, end, _ in spans:
        # Byte-level BPE tokens carry their leading space; keep it outside the marks.
        while start < end and text[start].isspace():
            start += 1
        pieces += [text[cursor:start], "«", text[start:end], "»"]
        cursor = end
    pieces.append(text[cursor:])
    return "".join(pieces)


SPAN_CONTEXT_CHARS = 300


def mark_span(text: str, start: int, end: int, *, context: int = SPAN_CONTEXT_CHARS) -> str:
    """`text` with the span [start, end) marked «like this» (its edge whitespace left outside the marks) and
    at most `context` characters kept either side, so a sentence is shown in its document."""
    inner = text[start:end]
    lead = len(inner) - len(inner.lstrip())
    trail = len(inner) - len(inner.rstrip())
    left, right = max(0, start - context), min(len(text), end + context)
    core_start, core_end = start + lead, end - trail
    marked = f"{text[left:core_start]}«{text[core_start:core_end]}»{text[core_end:right]}"
    return f"{'…' if left > 0 else ''}{marked}{'…' if right < len(text) else ''}"
