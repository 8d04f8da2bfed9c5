"""Your own SQL against a saeembed database (`saeembed sql`): one read-only statement, on a connection that
can read the database file and its shards and no other file.

The statement is parsed first and refused unless it is a query (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE,
EXPLAIN): a query cannot write, and the database is attached read-only besides. The connection's file
access is limited to the database and its shards folder, extensions cannot load, and its configuration
is locked before the statement runs.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from saeembed.errors import SaeembedError
from saeembed.storage.store import Store

QUERY_STATEMENTS = frozenset({duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN})
"""What `saeembed sql` runs: statements that only read."""


def checked_query(text: str) -> str:
    """`text` if it is exactly one query; else a one-line error saying why not."""
    if not text or not text.strip():
        raise SaeembedError('give one SQL query, e.g. saeembed sql "SELECT count(*) FROM documents"')
    try:
        statements = duckdb.extract_statements(text)
    except duckdb.Error as error:
        raise SaeembedError(f"the SQL does not parse: {str(error).splitlines()[0]}") from None
    if len(statements) != 1:
        raise SaeembedError(f"give one SQL statement at a time, not {len(statements)}")
    kind = statements[0].type
    if kind not in QUERY_STATEMENTS:
        raise SaeembedError(
            f"saeembed sql only reads: {kind.name} is refused (use SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE or EXPLAIN)"
        )
    return text


def run_query(path: str | Path, text: str) -> pa.Table:
    """The rows of query `text` (checked by `checked_query`) on the database at `path`, read-only."""
    query = checked_query(text)
    with Store.open(path, read_only=True) as store:
        folders = [str(store.shards.resolve()) + "/"]
        files = [str(store.path.resolve()), str(store.path.resolve()) + ".wal"]
        store.con.execute("SET allowed_directories = $folders", {"folders": folders})
        store.con.execute("SET allowed_paths = $files", {"files": files})
        store.con.execute("SET enable_external_access = false")
        store.con.execute("SET autoinstall_known_extensions = false")
        store.con.execute("SET autoload_known_extensions = false")
        store.con.execute("SET lock_configuration = true")
        with store.reading():
            try:
                return store.con.sql(query).to_arrow_table()
            except duckdb.Error as error:
                raise SaeembedError(f"the query failed: {str(error).splitlines()[0]}") from None
