"""Checks a command makes before Prefect starts or a model loads: the database, its corpora, the inputs.

Each answers in well under two seconds and writes nothing: the database is only looked at (its lock in
/proc/locks, then a read-only connection), so a command refused here leaves the file byte for byte as
it was. The options objects (saeembed.options) have already checked every value that needs no database.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

from saeembed.errors import SaeembedError
from saeembed.model.hub import resolve_reader
from saeembed.storage.store import BUSY_POLL_SECONDS, Store, busy_database, db_wait, lock_holders


def check_database(db: str | Path, *, writes: bool, creates: bool = False) -> None:
    """The database can be opened as the command will open it: it exists (or `creates` it, in a folder that
    exists), no other process holds it in a way that conflicts (a writer for anyone; any holder for a
    command that `writes`), and it is a readable DuckDB file. Another process's operation is waited for
    up to $SAEEMBED_DB_WAIT seconds (saeembed's own hold the file for milliseconds)."""
    path = Path(db)
    if not path.exists():
        if not creates:
            raise SaeembedError(f"no database at {path}: run `saeembed ingest` (or `saeembed demo`) first")
        if not path.parent.exists():
            raise SaeembedError(f"cannot create database {path}: folder {path.parent} does not exist")
        return
    wait = db_wait()
    deadline = time.monotonic() + wait
    while any(writes or holder.writes for holder in lock_holders(path)):
        if time.monotonic() >= deadline:
            raise busy_database(path, waited=wait)
        time.sleep(min(BUSY_POLL_SECONDS[-1], max(deadline - time.monotonic(), 0.01)))
    with Store.open(path, read_only=True, wait=max(deadline - time.monotonic(), 0)):
        pass


def check_corpora(
    db: str | Path, corpora: Iterable[str], *, embedded: bool, level: str = "document", unit: str | None = None
) -> None:
    """Each of `corpora` is in the database (and, with `embedded`, has an embedding run; at level 'unit',
    its unit corpus has one)."""
    path = Path(db)
    if not path.exists():
        raise SaeembedError(f"no database at {path}: run `saeembed ingest` (or `saeembed demo`) first")
    with Store.open(path, read_only=True) as store:
        for corpus in corpora:
            if embedded:
                store.latest_run(store.corpus_at_level(corpus, level, unit))
            else:
                store.corpus_id(corpus)


def check_runs(db: str | Path, runs: Iterable[int]) -> None:
    """Each of `runs` is an embedding run in the database."""
    with Store.open(Path(db), read_only=True) as store:
        for run_id in runs:
            store.run(run_id)


def check_sae(spec: str) -> None:
    """'default' or a checkpoint path that exists (its layout is read when the SAE loads)."""
    if spec != "default" and not Path(spec).expanduser().exists():
        raise SaeembedError(f"SAE not found: {spec} (give 'default' or a checkpoint folder or file)")


def check_reader(name: str | None) -> None:
    """A reader that resolves: a packaged alias, a .gguf file, a model folder or a hub id."""
    if name is not None:
        resolve_reader(name)
