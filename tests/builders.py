"""Builders of real DuckDB stores for the tests: documents, one embedding run per corpus and known
concept vectors, written through the Store as an embed run writes them."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow as pa

from saeembed.store import RunSettings, Store

READER = "HuggingFaceTB/SmolLM2-135M-Instruct"


def build_store(
    path: Path,
    corpora: dict[str, list[tuple[str, dict, list[int | tuple[int, float]]]]],
    peak: dict[int, int] | None = None,
) -> Path:
    """A store whose documents (text, meta, concepts present) are given: one run per corpus, one SAE.
    A concept is an id (max activation 1 + id/100) or (id, max activation). Each concept peaks at token
    `peak[concept]` (default 1)."""
    peak = peak or {}
    with Store.open(path) as store:
        sae_id = store.register_sae(
            name="synthetic",
            fingerprint="s" * 40,
            path=None,
            config={
                "source_format": "saeembed",
                "arch": "topk",
                "d_in": 4,
                "d_sae": 64,
                "k": 2,
                "reader_model": READER,
            },
        )
        for corpus, docs in corpora.items():
            store.add_documents(
                corpus,
                pl.DataFrame(
                    {
                        "external_id": [f"{corpus}-{i}" for i in range(len(docs))],
                        "text": [text for text, _, _ in docs],
                        "meta": [json.dumps(meta) for _, meta, _ in docs],
                        "content_hash": [f"{corpus}-{i}" for i in range(len(docs))],
                    }
                ),
            )
            run_id = store.open_run(RunSettings(store.corpus_id(corpus), sae_id, READER, 3, 512, True, "float32"), {})
            doc_ids = store.pending_documents(run_id)["doc_id"].to_list()
            pairs = [
                (doc_id, f if isinstance(f, tuple) else (f, 1.0 + f / 100))
                for doc_id, (_, _, features) in zip(doc_ids, docs, strict=True)
                for f in features
            ]
            store.write_batch(
                run_id,
                pa.table(
                    {
                        "doc_id": doc_ids,
                        "n_tokens": [3] * len(doc_ids),
                        "n_tokens_total": [3] * len(doc_ids),
                        "truncated": [False] * len(doc_ids),
                        "n_features": [len(f) for _, _, f in docs],
                    }
                ),
                pa.table(
                    {
                        "doc_id": pa.array([d for d, _ in pairs], type=pa.int64()),
                        "feature_id": pa.array([f for _, (f, _) in pairs], type=pa.int32()),
                        "max_act": pa.array([act for _, (_, act) in pairs], type=pa.float32()),
                        "mean_act": pa.array([0.5] * len(pairs), type=pa.float32()),
                        "n_active_tokens": pa.array([1] * len(pairs), type=pa.int32()),
                        "argmax_pos": pa.array([peak.get(f, 1) for _, (f, _) in pairs], type=pa.int32()),
                    }
                ),
            )
    return path
