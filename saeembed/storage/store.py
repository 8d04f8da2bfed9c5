"""The store: a DuckDB file (corpora, documents, SAEs, runs, labels, analyses) and the Parquet shards
beside it that hold the concept vectors (storage/shards.py).

The file is held only while an operation runs: each read attaches it read-only, each write attaches it
for writing and detaches it when done, so readers in other processes wait at most for one write's
transaction, and a long job (an embedding, a labelling, an analysis) never shuts them out. Every write
that must not be half-done runs in one transaction. The SQL users may read lives in sql/ (`read_sql`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute

from saeembed.errors import SaeembedError
from saeembed.storage.predicates import Predicate, Sandbox
from saeembed.storage.shards import (
    SHARD_ROWS,
    SHARD_SECONDS,
    ShardWriter,
    ensure_shards,
    publish_shard,
    remove_run,
    run_is_leased,
    run_lease,
    shard_glob,
)
from saeembed.storage.sidecars import beside

DEFAULT_DB = "saeembed.duckdb"
PREDICATE_BATCH_ROWS = 65_536
"""Documents handed to the predicate sandbox at a time: bounds memory when a predicate reads long texts."""
STREAM_BATCH_ROWS = 1 << 20
"""Rows per Arrow batch of `Store.stream`: large enough that numpy's per-call cost vanishes, small enough
(tens of MB) that a scan's memory stays flat."""
BUSY_POLL_SECONDS = (0.005, 0.25)
"""A waiting operation retries a database another process holds after 5 ms, doubling up to 250 ms."""
DEFAULT_WAIT_SECONDS = 10.0
"""How long an operation waits for another process's operation on the database by default."""
CATALOG = "store"
"""The name the database file is attached under while an operation runs."""


def default_db_path() -> Path:
    """`$SAEEMBED_DB` if set, else ./saeembed.duckdb."""
    return Path(os.environ.get("SAEEMBED_DB") or DEFAULT_DB)


def db_wait() -> float:
    """Seconds an operation waits for another process's operation on the database: $SAEEMBED_DB_WAIT,
    else DEFAULT_WAIT_SECONDS (operations hold the file for one query or one transaction)."""
    text = os.environ.get("SAEEMBED_DB_WAIT", "") or str(DEFAULT_WAIT_SECONDS)
    try:
        seconds = float(text)
    except ValueError:
        raise SaeembedError(f"SAEEMBED_DB_WAIT must be a number of seconds, got {text!r}") from None
    if not (0 <= seconds < float("inf")):
        raise SaeembedError(f"SAEEMBED_DB_WAIT must be a number of seconds, got {text!r}")
    return seconds


class LockHolder(NamedTuple):
    pid: int
    """The process holding DuckDB's lock on the file."""
    writes: bool
    """True for a writer (exclusive lock), False for a reader (shared lock)."""
    command: str
    """Its command line, shortened ('' when it cannot be read)."""


def lock_holders(path: Path) -> list[LockHolder]:
    """Other processes holding a lock on `path`, from Linux's /proc/locks ([] where there is none).

    Read from /proc rather than asked with fcntl(F_GETLK): that needs a descriptor of the file, and
    closing one drops every POSIX lock this process holds on it, a live DuckDB connection's included.
    """
    try:
        stat = path.stat()
        table = Path("/proc/locks").read_text()
    except OSError:
        return []
    device = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    holders = []
    for line in table.splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[1] == "POSIX" and parts[5] == device and parts[4].isdigit():
            pid = int(parts[4])
            if pid != os.getpid():
                holders.append(LockHolder(pid, parts[3] == "WRITE", _command_of(pid)))
    return holders


def _command_of(pid: int) -> str:
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return ""
    words = [Path(words[0]).name, *words[1:]] if words and words[0] else words
    return " ".join(" ".join(words).split())[:80]


def busy_database(path: Path, error: Exception | None = None, waited: float = 0) -> SaeembedError:
    """The one-line error for a database another process holds, naming it and what it does."""
    holders = lock_holders(path)
    after = f" (waited {waited:g} s)" if waited > 0 else ""
    if holders:
        holder = holders[0]
        who = f"process {holder.pid}" + (f" ({holder.command})" if holder.command else "")
        if holder.writes:
            state = f"is being written by {who}"
            hint = "wait for it to finish (SAEEMBED_DB_WAIT=SECONDS waits for you) or use another --db"
        else:
            state = f"is held by a reader in {who}"
            hint = "close that connection (DuckDB lets no process write while another reads the file)"
    else:
        pid = re.search(r"PID (\d+)", str(error or ""))
        state = "is open in another process" + (f" (pid {pid.group(1)})" if pid else "")
        hint = "wait for it to finish (SAEEMBED_DB_WAIT=SECONDS waits for you) or use another --db"
    return SaeembedError(f"database busy: {path} {state}{after}; {hint}")


def damaged_database(path: Path, error: Exception) -> SaeembedError:
    """The one-line error for a file DuckDB cannot read as a database."""
    reason = str(error).split("\n")[0].removeprefix("IO Error: ").strip()
    return SaeembedError(
        f"database {path} is damaged or not a DuckDB database ({reason}); restore it from a copy or use another --db"
    )


RESULT_TABLES = frozenset(
    {
        "diff_results",
        "correlations",
        "column_correlations",
        "clusters",
        "cluster_summaries",
        "retrieval_results",
        "diff_hypotheses",
        "concept_matches",
        "concept_match_summary",
    }
)
"""Tables an analysis records its rows in (`Store.record`): the only names formatted into its SQL."""


INGEST_SLICE_ROWS = 50_000
INGEST_SLICE_BYTES = 64 << 20


def _slices(table: pa.Table) -> Iterator[pa.Table]:
    """`table` in consecutive slices of at most INGEST_SLICE_ROWS rows and about INGEST_SLICE_BYTES of text."""
    sizes = pa.compute.binary_length(table["text"]).to_numpy(zero_copy_only=False)
    start = 0
    while start < table.num_rows:
        stop = min(start + INGEST_SLICE_ROWS, table.num_rows)
        within = np.searchsorted(np.cumsum(sizes[start:stop]), INGEST_SLICE_BYTES, side="right")
        stop = start + max(1, min(stop - start, int(within)))
        yield table.slice(start, stop - start)
        start = stop


def _result_frames(rows: dict[str, pl.DataFrame | pa.Table]) -> dict[str, pl.DataFrame | pa.Table]:
    unknown = set(rows) - RESULT_TABLES
    if unknown:
        raise ValueError(f"not a results table: {', '.join(sorted(unknown))}")
    return {f"new_{table}": frame for table, frame in rows.items()}


def first_row(result: duckdb.DuckDBPyConnection) -> tuple | None:
    """The first row of an executed statement. The result is read to the end: DuckDB 2 refuses to
    register a table on a connection with an unfinished result."""
    rows = result.fetchall()
    return rows[0] if rows else None


def read_sql(name: str) -> str:
    """The text of sql/NAME.sql, as installed with the package."""
    return sql_file(name).read_text(encoding="utf-8")


def sql_file(name: str) -> Path:
    """Where sql/NAME.sql is installed (to show users a file they can run)."""
    path = Path(str(resources.files("saeembed.sql").joinpath(f"{name}.sql")))
    if not path.is_file():
        raise SaeembedError(f"no SQL file named {name}.sql in saeembed's sql/ folder")
    return path


@dataclass(frozen=True)
class RunSettings:
    """The settings that change an embedding's vectors: equal settings resume the same run."""

    corpus_id: int
    sae_id: int
    reader_model: str
    layer: int
    max_tokens: int
    chat_template: bool
    dtype: str

    @property
    def key(self) -> str:
        payload = json.dumps(self.__dict__, sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()


class IngestCounts(NamedTuple):
    inserted: int
    """Rows added to `documents`."""
    already_present: int
    """Rows whose content hash was already in the corpus (re-ingest is idempotent)."""


class RunInfo(NamedTuple):
    run_id: int
    """Key of the run in `embed_runs`."""
    corpus: str
    """Name of the embedded corpus."""
    sae_id: int
    """Key of the SAE in `saes`."""
    reader_model: str
    """Reader the SAE read (HF id)."""
    layer: int
    """Decoder layer whose output the SAE encodes."""
    status: str
    """'running' or 'complete'."""
    d_sae: int
    """The SAE's number of latents: concept ids run 0 … d_sae - 1."""
    max_tokens: int
    """Tokens read per document."""
    chat_template: bool
    """Whether each document was read as an assistant turn of the reader's chat template."""
    dtype: str
    """The reader's compute dtype."""
    sae_path: str | None
    """Where the SAE was loaded from (None for SAEs registered without a file)."""


class AnalysisInfo(NamedTuple):
    analysis_id: int
    """Key of the analysis in `analyses` (and its results tables)."""
    kind: str
    """'diff', 'correlate', 'cluster', 'search', 'compare-releases', …"""
    params: dict[str, Any]
    """The call's parameters."""
    inputs: dict[str, Any]
    """Input sizes and the runs read, as recorded."""
    created_at: datetime
    """When it ran."""


SHARD_VIEW_SQL = {
    "embedded_documents": (
        "CREATE OR REPLACE TEMP VIEW embedded_documents AS "
        "SELECT run_id, doc_id, n_tokens, n_tokens_total, truncated, n_features "
        "FROM read_parquet({files}, hive_partitioning = true, hive_types = {{'run_id': INTEGER}})"
    ),
    "doc_features": (
        "CREATE OR REPLACE TEMP VIEW doc_features AS "
        "SELECT run_id, doc_id, feature_id, max_act, mean_act, n_active_tokens, argmax_pos "
        "FROM read_parquet({files}, hive_partitioning = true, hive_types = {{'run_id': INTEGER}})"
    ),
}
"""An operation's views over the shards it pinned (the columns of sql/shard_views.sql)."""


def _pending_params(run_id: int, limit: int | None, among: Sequence[int] | None) -> dict[str, Any]:
    """Parameters of sql/pending_doc_ids.sql."""
    return {"run_id": run_id, "limit": limit if limit is not None else 2**62, "among_all": among is None}


def _reads(method: Callable) -> Callable:
    """Run a Store method with the database attached read-only (or as the enclosing operation has it)."""

    @functools.wraps(method)
    def inside(self: Store, *args: Any, **kwargs: Any) -> Any:
        with self.reading():
            return method(self, *args, **kwargs)

    return inside


def _writes(method: Callable) -> Callable:
    """Run a Store method with the database attached for writing."""

    @functools.wraps(method)
    def inside(self: Store, *args: Any, **kwargs: Any) -> Any:
        with self.writing():
            return method(self, *args, **kwargs)

    return inside


def sql_path(path: Path) -> str:
    """`path` as an SQL string literal (ATTACH and read_parquet take no parameters). A path with a quote,
    a backslash or a control character is refused rather than escaped."""
    text = str(path.resolve())
    if re.search(r"['\\\x00-\x1f]", text):
        raise SaeembedError(f"database path {path} holds a quote, backslash or control character: rename it")
    return f"'{text}'"


class Store:
    """An open saeembed database. Use `Store.open(path)`; close it or use it as a context manager.

    `con` is an in-memory DuckDB connection; the database file is attached to it (as `store`, and made
    the default catalog) only while an operation runs: see `reading` and `writing`."""

    def __init__(self, path: Path, *, read_only: bool = False, wait: float = 0.0) -> None:
        self.path = path
        self.read_only = read_only
        self.wait = wait
        self.shards = beside(path, "shards")
        self.con = duckdb.connect()
        # Shards are written once and never change: their footers can be kept across queries.
        self.con.execute("SET parquet_metadata_cache = true")
        self._session = threading.RLock()  # one operation at a time per Store, across threads
        self._depth = 0
        self._writable = False

    @classmethod
    def open(cls, path: str | Path | None = None, *, read_only: bool = False, wait: float | None = None) -> Store:
        """Open (and, unless read_only, create or migrate) the database at `path`.

        Each operation attaches the file for as long as it runs. While another process's operation holds
        it, an operation waits up to `wait` seconds (default: $SAEEMBED_DB_WAIT, else 10), then fails with
        "database busy", naming that process and whether it reads or writes. A file that is not a
        readable DuckDB database fails with "damaged".
        """
        path = Path(path) if path is not None else default_db_path()
        if read_only and not path.exists():
            raise SaeembedError(f"no database at {path}: run `saeembed ingest` (or `saeembed demo`) first")
        if not path.parent.exists():
            raise SaeembedError(f"cannot create database {path}: folder {path.parent} does not exist")
        sql_path(path)
        store = cls(path, read_only=read_only, wait=db_wait() if wait is None else wait)
        try:
            if read_only:
                with store.reading():
                    pass  # a busy or damaged file fails here, not at the first query
            else:
                with store.writing():
                    store._migrate()
        except BaseException:
            store.con.close()
            raise
        return store

    @contextmanager
    def reading(self) -> Iterator[None]:
        """The database attached (read-only unless an enclosing operation writes) while the block runs:
        group queries that must see one state of the database."""
        with self._attached(write=False):
            yield

    @contextmanager
    def writing(self) -> Iterator[None]:
        """The database attached for writing while the block runs; other processes wait for it to end."""
        if self.read_only:
            raise SaeembedError(f"database {self.path} was opened read-only: this needs a writable one")
        with self._attached(write=True):
            yield

    @contextmanager
    def _attached(self, *, write: bool) -> Iterator[None]:
        with self._session:
            if self._depth == 0:
                self._attach(write)
            elif write and not self._writable:
                self._detach()  # a read that goes on to write: attach again, for writing,
                self._attach(write, pin=False)  # still seeing the shards the read saw
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._detach()

    def _attach(self, write: bool, *, pin: bool = True) -> None:
        mode = "" if write else " (READ_ONLY)"
        deadline = time.monotonic() + self.wait
        pause = BUSY_POLL_SECONDS[0]
        while True:
            try:
                self.con.execute(f"ATTACH {sql_path(self.path)} AS {CATALOG}{mode}")
                break
            except duckdb.IOException as error:
                if "lock" not in str(error).lower():
                    raise damaged_database(self.path, error) from None
                if time.monotonic() >= deadline:
                    raise busy_database(self.path, error, self.wait) from None
                time.sleep(min(pause, max(deadline - time.monotonic(), 0.001)))
                pause = min(pause * 2, BUSY_POLL_SECONDS[1])
            except (duckdb.SerializationException, duckdb.InternalException) as error:
                raise damaged_database(self.path, error) from None
        self.con.execute(f"USE {CATALOG}")
        self._writable = write
        if pin:
            self._pin_shards()

    def _pin_shards(self) -> None:
        """Point this connection's `doc_features` and `embedded_documents` at the shards published now, so
        that every query of the operation sees one state of the data, whatever is published meanwhile (the
        database's own views read whatever is there at each query). Temporary views come first in DuckDB's
        search path, views of the database that read these included."""
        folders = sorted(self.shards.glob("run_id=*/*/"))
        if not folders:
            return  # a database from before shards, opened read-only: its own tables serve
        for view, table in (("embedded_documents", "documents"), ("doc_features", "features")):
            files = ", ".join(sql_path(folder / f"{table}.parquet") for folder in folders)
            self.con.execute(SHARD_VIEW_SQL[view].format(files=f"[{files}]"))

    def _detach(self) -> None:
        self.con.execute("USE memory")
        self.con.execute(f"DETACH {CATALOG}")
        self._writable = False

    def _migrate(self) -> None:
        """Apply schema.sql, move the concept rows of an older database into shards, point the shard views
        at this database's shards folder and apply views.sql, unless the database already has this version
        of all of it: opening an up-to-date database for writing changes nothing in the file."""
        ensure_shards(self.shards)
        shard_views = (
            read_sql("shard_views")
            .replace("FEATURES_GLOB", sql_path(Path(shard_glob(self.shards, "features"))))
            .replace("DOCUMENTS_GLOB", sql_path(Path(shard_glob(self.shards, "documents"))))
        )
        schema, views = read_sql("schema"), read_sql("views")
        digest = hashlib.sha1((schema + shard_views + views).encode()).hexdigest()
        try:
            current = first_row(self.con.execute("SELECT max(digest) FROM schema_version"))
        except duckdb.CatalogException:
            current = None
        if current is not None and current[0] == digest:
            return
        self.con.execute(schema)
        self._move_rows_into_shards()
        with self.transaction():
            self.con.execute(shard_views)
            self.con.execute(views)
            self.con.execute("DELETE FROM schema_version")
            self.con.execute("INSERT INTO schema_version (digest) VALUES (?)", [digest])

    def _move_rows_into_shards(self) -> None:
        """Databases made before shards kept concept rows in tables: each run's rows become one shard, then
        the tables go. A crash in between leaves the tables, and the next open starts the move again."""
        tables = self.con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
            "AND table_name IN ('doc_features', 'embedded_documents')"
        ).fetchall()
        if len(tables) < 2:
            return
        runs = [row[0] for row in self.con.execute("SELECT DISTINCT run_id FROM embedded_documents").fetchall()]
        for run_id in runs:
            remove_run(self.shards, run_id)  # what an interrupted move left
            documents = self.con.sql(
                "SELECT doc_id, n_tokens, n_tokens_total, truncated, n_features FROM embedded_documents "
                "WHERE run_id = $run ORDER BY doc_id",
                params={"run": run_id},
            ).to_arrow_table()
            features = self.con.sql(
                "SELECT doc_id, feature_id, max_act, mean_act, n_active_tokens, argmax_pos FROM doc_features "
                "WHERE run_id = $run ORDER BY doc_id, feature_id",
                params={"run": run_id},
            ).to_arrow_table()
            publish_shard(self.shards, run_id, documents, features, name="moved")
        with self.transaction():
            self.con.execute("DROP VIEW IF EXISTS concept_frequency")
            self.con.execute("DROP VIEW IF EXISTS runs")
            self.con.execute("DROP TABLE doc_features")
            self.con.execute("DROP TABLE embedded_documents")

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def query(self, sql: str, params: dict[str, Any] | list[Any] | None = None) -> pl.DataFrame:
        """Run one SQL statement of your own and return its rows as a polars DataFrame (for notebooks and
        scripts; saeembed's own code runs the named queries of sql/ with `rows`, `arrow` and `execute`).
        On a store opened for writing the statement may write."""
        with self.reading() if self.read_only else self.writing():
            relation = self.con.sql(sql, params=params or None)
            return pl.DataFrame() if relation is None else pl.from_arrow(relation.to_arrow_table())

    # -- named queries (sql/NAME.sql) ------------------------------------------------------------

    @_reads
    def rows(self, name: str, params: dict[str, Any] | None = None, **tables: pl.DataFrame | pa.Table) -> pl.DataFrame:
        """The rows of sql/NAME.sql as a polars DataFrame, `tables` readable by name while it runs."""
        return pl.from_arrow(self.arrow(name, params, **tables))

    @_reads
    def arrow(self, name: str, params: dict[str, Any] | None = None, **tables: pl.DataFrame | pa.Table) -> pa.Table:
        """The rows of sql/NAME.sql as an Arrow table (numpy columns without a copy through polars)."""
        with self.registered(**tables):
            return self.con.sql(read_sql(name), params=params or None).to_arrow_table()

    @_reads
    def stream(
        self,
        name: str,
        params: dict[str, Any],
        consume: Callable[[pa.RecordBatch], None],
        **tables: pl.DataFrame | pa.Table,
    ) -> None:
        """Feed the rows of sql/NAME.sql to `consume` in Arrow record batches (up to STREAM_BATCH_ROWS each)
        as DuckDB produces them, all from one state of the data: a scan of a hundred million concept rows is
        never held in memory whole."""
        with self.registered(**tables):
            for batch in self.con.sql(read_sql(name), params=params or None).to_arrow_reader(STREAM_BATCH_ROWS):
                consume(batch)

    @_writes
    def execute(self, name: str, params: dict[str, Any] | None = None, **tables: pl.DataFrame | pa.Table) -> None:
        """Run sql/NAME.sql for its effect (inside `transaction()` when it must not be half done; register
        `tables` before the transaction opens, see `registered`)."""
        with self.registered(**tables):
            self.con.execute(read_sql(name), params or None)

    # -- corpora and documents ---------------------------------------------------------------

    @_reads
    def corpus_names(self) -> list[str]:
        return [row[0] for row in self.con.execute("SELECT name FROM corpora ORDER BY name").fetchall()]

    @_reads
    def corpus_id(self, name: str) -> int:
        """Key of corpus `name`; a clear error listing the known corpora if there is none."""
        row = first_row(self.con.execute("SELECT corpus_id FROM corpora WHERE name = ?", [name]))
        if row is None:
            known = ", ".join(self.corpus_names()) or "none yet"
            raise SaeembedError(f"no corpus named '{name}' in {self.path} (corpora: {known})")
        return row[0]

    def add_documents(self, corpus: str, rows: pl.DataFrame, *, source: str | None = None) -> IngestCounts:
        """Add rows (external_id, text, meta, content_hash) to corpus `corpus`, creating it if needed.

        Rows whose content_hash the corpus already holds are skipped, so re-ingest is idempotent. Rows go in
        slices of at most INGEST_SLICE_ROWS rows or INGEST_SLICE_BYTES of text, each in one transaction: a
        reader waits for one slice at most, and an interrupted ingest keeps whole slices (a rerun adds the
        rest).
        """
        table = rows.select("external_id", "text", "meta", "content_hash").with_row_index("source_order").to_arrow()
        with self.transaction():
            self.con.execute(
                "INSERT INTO corpora (name, source) VALUES (?, ?) ON CONFLICT (name) DO NOTHING", [corpus, source]
            )
        corpus_id = self.corpus_id(corpus)
        inserted = 0
        for part in _slices(table):
            with self.registered(incoming_rows=part), self.transaction():
                before = self._count("documents WHERE corpus_id = ?", [corpus_id])
                self.con.execute(
                    """
                    INSERT INTO documents (corpus_id, external_id, text, meta, content_hash)
                    SELECT ?, r.external_id, r.text, r.meta::JSON, r.content_hash
                    FROM incoming_rows r
                    WHERE NOT EXISTS (SELECT 1 FROM documents d
                                      WHERE d.corpus_id = ? AND d.content_hash = r.content_hash)
                    ORDER BY r.source_order
                    """,
                    [corpus_id, corpus_id],
                )
                inserted += self._count("documents WHERE corpus_id = ?", [corpus_id]) - before
        return IngestCounts(inserted=inserted, already_present=table.num_rows - inserted)

    # -- units: documents split into sentences, paragraphs or chunks (saeembed/model/units.py) ------------

    @_reads
    def unit_of_corpus(self, corpus_id: int) -> str | None:
        """The unit of a unit corpus ('sentence', 'chunk:64', …); None for a corpus of whole documents."""
        row = first_row(self.con.execute("SELECT meta->>'unit' FROM corpora WHERE corpus_id = ?", [corpus_id]))
        return row[0] if row is not None else None

    @_reads
    def unit_corpus(self, corpus: str, unit: str | None = None) -> str:
        """The embedded unit corpus of `corpus` (`--level unit`): the one of `unit`, or the only one there is."""
        parent_id = self.corpus_id(corpus)
        if self.unit_of_corpus(parent_id) is not None:
            raise SaeembedError(f"'{corpus}' is a corpus of units already: give it with --level document")
        made = self.rows("unit_corpora", {"parent_id": parent_id})
        embedded = made.filter(pl.col("embedded"))
        if unit is not None:
            embedded = embedded.filter(pl.col("unit") == unit)
        if embedded.height == 1:
            return embedded["name"][0]
        hint = f"saeembed embed --corpus {corpus} --unit {unit or 'sentence'}"
        if embedded.height == 0:
            what = f"no embedded {unit} units" if unit else "no embedded units"
            raise SaeembedError(f"corpus '{corpus}' has {what}: run `{hint}` first")
        units = ", ".join(embedded["unit"].to_list())
        raise SaeembedError(f"corpus '{corpus}' has units of several kinds ({units}): say which with --unit")

    def corpus_at_level(self, corpus: str, level: str = "document", unit: str | None = None) -> str:
        """`corpus` itself at level 'document'; at level 'unit', its embedded unit corpus (`unit_corpus`)."""
        return corpus if level == "document" else self.unit_corpus(corpus, unit)

    @_reads
    def unsplit_documents(self, parent_id: int, unit_corpus_id: int, *, limit: int) -> pl.DataFrame:
        """doc_id, external_id, text, meta of up to `limit` documents of corpus `parent_id` not yet split
        into the units of corpus `unit_corpus_id`."""
        params = {"parent_id": parent_id, "unit_corpus_id": unit_corpus_id, "limit": limit}
        return self.rows("units_unsplit", params)

    def make_unit_corpus(self, name: str, *, parent_id: int, unit: str, tokenizer: str | None) -> int:
        """Key of unit corpus `name` (units `unit` of corpus `parent_id`), made on first use. `tokenizer`
        names the reader whose tokens cut chunks (None for sentences and paragraphs)."""
        meta = json.dumps({"parent_corpus_id": parent_id, "unit": unit, "tokenizer": tokenizer})
        with self.transaction():
            self.con.execute(
                "INSERT INTO corpora (name, source, meta) VALUES (?, NULL, ?::JSON) ON CONFLICT (name) DO NOTHING",
                [name, meta],
            )
        corpus_id = self.corpus_id(name)
        if self.unit_of_corpus(corpus_id) != unit:
            raise SaeembedError(f"corpus '{name}' exists and is not the {unit} units of its document corpus")
        return corpus_id

    def add_units(self, unit_corpus_id: int, units: pl.DataFrame) -> int:
        """Store units (parent_doc_id, unit_index, char_start, char_end, external_id, text, meta, content_hash)
        as documents of corpus `unit_corpus_id`, all at once: a document is split whole or not at all."""
        table = units.to_arrow()
        with self.registered(incoming_units=table), self.transaction():
            self.con.execute(
                """
                INSERT INTO documents (corpus_id, external_id, text, meta, content_hash)
                SELECT $corpus_id, u.external_id, u.text, u.meta::JSON, u.content_hash
                FROM incoming_units u
                ORDER BY u.parent_doc_id, u.unit_index
                """,
                {"corpus_id": unit_corpus_id},
            )
            self.con.execute(
                """
                INSERT INTO units (doc_id, corpus_id, parent_doc_id, unit_index, char_start, char_end)
                SELECT d.doc_id, $corpus_id, u.parent_doc_id, u.unit_index, u.char_start, u.char_end
                FROM incoming_units u
                JOIN documents d ON d.corpus_id = $corpus_id AND d.content_hash = u.content_hash
                """,
                {"corpus_id": unit_corpus_id},
            )
        return table.num_rows

    def units_of_parents(self, unit_ids: Sequence[int]) -> pl.DataFrame:
        """Every unit (doc_id, parent_doc_id, unit_index, char_start, char_end, wanted) of the documents that
        `unit_ids` are units of, `wanted` saying which are listed; empty when none is a unit."""
        listed = pa.table({"doc_id": pa.array(list(unit_ids), pa.int64())})
        return self.rows("units_of_parents", listed=listed)

    def unit_context(self, unit_ids: Sequence[int]) -> pl.DataFrame:
        """doc_id, parent_doc_id, parent_external_id, unit_index, char_start, char_end, parent_text of the
        listed units (no row for a document that is not a unit)."""
        listed = pa.table({"doc_id": pa.array(list(unit_ids), pa.int64())})
        return self.rows("unit_context", listed=listed)

    @_reads
    def documents_matching(self, corpus_id: int, predicate: Predicate) -> np.ndarray:
        """doc_id (ascending, int64) of corpus `corpus_id`'s documents where `predicate` holds.

        The predicate is evaluated in a `Sandbox`, never on this connection: it sees the corpus's documents
        in batches, only the columns it reads, and no file.
        """
        # Names from the fixed list of documents' columns (predicates.DOCUMENT_COLUMNS), never user text.
        columns = ", ".join(dict.fromkeys(["doc_id", *predicate.columns]))
        sql = f"SELECT {columns} FROM ({read_sql('predicate_documents')})"
        with self.con.cursor() as cursor, Sandbox() as sandbox:
            cursor.execute(f"USE {CATALOG}")  # a cursor starts in the in-memory catalog
            reader = cursor.sql(sql, params={"corpus_id": corpus_id}).to_arrow_reader(PREDICATE_BATCH_ROWS)
            return sandbox.matching(predicate, reader)

    @_reads
    def run_documents(self, run: RunInfo, predicate: Predicate | None = None) -> np.ndarray:
        """doc_id (ascending, int64) of the documents `run` embedded; with `predicate`, those where it holds."""
        ids = np.asarray(self.con.execute(read_sql("run_documents"), {"run_id": run.run_id}).fetchnumpy()["doc_id"])
        ids = ids.astype(np.int64, copy=False)
        return ids if predicate is None else ids[self.predicate_mask(ids, run, predicate)]

    def predicate_mask(self, doc_ids: np.ndarray, run: RunInfo, predicate: Predicate) -> np.ndarray:
        """True for the entries of `doc_ids` (documents of `run`'s corpus) where `predicate` holds."""
        return np.isin(doc_ids, self.documents_matching(self.corpus_id(run.corpus), predicate))

    def _count(self, where: str, params: list[Any]) -> int:
        return first_row(self.con.execute(f"SELECT count(*) FROM {where}", params))[0]

    # -- SAEs and runs -------------------------------------------------------------------------

    @_writes
    def register_sae(self, *, name: str, fingerprint: str, path: str | None, config: dict[str, Any]) -> int:
        """Key of the SAE with this fingerprint, adding it on first use."""
        row = first_row(self.con.execute("SELECT sae_id FROM saes WHERE fingerprint = ?", [fingerprint]))
        if row is not None:
            return row[0]
        self.con.execute(
            """
            INSERT INTO saes (name, fingerprint, path, format, reader_model, layer, hook, arch, d_in, d_sae, k, meta)
            VALUES ($name, $fingerprint, $path, $format, $reader_model, $layer, $hook, $arch, $d_in, $d_sae, $k,
                    $meta::JSON)
            """,
            {
                "name": name,
                "fingerprint": fingerprint,
                "path": path,
                "format": config["source_format"],
                "reader_model": config.get("reader_model"),
                "layer": config.get("layer"),
                "hook": config.get("hook"),
                "arch": config["arch"],
                "d_in": config["d_in"],
                "d_sae": config["d_sae"],
                "k": config.get("k"),
                "meta": json.dumps(config.get("meta") or {}),
            },
        )
        return first_row(self.con.execute("SELECT sae_id FROM saes WHERE fingerprint = ?", [fingerprint]))[0]

    @_writes
    def open_run(self, settings: RunSettings, config: dict[str, Any]) -> int:
        """The run for these settings: the existing one (to resume) or a new one."""
        row = first_row(self.con.execute("SELECT run_id FROM embed_runs WHERE settings_key = ?", [settings.key]))
        if row is not None:
            self.con.execute(
                "UPDATE embed_runs SET status = 'running', updated_at = current_timestamp, config = ?::JSON "
                "WHERE run_id = ?",
                [json.dumps(config), row[0]],
            )
            return row[0]
        self.con.execute(
            """
            INSERT INTO embed_runs (corpus_id, sae_id, reader_model, layer, max_tokens, chat_template, dtype,
                                    settings_key, status, config)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running', ?::JSON)
            """,
            [
                settings.corpus_id,
                settings.sae_id,
                settings.reader_model,
                settings.layer,
                settings.max_tokens,
                settings.chat_template,
                settings.dtype,
                settings.key,
                json.dumps(config),
            ],
        )
        return first_row(self.con.execute("SELECT run_id FROM embed_runs WHERE settings_key = ?", [settings.key]))[0]

    def pending_doc_ids(
        self, run_id: int, *, limit: int | None = None, among: Sequence[int] | None = None
    ) -> list[int]:
        """Documents of the run's corpus not yet embedded by it, in doc_id order; with `among`, only those of
        these doc_ids (a worker's share)."""
        wanted = pa.table({"doc_id": pa.array(list(among or []), pa.int64())})
        return self.rows("pending_doc_ids", _pending_params(run_id, limit, among), pending_among=wanted)[
            "doc_id"
        ].to_list()

    def pending_documents(
        self, run_id: int, *, limit: int | None = None, among: Sequence[int] | None = None
    ) -> pl.DataFrame:
        """doc_id, text of `pending_doc_ids` (the texts are read for these documents only)."""
        with self.reading():
            doc_ids = self.pending_doc_ids(run_id, limit=limit, among=among)
            listed = pa.table({"doc_id": pa.array(doc_ids, pa.int64())})
            return self.rows("listed_document_texts", listed=listed)

    @_reads
    def count_pending(self, run_id: int) -> int:
        """How many documents `pending_doc_ids` holds, counted in the database (no id is loaded)."""
        wanted = pa.table({"doc_id": pa.array([], pa.int64())})
        with self.registered(pending_among=wanted):
            query = f"SELECT count(*) FROM ({read_sql('pending_doc_ids')})"
            return first_row(self.con.execute(query, _pending_params(run_id, None, None)))[0]

    def write_batch(self, run_id: int, documents: pa.Table, features: pa.Table) -> None:
        """Store one batch as one shard of run `run_id` (storage/shards.py): its documents and their concept
        rows appear together, by one rename, and the database file is not touched.

        documents: doc_id, n_tokens, n_tokens_total, truncated, n_features.
        features:  doc_id, feature_id, max_act, mean_act, n_active_tokens, argmax_pos.
        """
        publish_shard(self.shards, run_id, documents, features)

    def shard_writer(self, run_id: int, *, max_docs: int) -> ShardWriter:
        """Batches of run `run_id` published as shards of up to `max_docs` documents (storage/shards.py)."""
        return ShardWriter(self.shards, run_id, max_docs=max_docs, max_rows=SHARD_ROWS, max_seconds=SHARD_SECONDS)

    def run_growing(self, run_id: int) -> bool:
        """Whether an embedding job is adding documents to run `run_id` right now."""
        return run_is_leased(self.shards, run_id)

    def run_lease(self, run_id: int, *, describe: str) -> contextlib.AbstractContextManager[None]:
        """Held by the one embedding job that adds shards to run `run_id` (waits like any operation)."""
        return run_lease(self.shards, run_id, describe=describe, wait=self.wait)

    @_writes
    def finish_run(self, run_id: int, config: dict[str, Any]) -> str:
        """Mark the run complete when no document is left, record the invocation's config; return status."""
        status = "complete" if self.count_pending(run_id) == 0 else "running"
        self.con.execute(
            "UPDATE embed_runs SET status = ?, updated_at = current_timestamp, config = ?::JSON WHERE run_id = ?",
            [status, json.dumps(config), run_id],
        )
        return status

    @_reads
    def latest_run(self, corpus: str, *, sae_id: int | None = None) -> RunInfo:
        """The most recently updated embedding run of `corpus` (optionally by one SAE) that has embedded a
        document: a run that failed before its first batch does not hide the one before it."""
        corpus_id = self.corpus_id(corpus)
        row = first_row(
            self.con.execute(
                """
            SELECT run_id FROM embed_runs r
            WHERE corpus_id = $corpus_id AND ($sae_id IS NULL OR sae_id = $sae_id)
              AND EXISTS (SELECT 1 FROM embedded_documents e WHERE e.run_id = r.run_id)
            ORDER BY updated_at DESC, run_id DESC LIMIT 1
            """,
                {"corpus_id": corpus_id, "sae_id": sae_id},
            )
        )
        if row is None:
            raise SaeembedError(f"corpus '{corpus}' has not been embedded yet: run `saeembed embed --corpus {corpus}`")
        return self.run(row[0])

    @_reads
    def run(self, run_id: int) -> RunInfo:
        """Embedding run `run_id`."""
        row = first_row(self.con.execute(read_sql("run_info"), {"run_id": run_id}))
        if row is None:
            raise SaeembedError(f"embedding run {run_id} does not exist in {self.path}")
        return RunInfo(*row)

    @_reads
    def run_for_document(self, doc_id: int) -> RunInfo:
        """The latest run that embedded document `doc_id`."""
        row = first_row(
            self.con.execute(
                """
            SELECT r.run_id FROM embedded_documents e JOIN embed_runs r USING (run_id)
            WHERE e.doc_id = ? ORDER BY r.updated_at DESC, r.run_id DESC LIMIT 1
            """,
                [doc_id],
            )
        )
        if row is None:
            exists = self._count("documents WHERE doc_id = ?", [doc_id]) > 0
            problem = "has not been embedded yet" if exists else "does not exist"
            raise SaeembedError(f"document {doc_id} {problem} in {self.path}")
        return self.run(row[0])

    @_writes
    def record(
        self,
        kind: str,
        params: dict[str, Any],
        inputs: dict[str, Any],
        seconds: float,
        rows: dict[str, pl.DataFrame | pa.Table],
    ) -> int:
        """Record an analysis and its result rows (`{table: frame}`, columns named as the table's, without
        analysis_id) in one transaction: a killed analysis leaves nothing. Returns the analysis_id."""
        with self.registered(**_result_frames(rows)), self.transaction():
            analysis_id = self.record_analysis(kind, params, inputs, round(seconds, 3))
            self._insert_results(analysis_id, rows)
        return analysis_id

    @_writes
    def replace_rows(self, analysis_id: int, rows: dict[str, pl.DataFrame | pa.Table]) -> None:
        """The result rows of analysis `analysis_id` in these tables replaced by `rows`, in one transaction."""
        with self.registered(**_result_frames(rows)), self.transaction():
            for table in rows:
                self.con.execute(f"DELETE FROM {table} WHERE analysis_id = ?", [analysis_id])
            self._insert_results(analysis_id, rows)

    def _insert_results(self, analysis_id: int, rows: dict[str, pl.DataFrame | pa.Table]) -> None:
        # BY NAME: each frame's columns go to the table's columns of the same names (JSON columns take text).
        for table in rows:
            self.con.execute(f"INSERT INTO {table} BY NAME SELECT ? AS analysis_id, * FROM new_{table}", [analysis_id])

    @contextmanager
    def registered(self, **tables: pl.DataFrame | pa.Table) -> Iterator[None]:
        """Arrow tables (or polars frames) readable by name in this connection's SQL while the block runs.

        Register before a transaction opens: unregistering inside an aborted one would raise and hide the
        error that aborted it.
        """
        for name, table in tables.items():
            self.con.register(name, table.to_arrow() if isinstance(table, pl.DataFrame) else table)
        try:
            yield
        finally:
            for name in tables:
                self.con.unregister(name)

    @_writes
    def record_analysis(self, kind: str, params: dict[str, Any], inputs: dict[str, Any], seconds: float) -> int:
        """Add a row to `analyses` and return its analysis_id (results tables are keyed by it)."""
        row = first_row(
            self.con.execute(
                "INSERT INTO analyses (kind, params, inputs, seconds) VALUES (?, ?::JSON, ?::JSON, ?) "
                "RETURNING analysis_id",
                [kind, json.dumps(params, default=str), json.dumps(inputs, default=str), seconds],
            )
        )
        return row[0]

    @_reads
    def check(self) -> list[str]:
        """What is wrong with the stored data (see sql/consistency.sql); empty when it is consistent."""
        return [f"{problem}: {n}" for problem, n in self.con.execute(read_sql("consistency")).fetchall()]

    @_reads
    def analysis(self, analysis_id: int) -> AnalysisInfo:
        """The `analyses` row of `analysis_id`, its JSON decoded; an error when there is none."""
        row = first_row(
            self.con.execute(
                "SELECT kind, params, inputs, created_at FROM analyses WHERE analysis_id = ?", [analysis_id]
            )
        )
        if row is None:
            raise SaeembedError(f"analysis {analysis_id} does not exist in {self.path}")
        return AnalysisInfo(analysis_id, row[0], json.loads(row[1]), json.loads(row[2] or "{}"), row[3])

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN … COMMIT with the database attached for writing, rolled back when the block raises
        (KeyboardInterrupt included)."""
        with self.writing():
            self.con.execute("BEGIN TRANSACTION")
            try:
                yield
            except BaseException:
                self.con.execute("ROLLBACK")
                raise
            self.con.execute("COMMIT")


def copy_database(source: str | Path, target: str | Path) -> Path:
    """A copy of the database at `source` (its file and its shards) at `target`, made while no other
    process writes it; the copy's views read its own shards. Caches kept beside the database are not
    copied: they are rebuilt when first needed."""
    source, target = Path(source), Path(target)
    with Store.open(source, read_only=True) as store, store.reading():
        shutil.copyfile(source, target)
        wal = source.with_name(source.name + ".wal")
        if wal.exists():
            shutil.copyfile(wal, target.with_name(target.name + ".wal"))
        copied = beside(target, "shards")
        shutil.rmtree(copied, ignore_errors=True)
        shutil.copytree(store.shards, copied, ignore=shutil.ignore_patterns(".staging", ".leases"))
    with Store.open(target):
        pass  # opening it for writing points its shard views at its own shards
    return target
