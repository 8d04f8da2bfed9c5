"""The `llm_cache` table: one row per LLM request answered usably. Every call uses its own cursor (a
connection of its own to the same database), so LLM worker threads never share the caller's connection;
callers serialise writes."""

from __future__ import annotations

from saeembed.storage.store import Store, first_row


def cached_answer(store: Store, key: str) -> str | None:
    """The answer kept for request `key`, or None."""
    with store.con.cursor() as cursor:
        row = first_row(cursor.execute("SELECT response FROM llm_cache WHERE key = ?", [key]))
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
    with store.con.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO llm_cache (key, model, request, response) VALUES (?, ?, ?::JSON, ?) {conflict}",
            [key, model, request, response],
        )


def forget_answer(store: Store, key: str, response: str) -> None:
    """Drop the answer `response` kept for request `key` (asked again and still unusable)."""
    with store.con.cursor() as cursor:
        cursor.execute("DELETE FROM llm_cache WHERE key = ? AND response = ?", [key, response])
