"""Concept rows as Parquet shards beside the database, so that embedding never holds the database file.

An embed worker stores each batch (or group of batches) as one shard: a folder holding the documents it
embedded (`documents.parquet`: one row per document) and their concept rows (`features.parquet`). The
folder is written under `.staging/`, then renamed into `run_id=N/` in one step, so a reader sees a whole
shard or none of it, and a killed worker loses only the shard it was writing. The database's
`doc_features` and `embedded_documents` are views over every published shard (sql/shard_views.sql), so
SQL reads them as it read the tables they replace.

Why not rows in the DuckDB file: DuckDB lets one process open a file for writing and then no other
process may open it, not even to read; an embedding holds hours of writes (docs/storage.md).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from saeembed.errors import SaeembedError

DOCUMENTS_SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.int64(), nullable=False),
        pa.field("n_tokens", pa.int32(), nullable=False),
        pa.field("n_tokens_total", pa.int32(), nullable=False),
        pa.field("truncated", pa.bool_(), nullable=False),
        pa.field("n_features", pa.int32(), nullable=False),
    ]
)
"""documents.parquet: one row per embedded document (the `embedded_documents` view adds run_id)."""

FEATURES_SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.int64(), nullable=False),
        pa.field("feature_id", pa.int32(), nullable=False),
        pa.field("max_act", pa.float32(), nullable=False),
        pa.field("mean_act", pa.float32(), nullable=False),
        pa.field("n_active_tokens", pa.int32(), nullable=False),
        pa.field("argmax_pos", pa.int32(), nullable=False),
    ]
)
"""features.parquet: one row per (document, concept that fired), sorted by doc_id then feature_id. The two
activations are stored in half precision where they fit (`compact_activations`); SQL reads them as FLOAT."""

DEFAULT_SHARD_DOCS = 1024
"""Documents per shard (and per embedding task): fewer, larger files keep reads fast; a killed job loses at
most the shard it was writing, which is published once a minute old anyway (SHARD_SECONDS)."""
SHARD_ROWS = 4_000_000
"""Concept rows a shard holds at most: bounds a writer's memory (≈ 100 MB of Arrow columns)."""
SHARD_SECONDS = 60.0
"""A shard is published once its first batch is this old: readers see progress, a kill loses little."""
PARQUET_OPTIONS = {
    "compression": "zstd",
    "use_dictionary": False,
    "column_encoding": {
        **{name: "DELTA_BINARY_PACKED" for name in ("doc_id", "feature_id", "n_active_tokens", "argmax_pos")},
    },
}
"""How features.parquet is written: sorted ids delta-encoded, then zstd. Half-precision activations stay
PLAIN: DuckDB cannot decode BYTE_STREAM_SPLIT for FLOAT16 (it can for FLOAT, which the float32 fallback
gets). With half precision a row takes about 6 bytes, against 15 with pyarrow's defaults (docs/storage.md)."""
FLOAT32_ENCODING = {name: "BYTE_STREAM_SPLIT" for name in ("max_act", "mean_act")}
HALF_PRECISION_LIMIT = float(np.finfo(np.float16).max)
"""Largest activation half precision holds; a shard with a larger one keeps float32 (a cast would make it inf)."""
STAGING = ".staging"
EMPTY_RUN = 0
"""run_id of the empty shard every shards folder holds: a glob over no file is an error in DuckDB."""


def shard_glob(root: Path, table: str) -> str:
    """The glob of every published shard's `table` ('features' or 'documents') under `root`."""
    return str(root.resolve() / "run_id=*" / "*" / f"{table}.parquet")


def run_folder(root: Path, run_id: int) -> Path:
    return root / f"run_id={run_id}"


def ensure_shards(root: Path) -> None:
    """Create the shards folder with its empty shard (idempotent)."""
    empty = run_folder(root, EMPTY_RUN) / "empty"
    if not (empty / "features.parquet").exists():
        publish_shard(root, EMPTY_RUN, DOCUMENTS_SCHEMA.empty_table(), FEATURES_SCHEMA.empty_table(), name="empty")


def publish_shard(root: Path, run_id: int, documents: pa.Table, features: pa.Table, *, name: str | None = None) -> Path:
    """Write one shard of run `run_id` (documents and their concept rows) and publish it by one rename.

    Raises before anything is visible when a table does not fit its schema. Returns the shard's folder."""
    try:
        documents = documents.select(DOCUMENTS_SCHEMA.names).cast(DOCUMENTS_SCHEMA)
        features = features.select(FEATURES_SCHEMA.names).cast(FEATURES_SCHEMA)
    except (KeyError, pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise SaeembedError(f"a batch of concept rows does not fit the store's layout: {error}") from None
    if name is None:
        first = int(documents["doc_id"][0].as_py()) if documents.num_rows else 0
        name = f"{first:012d}-{uuid.uuid4().hex[:12]}"
    staging = root / STAGING / f"{name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        pq.write_table(documents, staging / "documents.parquet", compression="zstd")
        write_features(features, staging / "features.parquet")
        for file in ("documents.parquet", "features.parquet"):
            _fsync(staging / file)
        target = run_folder(root, run_id) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staging, target)  # one step: readers see the whole shard or none of it
        _fsync(target.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def compact_activations(features: pa.Table) -> tuple[pa.Table, dict[str, str]]:
    """`features` with max_act and mean_act in half precision, and the encoding of those two columns.

    Half precision keeps 11 significant bits (a relative error below 0.05%): diff, search and NPMI give the
    same results as with float32 (benchmarks/half_precision.py, docs/storage.md). Activations beyond its
    range (65,504) keep float32, for the whole shard; DuckDB reads both as FLOAT, so SQL sees one type."""
    largest = pc.max(pc.abs(features["max_act"])).as_py()  # None when there is no row
    if largest is not None and largest > HALF_PRECISION_LIMIT:
        return features, FLOAT32_ENCODING
    for name in ("max_act", "mean_act"):
        features = features.set_column(
            features.schema.get_field_index(name),
            pa.field(name, pa.float16(), nullable=False),
            pc.cast(features[name], pa.float16()),
        )
    return features, {}


def write_features(features: pa.Table, path: Path) -> None:
    """Write concept rows as features.parquet is written (`compact_activations`, PARQUET_OPTIONS)."""
    features, encoding = compact_activations(features)
    options = {**PARQUET_OPTIONS, "column_encoding": {**PARQUET_OPTIONS["column_encoding"], **encoding}}
    pq.write_table(features, path, **options)


def column_bytes(root: Path) -> dict[str, int]:
    """Compressed bytes of each column of doc_features over every shard under `root`: what a query that
    reads only some columns reads from disk (Parquet stores each column apart)."""
    sizes = dict.fromkeys(FEATURES_SCHEMA.names, 0)
    for path in root.rglob("features.parquet"):
        metadata = pq.ParquetFile(path).metadata
        for group in range(metadata.num_row_groups):
            for column in range(metadata.num_columns):
                chunk = metadata.row_group(group).column(column)
                sizes[chunk.path_in_schema] += chunk.total_compressed_size
    return sizes


def remove_run(root: Path, run_id: int) -> None:
    """Every shard of run `run_id` (used when old databases move their rows into shards)."""
    shutil.rmtree(run_folder(root, run_id), ignore_errors=True)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


LEASE_POLL_SECONDS = 0.5


def run_is_leased(root: Path, run_id: int) -> bool:
    """Whether an embedding job holds run `run_id`'s lease now (the run is growing)."""
    path = root / ".leases" / f"run-{run_id}"
    if not path.exists():
        return False
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


@contextmanager
def run_lease(root: Path, run_id: int, *, describe: str, wait: float) -> Iterator[None]:
    """Hold the lease of run `run_id` while the block runs: one embedding job at a time adds shards to a
    run, so no document is embedded twice. Another job's lease is waited for up to `wait` seconds, then
    this fails with 'database busy', naming that job."""
    leases = root / ".leases"
    leases.mkdir(parents=True, exist_ok=True)
    path = leases / f"run-{run_id}"
    deadline = time.monotonic() + wait
    with path.open("a+") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "another process"
                    raise SaeembedError(
                        f"database busy: run {run_id} is being embedded by {holder}; wait for it to finish "
                        "(SAEEMBED_DB_WAIT=SECONDS waits for you; it embeds what is pending) or use other settings"
                    ) from None
                time.sleep(LEASE_POLL_SECONDS)
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} ({describe})")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


class ShardWriter:
    """Collects an embedding job's batches and publishes them as one shard once it holds `max_docs`
    documents or `max_rows` concept rows, or its first batch is `max_seconds` old: fewer, larger files
    keep reads fast (each file costs a reader a fraction of a millisecond), and a killed job loses at
    most one unpublished shard. `flush` publishes what is held (called when a job ends or is interrupted,
    so whole batches are kept)."""

    def __init__(self, root: Path, run_id: int, *, max_docs: int, max_rows: int, max_seconds: float) -> None:
        self.root = root
        self.run_id = run_id
        self.max_docs = max_docs
        self.max_rows = max_rows
        self.max_seconds = max_seconds
        self._documents: list[pa.Table] = []
        self._features: list[pa.Table] = []
        self._docs = 0
        self._rows = 0
        self._since = 0.0

    def add(self, documents: pa.Table, features: pa.Table) -> None:
        """Hold one batch; publish the shard when it is due."""
        if not self._documents:
            self._since = time.monotonic()
        self._documents.append(documents)
        self._features.append(features)
        self._docs += documents.num_rows
        self._rows += features.num_rows
        due = self._docs >= self.max_docs or self._rows >= self.max_rows
        if due or time.monotonic() - self._since >= self.max_seconds:
            self.flush()

    def flush(self) -> None:
        """Publish the batches held as one shard (nothing when none is held)."""
        if not self._documents:
            return
        documents = pa.concat_tables(self._documents).sort_by("doc_id")
        features = pa.concat_tables(self._features).sort_by([("doc_id", "ascending"), ("feature_id", "ascending")])
        publish_shard(self.root, self.run_id, documents, features)
        self._documents, self._features, self._docs, self._rows = [], [], 0, 0
