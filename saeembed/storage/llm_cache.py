"""The `llm_cache` table: one row per LLM request answered usably. LLM worker threads share the Store:
each call is one operation of its own (the Store runs one at a time), so a slow LLM answer never holds
the database."""

from __future__ import annotations

from saeembed.storage.store import Store, first_row


def cached_answer(store: Store, key: str) -> str | None:
    """The answer kept for request `key`, or None."""
    with store.reading():
        row = first_row(store.con.execute("SELECT response FROM llm_cache WHERE key = ?", [key]))
    return None if row is None else row[0]


def keep_answer(store: Store, key: str, model: str, request: str, response: str, *, replace: bool) -> None:
    """Keep `response` for request `key` (`request`: its JSON). Two threads may have asked the same
    question at once: the first answer stays, unless `replace` (it replaces an unusable one)."""
    conflict = (
        "ON CONFLICT (key) DO UPDATE SET model = excluded.model, request = excluded.request, "
        "response = excluded.response, created_at = excluded.created_at"
        if replace
        else "ON CONFLICT (key) DO NOTHING"
    )
    with store.writing():
        store.con.execute(
            f"INSERT INTO llm_cache (key, model, request, response) VALUES (?, ?, ?::JSON, ?) {conflict}",
            [key, model, request, response],
        )


def forget_answer(store: Store, key: str, response: str) -> None:
    """Drop the answer `response` kept for request `key` (asked again and still unusable)."""
    with store.writing():
        store.con.execute("DELETE FROM llm_cache WHERE key = ? AND response = ?", [key, response])
