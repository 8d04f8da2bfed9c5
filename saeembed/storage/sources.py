"""Reading a user's corpus (.parquet, .csv, .jsonl, or a folder of .txt files) into rows for ingest.

Every row becomes (external_id, text, meta, content_hash): the id column (if any) as text, the text
column, every other column as one JSON object, and a hash of the three that makes re-ingest idempotent.
Rows with no text are counted and reported, never dropped silently; so are JSONL lines that are not a JSON
object, ids that repeat with different contents and lone UTF-16 surrogates (see `read_source`).
"""

from __future__ import annotations

import codecs
import glob
import gzip
import hashlib
import io
import json
import re
from array import array
from pathlib import Path
from typing import NamedTuple

import polars as pl
import zstandard

from saeembed.errors import SaeembedError, check_choice

FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "ndjson", ".ndjson": "ndjson"}
# polars decompresses these itself (it looks at the magic bytes); we open them only to check the UTF-8.
COMPRESSIONS = {".gz": gzip.open, ".zst": zstandard.open}
SUPPORTED = (
    ".parquet, .csv, .jsonl, .ndjson (the last three also as .gz or .zst), a folder of .txt files, "
    "or a table of a DuckDB file (.duckdb with --table)"
)
DUCKDB_SUFFIXES = (".duckdb", ".db")
ON_BAD_LINE = ("error", "skip")
"""What a JSONL line that is not a JSON object does: stop the ingest, or be skipped and reported."""
ON_DUPLICATE_ID = ("keep", "first", "last", "error")
"""What rows repeating an earlier row's id with another text do."""
DEFAULT_ID_COL = "id"
MAX_EMPTY_EXAMPLES = 5
# Rows hashed per batch: bounds the Python objects alive at once for sources of millions of rows.
HASH_BATCH_ROWS = 65_536
UTF8_CHUNK_BYTES = 16 * 2**20
# A JSON \u escape of a UTF-16 surrogate, paired or not: a file without one can take polars' fast path,
# which reads a lone one as NUL.
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
# Escapes walked left to right, so an escaped backslash followed by 'ud800' is not taken for an escape.
JSON_ESCAPE = re.compile(rb"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)
# Characters of a bad line quoted in its error: enough to recognise it, one terminal line.
EXCERPT_CHARS = 80
# Decompressed bytes `check_source` reads of a CSV or JSONL file, and JSONL lines it parses of them.
CHECK_SAMPLE_BYTES = 2**20
CHECK_SAMPLE_LINES = 1000


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
    """Up to 5 ids of skipped empty rows, or 'row N' for rows without one (1-based within its file, header not
    counted; in JSONL the Nth record, blank and skipped lines not counted)."""
    skipped_bad_line: int
    """JSONL lines that are not a JSON object, skipped with on_bad_line='skip' (counted in n_read)."""
    bad_line_examples: list[str]
    """Up to 5 skipped lines as 'line N: reason' (1-based; 'FILE line N: reason' for a glob)."""
    duplicate_ids: int
    """Rows whose id an earlier row of this source has with another text or metadata (counted in every mode)."""
    skipped_duplicate_id: int
    """Of those, rows not kept: none with on_duplicate_id='keep', all of them with 'first' or 'last'."""
    duplicate_id_examples: list[str]
    """Up to 5 of the repeated ids."""
    replaced_surrogates: int
    """Rows read whose JSON held a lone UTF-16 surrogate escape (text, id or metadata), each read as U+FFFD."""


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


class _Utf8Scan(NamedTuple):
    has_content: bool
    """Whether the file holds anything but whitespace."""
    surrogate_escapes: bool
    """Whether it holds a JSON \\u escape of a UTF-16 surrogate (only looked for when asked)."""


def _check_utf8(path: Path, compression: str | None, *, surrogates: bool = False) -> _Utf8Scan:
    """Raise unless the file (decompressed) is UTF-8; say whether it holds anything but whitespace and,
    with `surrogates`, whether it holds a JSON escape of a UTF-16 surrogate.

    polars' own error ('invalid utf-8 sequence') names neither the file nor the place, so the bytes are
    checked first, in chunks, without holding the whole file in memory.
    """
    opener = COMPRESSIONS[compression] if compression else open
    where = " of the decompressed data" if compression else ""
    decoder = codecs.getincrementaldecoder("utf-8")()
    consumed = 0  # bytes handed to the decoder before this chunk
    has_content = False
    found = False
    tail = b""  # the end of the previous chunk: an escape may be split between two chunks
    try:
        with opener(path, "rb") as handle:
            while chunk := handle.read(UTF8_CHUNK_BYTES):
                if surrogates and not found:
                    found = bool(SURROGATE_ESCAPE.search(tail + chunk[:5]) or SURROGATE_ESCAPE.search(chunk))
                    tail = chunk[-5:]
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
    return _Utf8Scan(has_content, found)


def _split_suffix(path: Path) -> tuple[str, str | None]:
    """(format suffix, compression suffix or None) of a file name such as 'docs.jsonl.gz'."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if len(suffixes) >= 2 and suffixes[-1] in COMPRESSIONS and suffixes[-2] != ".parquet":
        return suffixes[-2], suffixes[-1]
    return (suffixes[-1] if suffixes else ""), None


def _file_format(path: Path) -> tuple[str, str | None]:
    """('parquet', 'csv' or 'ndjson'; compression suffix or None) of a file, or the unsupported-type error."""
    suffix, compression = _split_suffix(path)
    file_format = FORMATS.get(suffix)
    if file_format is None:
        raise SaeembedError(
            f"unsupported file type '{''.join(path.suffixes) or path.name}' for {path}: use {SUPPORTED}"
        )
    return file_format, compression


class _Table(NamedTuple):
    frame: pl.DataFrame
    """The file's rows, as polars reads them."""
    skipped_bad_line: int
    """JSONL lines skipped as not a JSON object."""
    bad_line_examples: list[str]
    """Up to 5 of them as 'line N: reason'."""
    replaced_surrogates: int
    """Rows whose line held a lone surrogate escape, read as U+FFFD."""


def _cannot_read(path: Path, error: Exception) -> SaeembedError:
    message = str(error).strip()
    return SaeembedError(f"cannot read {path}: {message.splitlines()[0] if message else type(error).__name__}")


def _read_table(path: Path, *, text_col: str, id_col: str | None, on_bad_line: str) -> _Table:
    file_format, compression = _file_format(path)
    if path.stat().st_size == 0:
        raise SaeembedError(f"{path} has no rows")
    try:
        if file_format == "ndjson":
            return _read_ndjson(path, compression, on_bad_line)
        if file_format == "parquet":
            return _Table(pl.read_parquet(path), 0, [], 0)
        if not _check_utf8(path, compression).has_content:
            raise SaeembedError(f"{path} has no rows")
        # Read text and ids as written ('007' stays '007'); columns not in the file are ignored.
        # Types are inferred from every row: a column that turns from numbers to words late still reads.
        as_text = dict.fromkeys([text_col, id_col or DEFAULT_ID_COL], pl.Utf8)
        return _Table(pl.read_csv(path, infer_schema_length=None, schema_overrides=as_text), 0, [], 0)
    except pl.exceptions.NoDataError:
        raise SaeembedError(f"{path} has no rows") from None
    except (pl.exceptions.PolarsError, OSError) as error:
        raise _cannot_read(path, error) from None


def _read_ndjson(path: Path, compression: str | None, on_bad_line: str) -> _Table:
    """A JSONL file through polars' fast path when it can take it, else line by line (see `read_source`)."""
    scan = _check_utf8(path, compression, surrogates=True)
    if not scan.has_content:
        raise SaeembedError(f"{path} has no rows")
    if not scan.surrogate_escapes:
        try:
            return _Table(pl.read_ndjson(path, infer_schema_length=None), 0, [], 0)
        except pl.exceptions.PolarsError:
            pass  # polars does not say which line: find it below
    # Lines are parsed by Python's json only once polars has refused the file: in a file whose only trouble
    # is a surrogate escape, the lines holding one are rewritten and polars parses them all.
    validate = not scan.surrogate_escapes
    while True:
        lines = _json_lines(path, compression, validate=validate, on_bad_line=on_bad_line)
        try:
            frame, lines = _ndjson_frame(path, lines, on_bad_line, locate=validate)
        except pl.exceptions.PolarsError:
            if validate:
                raise
            validate = True
            continue
        return _Table(frame, lines.skipped, lines.examples, lines.replaced)


class _JsonLines(NamedTuple):
    good: bytearray
    """The lines kept, lone surrogate escapes rewritten, each ending in a newline."""
    numbers: array
    """The 1-based line number of each kept line, in order."""
    skipped: int
    """Bad lines skipped."""
    examples: list[str]
    """Up to 5 skipped lines as 'line N: reason'."""
    replaced: int
    """Kept lines that held a lone surrogate escape."""


def _json_lines(path: Path, compression: str | None, *, validate: bool, on_bad_line: str) -> _JsonLines:
    """The non-blank lines of a JSONL file; with `validate`, lines that are not a JSON object are refused
    (on_bad_line 'error') or skipped and counted ('skip')."""
    opener = COMPRESSIONS[compression] if compression else open
    lines = _JsonLines(bytearray(), array("Q"), 0, [], 0)
    skipped = replaced = 0
    with opener(path, "rb") as raw:
        # zstandard's reader has no line iteration of its own.
        handle = io.BufferedReader(raw) if compression == ".zst" else raw
        for number, line in enumerate(handle, start=1):
            line = line.rstrip(b"\r\n")
            if not line.strip(b" \t\r"):
                continue  # blank lines separate nothing in JSONL: not rows, not errors
            fixed = _replace_lone_surrogates(line) if SURROGATE_ESCAPE.search(line) else line
            if validate and (reason := _json_problem(fixed)) is not None:
                if on_bad_line == "error":
                    raise SaeembedError(f"{path} line {number} is {reason}: {_excerpt(line)}")
                skipped += 1
                if len(lines.examples) < MAX_EMPTY_EXAMPLES:
                    lines.examples.append(f"line {number}: {reason}")
                continue
            replaced += fixed != line
            lines.good.extend(fixed)
            lines.good.extend(b"\n")
            lines.numbers.append(number)
    return lines._replace(skipped=skipped, replaced=replaced)


def _ndjson_frame(path: Path, lines: _JsonLines, on_bad_line: str, *, locate: bool) -> tuple[pl.DataFrame, _JsonLines]:
    """The kept lines read by polars, and the lines with those it refused skipped. With `locate`, a line
    Python's json accepts but polars refuses (a number beyond 128 bits) is found by halving, then refused
    or skipped like any bad line; other refusals propagate."""
    while True:
        if not lines.numbers:
            if lines.skipped:
                raise SaeembedError(
                    f"no line of {path} is a JSON object ({lines.skipped} bad lines, e.g. {lines.examples[0]})"
                )
            raise SaeembedError(f"{path} has no rows")
        try:
            return pl.read_ndjson(io.BytesIO(lines.good), infer_schema_length=None), lines
        except pl.exceptions.PolarsError as error:
            if not locate:
                raise
            rows = bytes(lines.good).split(b"\n")[:-1]
            index = _first_refused(rows)
            if index is None:
                raise  # no single line is to blame (columns whose types do not mix, say)
            number = lines.numbers[index]
            reason = f"not readable ({str(error).strip().splitlines()[0]})"
            if on_bad_line == "error":
                raise SaeembedError(f"{path} line {number} is {reason}: {_excerpt(rows[index])}") from None
            if len(lines.examples) < MAX_EMPTY_EXAMPLES:
                lines.examples.append(f"line {number}: {reason}")
            del rows[index]
            del lines.numbers[index]
            good = bytearray(b"\n".join(rows))
            if rows:
                good.extend(b"\n")
            lines = lines._replace(good=good, skipped=lines.skipped + 1)


def _polars_reads(rows: list[bytes]) -> bool:
    try:
        pl.read_ndjson(io.BytesIO(b"\n".join(rows)), infer_schema_length=None)
    except pl.exceptions.PolarsError:
        return False
    return True


def _first_refused(rows: list[bytes]) -> int | None:
    """Index of a line polars refuses on its own (the range that fails is halved), or None."""
    low, high = 0, len(rows)
    while high - low > 1:
        middle = (low + high) // 2
        if not _polars_reads(rows[low:middle]):
            high = middle
        elif not _polars_reads(rows[middle:high]):
            low = middle
        else:
            return None
    return low if not _polars_reads(rows[low:high]) else None


def _json_problem(line: bytes) -> str | None:
    """Why a JSONL line is not a record ('not valid JSON (…)', 'not a JSON object (…)'), or None."""
    try:
        value = json.loads(line.decode("utf-8"), parse_constant=_no_constant, parse_float=_finite_float)
    except json.JSONDecodeError as error:
        return f"not valid JSON ({error.msg.removesuffix(' at')} at column {error.colno})"
    except ValueError as error:  # from the hooks
        return f"not valid JSON ({error})"
    except RecursionError:
        return "not readable (nested too deeply)"
    if not isinstance(value, dict):
        return f"not a JSON object (it is {_json_kind(value)})"
    return None


def _no_constant(name: str) -> None:
    # Python's json reads NaN and Infinity; JSON has no such values and polars refuses them.
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{literal} is beyond a 64-bit float")
    return value


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    return "null" if value is None else "a number"


def _replace_lone_surrogates(line: bytes) -> bytes:
    """`line` with each \\u escape of an unpaired UTF-16 surrogate written as \\ufffd (U+FFFD).

    A high surrogate escape directly followed by a low one is one character (an emoji, say) and is kept.
    """
    escapes = list(JSON_ESCAPE.finditer(line))
    units = [int(match.group(1), 16) if match.group(1) else None for match in escapes]
    pieces: list[bytes] = []
    kept_from = 0
    index = 0
    while index < len(escapes):
        unit = units[index]
        if unit is None or not 0xD800 <= unit <= 0xDFFF:
            index += 1
            continue
        follower = units[index + 1] if index + 1 < len(escapes) else None
        paired = (
            unit <= 0xDBFF
            and follower is not None
            and 0xDC00 <= follower <= 0xDFFF
            and escapes[index + 1].start() == escapes[index].end()
        )
        if paired:
            index += 2
            continue
        pieces.extend((line[kept_from : escapes[index].start()], rb"\ufffd"))
        kept_from = escapes[index].end()
        index += 1
    return b"".join([*pieces, line[kept_from:]]) if pieces else line


def _excerpt(line: bytes) -> str:
    """The start of a line for an error message: control characters escaped, so it stays one line."""
    text = line.decode("utf-8", errors="replace")
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text[:EXCERPT_CHARS])
    return shown + ("…" if len(text) > EXCERPT_CHARS else "")


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


def _is_glob(path: str | Path) -> bool:
    return any(character in str(path) for character in "*?[")


def _glob_files(pattern: str) -> list[Path]:
    files = sorted(Path(p) for p in glob.glob(str(Path(pattern).expanduser()), recursive=True) if Path(p).is_file())
    if not files:
        raise SaeembedError(f"no file matches {pattern}")
    return files


def _check_path(path: Path, table: str | None) -> None:
    if not path.exists():
        raise SaeembedError(f"no such file or directory: {path}")
    if table is not None and path.suffix.lower() not in DUCKDB_SUFFIXES:
        raise SaeembedError(f"--table names a table of a DuckDB file; {path.name} is not one (.duckdb, .db)")


def _check_columns(
    path: Path, columns: list[str], schema: pl.Schema | None, *, text_col: str, id_col: str | None
) -> str | None:
    """Raise unless the text column (and an explicit id column) are there; return the id column to use."""
    listing = ", ".join(columns) or "(none)"
    if text_col not in columns:
        raise SaeembedError(f"column '{text_col}' not found in {path.name}; columns are: {listing}")
    if id_col is not None and id_col not in columns:
        raise SaeembedError(f"id column '{id_col}' not found in {path.name}; columns are: {listing}")
    if id_col is None and DEFAULT_ID_COL in columns and text_col != DEFAULT_ID_COL:
        id_col = DEFAULT_ID_COL
    if schema is not None:
        # Null: a .jsonl whose texts are all null; categoricals: parquet written from pandas.
        if not isinstance(schema[text_col], pl.String | pl.Categorical | pl.Enum | pl.Null):
            raise SaeembedError(f"column '{text_col}' of {path.name} holds {schema[text_col]}, not text")
        if id_col is not None and schema[id_col].is_nested():
            raise SaeembedError(f"id column '{id_col}' of {path.name} holds {schema[id_col]}, not ids")
    return id_col


def read_source(
    path: str | Path,
    *,
    text_col: str = "text",
    id_col: str | None = None,
    table: str | None = None,
    on_bad_line: str = "error",
    on_duplicate_id: str = "keep",
) -> SourceRows:
    """Rows of a corpus file, or of a folder of .txt files, ready for `Store.add_documents`.

    text_col: the column holding the text (it must exist and hold text).
    id_col: the column holding the user's ids, stringified (17 → '17'). An explicit name must exist.
        None (the default, and what the CLI passes without --id-col) uses an 'id' column when there is
        one and gives rows no external id when there is none.
    Every other column goes into the row's `meta` JSON object, keeping JSON types (numbers, null, lists,
    objects); dates and times become ISO text, binary becomes base64, NaN/inf become null. Rows get a null
    meta when there are no other columns.

    on_bad_line (.jsonl/.ndjson, also compressed, and each such file of a glob): a non-blank line that is
    not a JSON object fails the read with its 1-based line number and the reason ('error', the default),
    or is skipped and counted with up to 5 examples ('skip'). Blank lines are not rows and not errors, as
    in every JSONL reader. A valid file is read by polars in one pass; only a file polars refuses is
    parsed line by line to find those lines. CSV and parquet errors fail the read either way.
    on_duplicate_id: rows whose id an earlier row has with another text or metadata are counted in every
        mode, and 'keep' (the default) keeps them all, 'first' keeps the first row of each id, 'last' the
        last, 'error' fails naming the id and both rows (numbered as in `SourceRows.empty_examples`).
        Only the rows read now are compared: an id already stored by an earlier ingest is out of scope.
        Rows equal in everything (same content hash) are duplicates, not repeated ids: the first is kept
        and the rest counted in `skipped_duplicate`.

    Text is never altered, with one exception: a JSON escape of a lone UTF-16 surrogate ('\\ud800' with
    no partner; no valid UTF-8 file, parquet file or DuckDB table can hold one) is read as U+FFFD, in
    text, ids and metadata alike, and the rows are counted in `replaced_surrogates`. NUL characters
    (a JSON '\\u0000', a NUL byte in a CSV or parquet string) are the user's text and are kept as they are.
    Every row of a source having an empty text is an error, not an ingest of nothing.

    A glob (`data/*.parquet`, `in/**/*.jsonl`) reads every matching file, in name order, as one source: a
    scheduled ingest of a glob adds only the rows of files (or file versions) not seen before, since
    stored rows are skipped by content hash.

    A DuckDB file (.duckdb, .db) is read from its table `table` (a name, or schema.name), opened read-only.

    A folder is read recursively: one document per .txt file (other files are ignored), its path relative
    to the folder as the external id and as meta {"path": ...}; text_col and id_col do not apply.
    Errors (missing path, unknown format, no rows, missing column, non-UTF-8 text, a bad JSONL line,
    no text in any row, a repeated id with on_duplicate_id='error') raise SaeembedError.
    """
    check_choice("--on-bad-line", on_bad_line, ON_BAD_LINE)
    check_choice("--on-duplicate-id", on_duplicate_id, ON_DUPLICATE_ID)
    if _is_glob(path):
        files = _glob_files(str(path))
        parts = [
            _read_part(file, text_col=text_col, id_col=id_col, table=None, on_bad_line=on_bad_line) for file in files
        ]
        # One file's 'line N' says nothing among several: each example names its file.
        parts = [
            part._replace(bad_line_examples=[f"{part.path.name} {e}" for e in part.bad_line_examples]) for part in parts
        ]
        return _combine(parts, str(path), on_duplicate_id)
    part = _read_part(Path(path).expanduser(), text_col=text_col, id_col=id_col, table=table, on_bad_line=on_bad_line)
    return _combine([part], str(part.path), on_duplicate_id)


class _Part(NamedTuple):
    """One file (or folder, or table) read, before the checks that span the whole source."""

    path: Path
    """Where the rows came from."""
    rows: pl.DataFrame
    """external_id, text, meta and row (1-based row number in this file), every row read."""
    text_col: str
    """The text column, for messages."""
    folder: bool
    """Whether the rows are the .txt files of a folder."""
    skipped_bad_line: int
    """JSONL lines skipped."""
    bad_line_examples: list[str]
    """Up to 5 of them."""
    replaced_surrogates: int
    """Rows whose lone surrogate escapes were read as U+FFFD."""


def _read_part(path: Path, *, text_col: str, id_col: str | None, table: str | None, on_bad_line: str) -> _Part:
    _check_path(path, table)
    folder = path.is_dir()
    if folder:
        read = _Table(_read_text_folder(path), 0, [], 0)
        text_col, id_col = "text", "id"
    elif path.suffix.lower() in DUCKDB_SUFFIXES:
        read = _Table(_read_duckdb_table(path, table), 0, [], 0)
    else:
        read = _read_table(path, text_col=text_col, id_col=id_col, on_bad_line=on_bad_line)
    frame = read.frame
    if frame.height == 0:
        raise SaeembedError(f"{path} has no rows")
    id_col = _check_columns(path, frame.columns, frame.schema, text_col=text_col, id_col=id_col)
    schema = frame.schema
    meta_columns = [_meta_column(c, schema[c], path.name) for c in frame.columns if c not in (text_col, id_col)]
    rows = frame.select(
        (pl.col(id_col).cast(pl.Utf8) if id_col else pl.lit(None, dtype=pl.Utf8)).alias("external_id"),
        pl.col(text_col).cast(pl.Utf8).alias("text"),
        (pl.struct(meta_columns).struct.json_encode() if meta_columns else pl.lit(None, dtype=pl.Utf8)).alias("meta"),
    ).with_row_index("row", offset=1)
    return _Part(path, rows, text_col, folder, read.skipped_bad_line, read.bad_line_examples, read.replaced_surrogates)


def _combine(parts: list[_Part], name: str, on_duplicate_id: str) -> SourceRows:
    """The rows of every part as one source: empty rows, identical rows and repeated ids found across all."""
    rows = pl.concat(
        [part.rows.with_columns(pl.lit(index, pl.UInt32).alias("part")) for index, part in enumerate(parts)]
    )
    is_empty = pl.col("text").is_null() | (pl.col("text").str.strip_chars() == "")
    empty = rows.filter(is_empty)
    rows = rows.filter(~is_empty)
    if rows.height == 0:
        if all(part.folder for part in parts):
            raise SaeembedError(f"every .txt file in {name} is empty ({empty.height} files)")
        columns = sorted({part.text_col for part in parts})
        raise SaeembedError(
            f"every row of {name} has an empty text ({empty.height} rows; column {', '.join(map(repr, columns))})"
        )
    rows = rows.with_columns(_content_hashes(rows))
    distinct = rows.filter(pl.col("content_hash").is_first_distinct())
    has_id = pl.col("external_id").is_not_null()
    # Rows of distinct contents sharing an id: each one after the first of its id is a repeat.
    repeats = distinct.filter(has_id & ~pl.col("external_id").is_first_distinct())
    if repeats.height and on_duplicate_id == "error":
        raise _repeated_id(distinct, repeats.row(0, named=True), parts)
    if on_duplicate_id == "first":
        kept = distinct.filter(~has_id | pl.col("external_id").is_first_distinct())
    elif on_duplicate_id == "last":
        # The last row of each id, even when an identical copy of it came earlier.
        kept = rows.filter(
            (~has_id & pl.col("content_hash").is_first_distinct()) | (has_id & pl.col("external_id").is_last_distinct())
        )
    else:
        kept = distinct
    examples = [
        external_id if external_id is not None else f"row {row}"
        for row, external_id in empty.head(MAX_EMPTY_EXAMPLES).select("row", "external_id").iter_rows()
    ]
    return SourceRows(
        rows=kept.select("external_id", "text", "meta", "content_hash"),
        n_read=sum(part.rows.height + part.skipped_bad_line for part in parts),
        skipped_empty=empty.height,
        skipped_duplicate=rows.height - distinct.height,
        empty_examples=examples,
        skipped_bad_line=sum(part.skipped_bad_line for part in parts),
        bad_line_examples=[e for part in parts for e in part.bad_line_examples][:MAX_EMPTY_EXAMPLES],
        duplicate_ids=repeats.height,
        skipped_duplicate_id=repeats.height if on_duplicate_id in ("first", "last") else 0,
        duplicate_id_examples=repeats["external_id"].unique(maintain_order=True).head(MAX_EMPTY_EXAMPLES).to_list(),
        replaced_surrogates=sum(part.replaced_surrogates for part in parts),
    )


def _repeated_id(distinct: pl.DataFrame, repeat: dict, parts: list[_Part]) -> SaeembedError:
    first = distinct.filter(pl.col("external_id") == repeat["external_id"]).row(0, named=True)
    what = "texts" if first["text"] != repeat["text"] else "metadata"
    if first["part"] == repeat["part"]:
        where = f"rows {first['row']} and {repeat['row']} of {parts[first['part']].path}"
    else:
        where = (
            f"row {first['row']} of {parts[first['part']].path} and row {repeat['row']} of {parts[repeat['part']].path}"
        )
    return SaeembedError(
        f"id {repeat['external_id']!r} repeats with different {what}: {where} "
        "(--on-duplicate-id keep, first or last accepts repeated ids)"
    )


def _read_duckdb_table(path: Path, table: str | None, *, limit: int | None = None) -> pl.DataFrame:
    import duckdb

    if table is None:
        raise SaeembedError(f"{path.name} is a DuckDB file: say which table to read with --table NAME")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?", table):
        raise SaeembedError(f"--table must be a table name (or schema.name), got {table!r}")
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            return con.sql(f"SELECT * FROM {table}" + (f" LIMIT {int(limit)}" if limit is not None else "")).pl()
    except duckdb.CatalogException:
        raise SaeembedError(f"no table {table!r} in {path}") from None
    except duckdb.IOException as error:
        raise SaeembedError(f"cannot read {path}: {str(error).splitlines()[0]}") from None


def check_source(
    path: str | Path, *, text_col: str = "text", id_col: str | None = None, table: str | None = None
) -> None:
    """Raise the SaeembedError `read_source` would raise for a missing path, a glob matching nothing, an
    unknown file type, --table misuse, an unknown text or id column, a text column that is not text
    (parquet, DuckDB) or a file without rows, reading only names, schemas and the first rows.

    Parquet files and DuckDB tables answer from their schema and row count; CSV and JSONL files from their
    first MiB (decompressed), so the check takes milliseconds on files of any size. A JSONL file has no
    schema: its columns are the keys of its first lines, and a column missing there is looked for as a key
    in the rest of the file (a read at disk speed, on that path only) before it is called missing.
    Not checked, as they need every row: bad lines, non-UTF-8 bytes or empty texts after the first MiB,
    and repeated ids. Each file of a glob is checked.
    """
    if _is_glob(path):
        for file in _glob_files(str(path)):
            _check_file(file, text_col=text_col, id_col=id_col)
        return
    path = Path(path).expanduser()
    _check_path(path, table)
    if path.is_dir():
        if not any(_is_txt(file) for file in path.rglob("*")):
            raise SaeembedError(f"folder {path} has no .txt files")
    elif path.suffix.lower() in DUCKDB_SUFFIXES:
        first = _read_duckdb_table(path, table, limit=1)
        if first.height == 0:
            raise SaeembedError(f"{path} has no rows")
        _check_columns(path, first.columns, first.schema, text_col=text_col, id_col=id_col)
    else:
        _check_file(path, text_col=text_col, id_col=id_col)


def _check_file(path: Path, *, text_col: str, id_col: str | None) -> None:
    file_format, compression = _file_format(path)
    if path.stat().st_size == 0:
        raise SaeembedError(f"{path} has no rows")
    if file_format == "parquet":
        try:
            lazy = pl.scan_parquet(path)
            schema = lazy.collect_schema()
            height = lazy.select(pl.len()).collect().item()  # from the footer: no data page is read
        except (pl.exceptions.PolarsError, OSError) as error:
            raise _cannot_read(path, error) from None
        if height == 0:
            raise SaeembedError(f"{path} has no rows")
        _check_columns(path, schema.names(), schema, text_col=text_col, id_col=id_col)
        return
    sample, whole = _sample(path, compression)
    if whole and not sample.strip():
        raise SaeembedError(f"{path} has no rows")
    # A sample cut short ends in a partial line: only whole lines are read.
    complete = sample if whole else sample[: sample.rfind(b"\n") + 1]
    found = None
    if complete:
        found = _csv_header(complete) if file_format == "csv" else _ndjson_keys(complete)
    if found is None:
        return  # the first lines do not say (a first line over a MiB, say): read_source will
    columns, has_rows = found
    if whole and not has_rows:
        raise SaeembedError(f"{path} has no rows")
    if not whole and file_format == "ndjson":
        # A key may first appear past the sample.
        columns += [
            name
            for name in (text_col, id_col)
            if name is not None and name not in columns and _holds_key(path, compression, name)
        ]
    _check_columns(path, columns, None, text_col=text_col, id_col=id_col)


def _sample(path: Path, compression: str | None) -> tuple[bytes, bool]:
    """The first CHECK_SAMPLE_BYTES of a file (decompressed), checked to be UTF-8, and whether that is all."""
    opener = COMPRESSIONS[compression] if compression else open
    try:
        with opener(path, "rb") as handle:
            sample = handle.read(CHECK_SAMPLE_BYTES)
            whole = not handle.read(1)
    except (OSError, EOFError, zstandard.ZstdError) as error:
        raise SaeembedError(f"cannot read {path}: {error}") from None
    try:
        # Not final: a character may be split at the end of a cut sample.
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=whole)
    except UnicodeDecodeError as error:
        raise _not_utf8(path, error, error.start, " of the decompressed data" if compression else "") from None
    return sample, whole


def _csv_header(data: bytes) -> tuple[list[str], bool] | None:
    """(columns, whether a row follows the header) of the start of a CSV file, or None if polars cannot tell."""
    try:
        first = pl.read_csv(io.BytesIO(data), n_rows=1, infer_schema_length=0)
    except pl.exceptions.NoDataError:
        return [], False
    except pl.exceptions.PolarsError:
        return None
    return first.columns, first.height > 0


def _ndjson_keys(data: bytes) -> tuple[list[str], bool] | None:
    """(keys in order of first appearance, whether any line is an object) of the first JSONL lines."""
    keys: dict[str, None] = {}
    objects = bad = 0
    for line in data.split(b"\n"):
        if not line.strip(b" \t\r"):
            continue
        line = _replace_lone_surrogates(line) if SURROGATE_ESCAPE.search(line) else line
        if _json_problem(line) is not None:
            bad += 1  # read_source refuses or skips it, depending on on_bad_line
            continue
        keys.update(dict.fromkeys(json.loads(line)))
        objects += 1
        if objects + bad >= CHECK_SAMPLE_LINES:
            break
    if bad and not objects:
        return None
    return list(keys), objects > 0


def _holds_key(path: Path, compression: str | None, name: str) -> bool:
    """Whether the JSON-encoded `name` occurs anywhere in the (decompressed) file."""
    needles = {json.dumps(name).encode(), json.dumps(name, ensure_ascii=False).encode()}
    overlap = max(len(needle) for needle in needles) - 1
    opener = COMPRESSIONS[compression] if compression else open
    tail = b""
    with opener(path, "rb") as handle:
        while chunk := handle.read(UTF8_CHUNK_BYTES):
            window = tail + chunk
            if any(needle in window for needle in needles):
                return True
            tail = window[-overlap:] if overlap else b""
    return False
