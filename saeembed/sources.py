"""Reading a user's corpus (.parquet, .csv, .jsonl, or a folder of .txt files) into rows for ingest."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import NamedTuple

import polars as pl

from saeembed.errors import SaeembedError

SUPPORTED = ".parquet, .csv, .jsonl (or .ndjson), or a folder of .txt files"
DEFAULT_ID_COL = "id"


class SourceRows(NamedTuple):
    rows: pl.DataFrame
    """external_id, text, meta (JSON object text or null), content_hash."""
    n_read: int
    """Rows read from the source."""
    skipped_empty: int
    """Rows whose text was null, empty or whitespace only (reported, not ingested)."""
    skipped_duplicate: int
    """Rows identical (same content_hash) to an earlier row of the same source."""
    empty_examples: list[str]
    """Up to 5 ids (or 'row N', 1-based) of skipped empty rows."""


def content_hash(text: str, external_id: str | None, meta_json: str | None) -> str:
    """Stable hash of one row: what makes re-ingesting the same rows idempotent."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (text, external_id, meta_json):
        digest.update(b"\x00" if part is None else b"\x01" + part.encode("utf-8", "surrogatepass"))
        digest.update(b"\x1f")
    return digest.hexdigest()


def _check_utf8(path: Path) -> None:
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SaeembedError(
            f"{path} is not UTF-8: invalid byte 0x{data[error.start]:02x} at offset {error.start}"
        ) from None


def _read_table(path: Path) -> pl.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pl.read_parquet(path)
        if suffix == ".csv":
            _check_utf8(path)
            return pl.read_csv(path, infer_schema_length=10_000)
        if suffix in (".jsonl", ".ndjson"):
            _check_utf8(path)
            return pl.read_ndjson(path, infer_schema_length=10_000)
    except (pl.exceptions.PolarsError, OSError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SaeembedError(f"cannot read {path}: {first_line}") from None
    raise SaeembedError(f"unsupported file type '{path.suffix}' for {path}: use {SUPPORTED}")


def _read_text_folder(folder: Path) -> pl.DataFrame:
    files = sorted(p for p in folder.rglob("*.txt") if p.is_file())
    if not files:
        raise SaeembedError(f"folder {folder} has no .txt files")
    texts = []
    for file in files:
        _check_utf8(file)
        texts.append(file.read_text(encoding="utf-8"))
    relative = [str(file.relative_to(folder)) for file in files]
    return pl.DataFrame({"id": relative, "text": texts, "path": relative})


def read_source(path: str | Path, *, text_col: str = "text", id_col: str | None = None) -> SourceRows:
    """Rows of a source ready for `Store.add_documents`.

    id_col=None uses an 'id' column when there is one (else no external ids); an explicit id_col must
    exist. Every other column goes into the row's metadata JSON, keeping JSON types.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise SaeembedError(f"no such file or directory: {path}")
    if path.is_dir():
        frame = _read_text_folder(path)
        text_col, id_col = "text", "id"
    else:
        frame = _read_table(path)
    if frame.height == 0:
        raise SaeembedError(f"{path} has no rows")
    columns = ", ".join(frame.columns)
    if text_col not in frame.columns:
        raise SaeembedError(f"column '{text_col}' not found in {path.name}; columns are: {columns}")
    if id_col is not None and id_col not in frame.columns:
        raise SaeembedError(f"id column '{id_col}' not found in {path.name}; columns are: {columns}")
    if id_col is None and DEFAULT_ID_COL in frame.columns and text_col != DEFAULT_ID_COL:
        id_col = DEFAULT_ID_COL
    if frame.schema[text_col] != pl.Utf8:
        raise SaeembedError(f"column '{text_col}' of {path.name} holds {frame.schema[text_col]}, not text")

    meta_columns = [c for c in frame.columns if c not in (text_col, id_col)]
    rows = frame.with_row_index("row_number", offset=1).select(
        "row_number",
        (pl.col(id_col).cast(pl.Utf8) if id_col else pl.lit(None, dtype=pl.Utf8)).alias("external_id"),
        pl.col(text_col).alias("text"),
        (pl.struct(meta_columns).struct.json_encode() if meta_columns else pl.lit(None, dtype=pl.Utf8)).alias("meta"),
    )
    is_empty = pl.col("text").is_null() | (pl.col("text").str.strip_chars() == "")
    empty = rows.filter(is_empty)
    rows = rows.filter(~is_empty)
    hashes = [content_hash(*row) for row in rows.select("text", "external_id", "meta").iter_rows()]
    rows = rows.with_columns(pl.Series("content_hash", hashes, dtype=pl.Utf8))
    unique = rows.unique(subset="content_hash", keep="first", maintain_order=True)
    examples = [
        external_id if external_id is not None else f"row {row_number}"
        for row_number, external_id in empty.select("row_number", "external_id").head(5).iter_rows()
    ]
    return SourceRows(
        rows=unique.drop("row_number"),
        n_read=frame.height,
        skipped_empty=empty.height,
        skipped_duplicate=rows.height - unique.height,
        empty_examples=examples,
    )
