"""The exception type that reaches users, and the one line every other failure a user can meet becomes."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from typing import Any


class SaeembedError(Exception):
    """A problem with the user's input or environment, explained in one line (exit code 2 in the CLI)."""


def check_choice(option: str, value: Any, choices: tuple[str, ...]) -> str:
    """`value` if it is one of `choices`; else the one line every command gives for an unknown choice."""
    if value not in choices:
        raise SaeembedError(f"unknown {option} {value!r}: use {', '.join(choices[:-1])} or {choices[-1]}")
    return value


def explain(error: BaseException) -> str | None:
    """The one line to show for `error` when it is the user's or their machine's trouble (bad input, a
    full disk, a damaged database, no permission, no memory); None when it is a bug in saeembed.

    The error and the exceptions it was raised from are looked at, so a full disk hit inside a Prefect
    task or a DuckDB write is named as what it is.
    """
    for cause in _chain(error):
        if isinstance(cause, SaeembedError):
            return str(cause)
        message = _first_line(cause)
        where = f" ({cause.filename})" if isinstance(cause, OSError) and cause.filename else ""
        if _is_errno(cause, errno.ENOSPC) or "No space left on device" in message:
            return (
                f"disk full{where}: no space left on the device; free some space and rerun "
                f"(whole batches already stored are kept): {message}"
            )
        if _is_errno(cause, errno.EDQUOT) or "Disk quota exceeded" in message:
            return f"disk quota exceeded{where}; free some space and rerun: {message}"
        if _is_errno(cause, errno.EROFS) or "Read-only file system" in message:
            return f"read-only file system{where}: choose a writable place (e.g. another --db): {message}"
        if _is_errno(cause, errno.EACCES, errno.EPERM) or "Permission denied" in message:
            return f"permission denied{where}: check who owns the file and its folder: {message}"
        if isinstance(cause, MemoryError) or type(cause).__name__ == "OutOfMemoryException":
            return f"out of memory: {message or 'MemoryError'} (try a smaller --batch-size or fewer documents)"
        if type(cause).__module__.startswith(("duckdb", "_duckdb")) and _is_damage(message):
            return f"the database is damaged ({message}); restore it from a copy"
    return None


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _is_errno(error: BaseException, *codes: int) -> bool:
    return isinstance(error, OSError) and error.errno in codes


def _is_damage(message: str) -> bool:
    return any(
        phrase in message
        for phrase in (
            "not a valid DuckDB database",
            "Could not read enough bytes",
            "Corrupt database file",
            "checksum",
        )
    )


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0][:300]
