"""Interactive look-ups over the store: a document's concepts, a corpus's most frequent concepts.

These answer straight from DuckDB plus the reader's tokenizer (no model, no Prefect), so they return
in about a second.
"""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple

import polars as pl

from saeembed.store import Store, first_row, read_sql
from saeembed.tokens import load_tokenizer, mark_context, token_at


class DocumentView(NamedTuple):
    doc_id: int
    """Key in `documents`."""
    external_id: str | None
    """The source's id."""
    corpus: str
    """Corpus name."""
    run_id: int
    """Embedding run the concepts come from."""
    text: str
    """The document."""
    meta: str | None
    """Metadata JSON."""
    n_tokens: int
    """Tokens the reader saw."""
    truncated: bool
    """Whether the document was cut at max_tokens."""
    concepts: pl.DataFrame
    """feature_id, max_act, mean_act, n_active_tokens, argmax_pos, freq, token, context."""


def show_document(store: Store, doc_id: int, *, top: int = 20) -> DocumentView:
    """A document with its strongest concepts and where each fired."""
    run = store.run_for_document(doc_id)
    doc = first_row(
        store.con.execute(
            """
        SELECT d.external_id, d.text, d.meta, e.n_tokens, e.truncated
        FROM documents d JOIN embedded_documents e ON e.doc_id = d.doc_id AND e.run_id = ?
        WHERE d.doc_id = ?
        """,
            [run.run_id, doc_id],
        )
    )
    concepts = store.query(read_sql("doc_concepts"), {"run_id": run.run_id, "doc_id": doc_id, "limit": top})
    offsets = load_tokenizer(run.reader_model).offsets([doc[1]])[0]
    positions = concepts["argmax_pos"].to_list()
    concepts = concepts.with_columns(
        pl.Series("token", [token_at(doc[1], offsets, p) for p in positions], dtype=pl.Utf8),
        pl.Series("context", [mark_context(doc[1], offsets, p) for p in positions], dtype=pl.Utf8),
    )
    return DocumentView(doc_id, doc[0], run.corpus, run.run_id, doc[1], doc[2], doc[3], doc[4], concepts)


def top_concepts(store: Store, corpus: str, *, top: int = 20, examples: int = 10) -> pl.DataFrame:
    """The corpus's most frequent concepts: feature_id, n_docs, freq, mean_max_act, max_act, top_tokens
    (the tokens where the concept peaks in its strongest documents, most common first)."""
    run = store.latest_run(corpus)
    frequent = store.query(read_sql("concepts_top"), {"run_id": run.run_id, "limit": top})
    strongest = store.query(
        read_sql("concept_argmax_documents"),
        {"run_id": run.run_id, "feature_ids": frequent["feature_id"].to_list(), "per_feature": examples},
    )
    offsets = load_tokenizer(run.reader_model).offsets(strongest["text"].to_list())
    peaks: dict[int, Counter] = {}
    for (feature_id, position, text), doc_offsets in zip(
        strongest.select("feature_id", "argmax_pos", "text").iter_rows(), offsets, strict=True
    ):
        token = token_at(text, doc_offsets, position)
        peaks.setdefault(feature_id, Counter())[token.strip() or repr(token)] += 1
    return frequent.with_columns(
        pl.Series(
            "top_tokens",
            [", ".join(t for t, _ in peaks.get(f, Counter()).most_common(5)) for f in frequent["feature_id"]],
            dtype=pl.Utf8,
        )
    ).with_columns(pl.lit(run.run_id).alias("run_id"))
