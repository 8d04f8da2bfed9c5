"""Concept labels in the `features` table: appended in one transaction (history is kept), a detection
score set on one label later."""

from __future__ import annotations

import pyarrow as pa

from saeembed.storage.store import Store


def insert_labels(
    store: Store,
    labels: pa.Table,
    *,
    sae_id: int,
    method: str,
    model: str,
    run_id: int | None,
    embedding_model: str | None,
) -> list[int]:
    """Append `labels` (feature_id, label, description, details as JSON text, auroc, detection, embedding)
    as labels of SAE `sae_id` made by `method`/`model` from run `run_id` (None: shipped with the SAE), in
    one transaction; returns their label_ids."""
    with store.registered(new_labels=labels), store.transaction():
        store.con.execute(
            """
            INSERT INTO features (sae_id, feature_id, method, model, label, description, run_id, auroc,
                                  detection, details, embedding, embedding_model)
            SELECT ?, feature_id, ?, ?, label, description, ?, auroc, detection, details::JSON, embedding, ?
            FROM new_labels
            RETURNING label_id
            """,
            [sae_id, method, model, run_id, embedding_model],
        )
        return [row[0] for row in store.con.fetchall()]


def set_detection(store: Store, label_id: int, score: float) -> None:
    """The judge's detection score of label `label_id`."""
    with store.writing():
        store.con.execute("UPDATE features SET detection = ? WHERE label_id = ?", [score, label_id])
