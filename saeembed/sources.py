"""Reading a user's corpus (.parquet, .csv, .jsonl, or a folder of .txt files) into rows for ingest.

Every row becomes (external_id, text, meta, content_hash): the id column (if any) as text, the text
column, every other column as one JSON object, and a hash of the three that makes re-ingest idempotent.
Rows with no text are counted and reported, never dropped silently.
"""

from __future__ import annotations

import codecs
import glob
import gzip
import hashlib
import re
from pathlib import Path
from typing import NamedTuple

import polars as pl
import zstandard

from saeembed.errors import SaeembedError

FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "ndjson", ".ndjson": "ndjson"}
# polars decompresses these itself (it looks at the magic bytes); we open them only to check the UTF-8.
COMPRESSIONS = {".gz": gzip.open, ".zst": zstandard.open}
SUPPORTED = (
    ".parquet, .csv, .jsonl, .ndjson (the last three also as .gz or .zst), a folder of .txt files, "
    "or a table of a DuckDB file (.duckdb with --table)"
)
DUCKDB_SUFFIXES = (".duckdb", ".db")
DEFAULT_ID_COL = "id"
MAX_EMPTY_EXAMPLES = 5
# Rows hashed per batch: bounds the Python objects alive at once for sources of millions of rows.
HASH_BATCH_ROWS = 65_536
UTF8_CHUNK_BYTES = 16 * 2**20


class SourceRows(NamedTuple):
    rows: pl.DataFrame
    """external_id (text or null), text, meta (JSON object text or null), content_hash; in source order."""
    n_read: int
    """Rows read from the source."""
    skipped_empty: int
    """Rows whose text was null, empty or whitespace only (reported, not ingested)."""
    skipped_duplicate: int
    """Rows identical (same content_hash) to an earlier row of the same source; the first is kept."""
    empty_examples: list[str]
    """Up to 5 ids of skipped empty rows, or 'row N' (1-based, header not counted) for rows without one."""


def content_hash(text: str, external_id: str | None, meta_json: str | None) -> str:
    """Stable hash of one row: equal rows hash equally in every run and version, so re-ingest adds nothing.

    Each part is length-prefixed (null is '-'), so no two different rows share a payload.
    `read_source` computes the same payload for whole columns at once (see `_content_hashes`).
    """
    payload = ",".join(
        "-" if part is None else f"{len(part.encode())}:{part}" for part in (text, external_id, meta_json)
    )
    return _digest(payload.encode())


def _digest(payload: bytes) -> str:
    return hashlib.blake2b(payload, digest_size=16).hexdigest()


def _content_hashes(rows: pl.DataFrame) -> pl.Series:
    """`content_hash` of every row: the payloads are built by polars, only the digest runs per row."""

    def part(name: str) -> pl.Expr:
        value = pl.concat_str(pl.col(name).str.len_bytes().cast(pl.Utf8), pl.lit(":"), pl.col(name))
        return pl.when(pl.col(name).is_null()).then(pl.lit("-")).otherwise(value)

    payloads = rows.select(
        pl.concat_str([part("text"), part("external_id"), part("meta")], separator=",").cast(pl.Binary)
    ).to_series()
    hashes: list[str] = []
    for start in range(0, len(payloads), HASH_BATCH_ROWS):
        hashes.extend(_digest(payload) for payload in payloads.slice(start, HASH_BATCH_ROWS).to_list())
    return pl.Series("content_hash", hashes, dtype=pl.Utf8)


def _not_utf8(path: Path, error: UnicodeDecodeError, offset: int, where: str = "") -> SaeembedError:
    return SaeembedError(
        f"{path} is not UTF-8: invalid byte 0x{error.object[error.start]:02x} at offset {offset}{where}"
    )


def _check_utf8(path: Path, compression: str | None) -> bool:
    """Raise unless the file (decompressed) is UTF-8; return whether it holds anything but whitespace.

    polars' own error ('invalid utf-8 sequence') names neither the file nor the place, so the bytes are
    checked first, in chunks, without holding the whole file in memory.
    """
    opener = COMPRESSIONS[compression] if compression else open
    where = " of the decompressed data" if compression else ""
    decoder = codecs.getincrementaldecoder("utf-8")()
    consumed = 0  # bytes handed to the decoder before this chunk
    has_content = False
    try:
        with opener(path, "rb") as handle:
            while chunk := handle.read(UTF8_CHUNK_BYTES):
                # The decoder may hold the first bytes of a character split across chunks.
                pending = len(decoder.getstate()[0])
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as error:
                    raise _not_utf8(path, error, consumed - pending + error.start, where) from None
                consumed += len(chunk)
                has_content = has_content or bool(chunk.strip())
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError as error:
                raise _not_utf8(path, error, consumed - pending + error.start, where) from None
    except (OSError, EOFError, zstandard.ZstdError) as error:
        raise SaeembedError(f"cannot read {path}: {error}") from None
    return has_content


def _split_suffix(path: Path) -> tuple[str, str | None]:
    """(format suffix, compression suffix or None) of a file name such as 'docs.jsonl.gz'."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if len(suffixes) >= 2 and suffixes[-1] in COMPRESSIONS and suffixes[-2] != ".parquet":
        return suffixes[-2], suffixes[-1]
    return (suffixes[-1] if suffixes else ""), None


def _read_table(path: Path, *, text_col: str, id_col: str | None) -> pl.DataFrame:
    suffix, compression = _split_suffix(path)
    file_format = FORMATS.get(suffix)
    if file_format is None:
        raise SaeembedError(
            f"unsupported file type '{''.join(path.suffixes) or path.name}' for {path}: use {SUPPORTED}"
        )
    if path.stat().st_size == 0 or (file_format != "parquet" and not _check_utf8(path, compression)):
        raise SaeembedError(f"{path} has no rows")
    try:
        if file_format == "parquet":
            return pl.read_parquet(path)
        if file_format == "csv":
            # Read text and ids as written ('007' stays '007'); columns not in the file are ignored.
            # Types are inferred from every row: a column that turns from numbers to words late still reads.
            as_text = dict.fromkeys([text_col, id_col or DEFAULT_ID_COL], pl.Utf8)
            return pl.read_csv(path, infer_schema_length=None, schema_overrides=as_text)
        return pl.read_ndjson(path, infer_schema_length=None)
    except pl.exceptions.NoDataError:
        raise SaeembedError(f"{path} has no rows") from None
    except (pl.exceptions.PolarsError, OSError) as error:
        message = str(error).strip()
        raise SaeembedError(
            f"cannot read {path}: {message.splitlines()[0] if message else type(error).__name__}"
        ) from None


def _read_text_folder(folder: Path) -> pl.DataFrame:
    """One row per .txt file under `folder` (sorted by relative path): id and meta 'path' are that path."""
    files = sorted((file.relative_to(folder).as_posix(), file) for file in folder.rglob("*") if _is_txt(file))
    if not files:
        raise SaeembedError(f"folder {folder} has no .txt files")
    texts = []
    for _, file in files:
        data = file.read_bytes()
        try:
            texts.append(data.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise _not_utf8(file, error, error.start) from None
    relative = [name for name, _ in files]
    return pl.DataFrame(
        {"id": relative, "text": texts, "path": relative}, schema=dict.fromkeys(["id", "text", "path"], pl.Utf8)
    )


def _is_txt(path: Path) -> bool:
    return path.suffix.lower() == ".txt" and path.is_file()


def _contains_binary(dtype: pl.DataType) -> bool:
    if dtype == pl.Binary:
        return True
    if isinstance(dtype, pl.List | pl.Array):
        return _contains_binary(dtype.inner)
    if isinstance(dtype, pl.Struct):
        return any(_contains_binary(field.dtype) for field in dtype.fields)
    return False


def _meta_column(name: str, dtype: pl.DataType, source: str) -> pl.Expr:
    """Column `name` in a form polars writes as JSON, keeping numbers as numbers."""
    column = pl.col(name)
    if dtype == pl.Binary:
        return column.bin.encode("base64")
    if _contains_binary(dtype):
        # polars cannot write nested binary to JSON (it panics), and there is no faithful JSON form of it.
        raise SaeembedError(f"column '{name}' of {source} holds binary data inside {dtype}; drop it or convert it")
    if isinstance(dtype, pl.Decimal):
        # polars writes decimals as JSON strings; metadata wants them as numbers.
        return column.cast(pl.Float64)
    return column


def read_source(
    path: str | Path, *, text_col: str = "text", id_col: str | None = None, table: str | None = None
) -> SourceRows:
    """Rows of a corpus file, or of a folder of .txt files, ready for `Store.add_documents`.

    text_col: the column holding the text (it must exist and hold text).
    id_col: the column holding the user's ids, stringified (17 → '17'). An explicit name must exist.
        None (the default, and what the CLI passes without --id-col) uses an 'id' column when there is
        one and gives rows no external id when there is none.
    Every other column goes into the row's `meta` JSON object, keeping JSON types (numbers, null, lists,
    objects); dates and times become ISO text, binary becomes base64, NaN/inf become null. Rows get a null
    meta when there are no other columns.

    A glob (`data/*.parquet`, `in/**/*.jsonl`) reads every matching file, in name order, as one source: a
    scheduled ingest of a glob adds only the rows of files (or file versions) not seen before, since
    stored rows are skipped by content hash.

    A DuckDB file (.duckdb, .db) is read from its table `table` (a name, or schema.name), opened read-only.

    A folder is read recursively: one document per .txt file (other files are ignored), its path relative
    to the folder as the external id and as meta {"path": ...}; text_col and id_col do not apply.
    Errors (missing path, unknown format, no rows, missing column, non-UTF-8 text) raise SaeembedError.
    """
    if any(character in str(path) for character in "*?["):
        return _read_glob(str(path), text_col=text_col, id_col=id_col)
    path = Path(path).expanduser()
    if not path.exists():
        raise SaeembedError(f"no such file or directory: {path}")
    if table is not None and path.suffix.lower() not in DUCKDB_SUFFIXES:
        raise SaeembedError(f"--table names a table of a DuckDB file; {path.name} is not one (.duckdb, .db)")
    if path.is_dir():
        frame = _read_text_folder(path)
        text_col, id_col = "text", "id"
    elif path.suffix.lower() in DUCKDB_SUFFIXES:
        frame = _read_duckdb_table(path, table)
    else:
        frame = _read_table(path, text_col=text_col, id_col=id_col)
    if frame.height == 0:
        raise SaeembedError(f"{path} has no rows")

    columns = ", ".join(frame.columns) or "(none)"
    if text_col not in frame.columns:
        raise SaeembedError(f"column '{text_col}' not found in {path.name}; columns are: {columns}")
    if id_col is not None and id_col not in frame.columns:
        raise SaeembedError(f"id column '{id_col}' not found in {path.name}; columns are: {columns}")
    if id_col is None and DEFAULT_ID_COL in frame.columns and text_col != DEFAULT_ID_COL:
        id_col = DEFAULT_ID_COL
    schema = frame.schema
    # Null: a .jsonl whose texts are all null; categoricals: parquet written from pandas.
    if not isinstance(schema[text_col], pl.String | pl.Categorical | pl.Enum | pl.Null):
        raise SaeembedError(f"column '{text_col}' of {path.name} holds {schema[text_col]}, not text")
    if id_col is not None and schema[id_col].is_nested():
        raise SaeembedError(f"id column '{id_col}' of {path.name} holds {schema[id_col]}, not ids")

    meta_columns = [_meta_column(c, schema[c], path.name) for c in frame.columns if c not in (text_col, id_col)]
    rows = frame.select(
        (pl.col(id_col).cast(pl.Utf8) if id_col else pl.lit(None, dtype=pl.Utf8)).alias("external_id"),
        pl.col(text_col).cast(pl.Utf8).alias("text"),
        (pl.struct(meta_columns).struct.json_encode() if meta_columns else pl.lit(None, dtype=pl.Utf8)).alias("meta"),
    ).with_row_index("row_number", offset=1)

    is_empty = pl.col("text").is_null() | (pl.col("text").str.strip_chars() == "")
    empty = rows.filter(is_empty)
    rows = rows.filter(~is_empty).drop("row_number")
    rows = rows.with_columns(_content_hashes(rows))
    unique = rows.filter(pl.col("content_hash").is_first_distinct())
    examples = [
        external_id if external_id is not None else f"row {row_number}"
        for row_number, external_id in empty.head(MAX_EMPTY_EXAMPLES).select("row_number", "external_id").iter_rows()
    ]
    return SourceRows(
        rows=unique,
        n_read=frame.height,
        skipped_empty=empty.height,
        skipped_duplicate=rows.height - unique.height,
        empty_examples=examples,
    )


def _read_glob(pattern: str, *, text_col: str, id_col: str | None) -> SourceRows:
    files = sorted(Path(p) for p in glob.glob(str(Path(pattern).expanduser()), recursive=True) if Path(p).is_file())
    if not files:
        raise SaeembedError(f"no file matches {pattern}")
    parts = [read_source(file, text_col=text_col, id_col=id_col) for file in files]
    rows = pl.concat([part.rows for part in parts])
    unique = rows.filter(pl.col("content_hash").is_first_distinct())
    return SourceRows(
        rows=unique,
        n_read=sum(part.n_read for part in parts),
        skipped_empty=sum(part.skipped_empty for part in parts),
        skipped_duplicate=sum(part.skipped_duplicate for part in parts) + rows.height - unique.height,
        empty_examples=[e for part in parts for e in part.empty_examples][:MAX_EMPTY_EXAMPLES],
    )


def _read_duckdb_table(path: Path, table: str | None) -> pl.DataFrame:
    import duckdb

    if table is None:
        raise SaeembedError(f"{path.name} is a DuckDB file: say which table to read with --table NAME")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?", table):
        raise SaeembedError(f"--table must be a table name (or schema.name), got {table!r}")
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            return con.sql(f"SELECT * FROM {table}").pl()
    except duckdb.CatalogException:
        raise SaeembedError(f"no table {table!r} in {path}") from None
    except duckdb.IOException as error:
        raise SaeembedError(f"cannot read {path}: {str(error).splitlines()[0]}") from None
