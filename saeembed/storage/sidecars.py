"""Files kept beside the database: caches derived from it (concept columns, exemplar vectors, dense
indexes). One way to name them, to know what they were built from, to write them so that no reader ever
sees half a file, and to keep what this process has loaded.

Each cache is stored with a key (JSON) naming the state it was built from; a cache whose key no longer
matches is rebuilt. The key is written last, so a crash between writes makes the next call rebuild
rather than misread.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def beside(db_path: Path, name: str) -> Path:
    """The path `<database file name>.<name>` in the database's folder."""
    return db_path.with_name(f"{db_path.name}.{name}")


def read_key(path: Path) -> dict[str, Any] | None:
    """The key stored at `path` (a JSON object), or None when there is none or it cannot be read."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_key(path: Path, key: dict[str, Any]) -> None:
    """Store `key` at `path`: call it after the files it describes are in place."""
    write_atomically(path, lambda staging: staging.write_text(json.dumps(key)))


def write_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """`write(staging)` into a sibling of `target`, then rename it onto `target` (a file or a folder)."""
    staging = target.with_name(f".{target.name}.tmp{target.suffix}")
    _remove(staging)
    try:
        write(staging)
    except BaseException:
        _remove(staging)
        raise
    if staging.is_dir():
        _remove(target)  # a folder cannot replace a folder in one rename
    staging.replace(target)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


class Loaded(Generic[T]):
    """What this process has loaded of the caches beside its databases, per file and with the key it was
    built from: a query after the first does not read the files again."""

    def __init__(self) -> None:
        self._items: dict[Path, tuple[str, T]] = {}

    def get(self, path: Path, key: str) -> T | None:
        """The value loaded from `path` when it was built from `key`, else None."""
        found = self._items.get(path)
        return found[1] if found is not None and found[0] == key else None

    def put(self, path: Path, key: str, value: T) -> T:
        self._items[path] = (key, value)
        return value

    def drop(self, path: Path) -> None:
        self._items.pop(path, None)

    def clear(self) -> None:
        self._items.clear()
