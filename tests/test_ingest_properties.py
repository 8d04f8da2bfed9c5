"""Property: every generated row is stored with its text unchanged (lone surrogates excepted, as U+FFFD and
counted), or reported as skipped with its reason, or the whole ingest is refused; the counts add up."""

from __future__ import annotations

import itertools
import json
import re
import tempfile
from pathlib import Path
from typing import NamedTuple

import polars as pl
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from saeembed.errors import SaeembedError
from saeembed.jobs import ingest
from saeembed.storage.store import Store

# What polars' strip_chars() strips (Unicode White_Space), the definition of a blank text. Python's
# str.isspace() differs: it also counts U+001C..U+001F, which a text may hold and is then stored.
WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
)
SPECIAL = [",", '"', "'", "\n", "\r", "\r\n", "\t", " ", "\\", "{", "}", "é", "😀", "\x00", "\x1c", "\u2028", "\ufffd"]
SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff"]
SCHEMA = {"id": pl.Utf8, "text": pl.Utf8, "note": pl.Utf8, "n": pl.Int64}
BAD_LINES = ['{"text": "ab', "[1, 2]", "not json", '{"text": "x"} trailing']
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def texts(surrogates: bool) -> st.SearchStrategy[str | None]:
    pieces = SPECIAL + SURROGATES if surrogates else SPECIAL
    word = st.lists(st.one_of(st.sampled_from(pieces), st.text(max_size=3)), min_size=1, max_size=5).map("".join)
    return st.one_of(word, st.one_of(st.none(), st.sampled_from(["", " ", "\n\t", "\xa0", "\x1c"])))


class Row(NamedTuple):
    id: str | None
    """External id."""
    text: str | None
    """The text."""
    note: str | None
    """A text metadata column."""
    n: int | None
    """A number metadata column."""


def rows(surrogates: bool) -> st.SearchStrategy[list[Row]]:
    ids = st.one_of(st.none(), st.sampled_from(["1", "01", "a", "é", "x,y", 'q"t', " "]))
    if surrogates:
        ids = st.one_of(ids, st.sampled_from(["s\ud800", "\udc00"]))
    notes = st.one_of(st.none(), texts(surrogates).map(lambda t: f"n:{t}"))
    numbers = st.one_of(st.none(), st.integers(-(10**12), 10**12))
    row = st.builds(Row, ids, texts(surrogates), notes, numbers)

    def around(pool: list[Row]) -> st.SearchStrategy[list[Row]]:
        # Copies of earlier rows, and new rows with their ids, so that identical rows and repeated ids occur.
        pool_ids = [r.id for r in pool if r.id is not None] or ["1"]
        same_id = st.builds(Row, st.sampled_from(pool_ids), texts(surrogates), notes, numbers)
        return st.lists(st.one_of(st.sampled_from(pool), same_id, row), min_size=1, max_size=8)

    return st.lists(row, min_size=1, max_size=3).flatmap(around)


def has_lone_surrogate(value: str | None) -> bool:
    try:
        (value or "").encode("utf-16-le", "surrogatepass").decode("utf-16-le")
    except UnicodeDecodeError:
        return True
    return False


def as_json_reads(value: str | None) -> str | None:
    """What a JSON reader makes of `value` written with \\u escapes: adjacent high+low surrogates are one
    character, each lone one U+FFFD (the documented replacement)."""
    if value is None:
        return None
    return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


class Expected(NamedTuple):
    refusal: str | None
    """A regex of the SaeembedError, when the ingest must be refused."""
    kept: list[Row]
    """Rows stored, in order, as stored."""
    counts: dict[str, int]
    """Report fields."""


def expect(data: list[Row], bad_line_numbers: list[int], on_bad_line: str, on_duplicate_id: str) -> Expected:
    """The documented outcome, computed independently of saeembed."""
    if bad_line_numbers and on_bad_line == "error":
        return Expected(rf"line {bad_line_numbers[0]} is not ", [], {})
    read = [Row(as_json_reads(r.id), as_json_reads(r.text), as_json_reads(r.note), r.n) for r in data]
    replaced = sum(has_lone_surrogate(r.id) or has_lone_surrogate(r.text) or has_lone_surrogate(r.note) for r in data)
    nonempty = [r for r in read if r.text is not None and r.text.strip(WHITESPACE)]
    if not nonempty:
        return Expected(rf"every row of .* has an empty text \({len(read)} rows; column 'text'\)$", [], {})
    distinct = list(dict.fromkeys(nonempty))
    seen: set[str] = set()
    repeats = []
    for row in distinct:
        if row.id is not None:
            if row.id in seen:
                repeats.append(row)
            seen.add(row.id)
    if repeats and on_duplicate_id == "error":
        return Expected("^" + re.escape(f"id {repeats[0].id!r} repeats with different "), [], {})
    if on_duplicate_id == "first":
        firsts: set[str] = set()
        kept = [r for r in distinct if r.id is None or not (r.id in firsts or firsts.add(r.id))]
    elif on_duplicate_id == "last":
        last_at = {r.id: index for index, r in enumerate(nonempty) if r.id is not None}
        null_firsts = {r: index for index, r in reversed(list(enumerate(nonempty))) if r.id is None}
        kept = [r for index, r in enumerate(nonempty) if index in (last_at.get(r.id), null_firsts.get(r))]
    else:
        kept = distinct
    counts = {
        "read": len(data) + len(bad_line_numbers),
        "inserted": len(kept),
        "skipped_empty": len(read) - len(nonempty),
        "skipped_duplicate": len(nonempty) - len(distinct),
        "skipped_bad_line": len(bad_line_numbers),
        "duplicate_ids": len(repeats),
        "skipped_duplicate_id": len(repeats) if on_duplicate_id in ("first", "last") else 0,
        "replaced_surrogates": replaced,
    }
    return Expected(None, kept, counts)


CORPORA = (f"c{number}" for number in itertools.count())


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    """One real DuckDB file for all examples (opening one per example would take most of the time);
    each example ingests into a corpus of its own."""
    with Store.open(tmp_path_factory.mktemp("properties") / "x.duckdb") as opened:
        yield opened


def check_ingest(store: Store, path: Path, expected: Expected, **options: str) -> None:
    event("refused" if expected.refusal else "stored")
    for name, value in expected.counts.items():
        if value and name not in ("read", "inserted"):
            event(name)
    corpus = next(CORPORA)
    if expected.refusal is not None:
        with pytest.raises(SaeembedError, match=expected.refusal):
            ingest(store, path, corpus=corpus, **options)
        assert corpus not in store.corpus_names()  # refused: nothing written
        return
    report = ingest(store, path, corpus=corpus, **options)
    stored = store.query(
        "SELECT d.external_id, d.text, d.meta::VARCHAR AS meta FROM documents d JOIN corpora c USING (corpus_id) "
        "WHERE c.name = ? ORDER BY d.doc_id",
        [corpus],
    ).rows()
    again = ingest(store, path, corpus=corpus, **options)
    assert {name: getattr(report, name) for name in expected.counts} == expected.counts
    # Nothing lost: every row read is stored, already there, or skipped with its reason.
    assert report.read == (
        report.inserted
        + report.already_present
        + report.skipped_empty
        + report.skipped_duplicate
        + report.skipped_duplicate_id
        + report.skipped_bad_line
    )
    # Nothing altered: ids, texts and metadata exactly as written (lone surrogates as documented).
    assert [(i, t, json.loads(m)) for i, t, m in stored] == [
        (r.id, r.text, {"note": r.note, "n": r.n}) for r in expected.kept
    ]
    assert (again.inserted, again.already_present) == (0, report.inserted)


@SETTINGS
@given(
    data=rows(surrogates=True),
    extra=st.lists(st.tuples(st.integers(0, 8), st.sampled_from([*BAD_LINES, "", "  "])), max_size=3),
    ascii_only=st.booleans(),
    on_bad_line=st.sampled_from(["error", "skip"]),
    on_duplicate_id=st.sampled_from(["keep", "first", "last", "error"]),
)
def test_jsonl_rows_are_stored_skipped_or_refused(store, data, extra, ascii_only, on_bad_line, on_duplicate_id):
    lines = [
        # A lone surrogate can only be written as an escape; other text is written raw or escaped.
        json.dumps(r._asdict(), ensure_ascii=ascii_only or any(map(has_lone_surrogate, (r.id, r.text, r.note))))
        for r in data
    ]
    for position, line in extra:
        lines.insert(min(position, len(lines)), line)
    bad_line_numbers = [number for number, line in enumerate(lines, start=1) if line in BAD_LINES]
    expected = expect(data, bad_line_numbers, on_bad_line, on_duplicate_id)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        check_ingest(store, path, expected, on_bad_line=on_bad_line, on_duplicate_id=on_duplicate_id)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@SETTINGS
@given(data=rows(surrogates=False), on_duplicate_id=st.sampled_from(["keep", "first", "last", "error"]))
def test_csv_and_parquet_rows_are_stored_skipped_or_refused(store, suffix, data, on_duplicate_id):
    # No valid UTF-8 file can hold a lone surrogate: these formats get none. A CSV writes null and "" alike
    # as empty, which is an empty text either way; a note is never "" (it starts with 'n:').
    frame = pl.DataFrame([r._asdict() for r in data], schema=SCHEMA, orient="row")
    expected = expect(data, [], "error", on_duplicate_id)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"data{suffix}"
        frame.write_csv(path) if suffix == ".csv" else frame.write_parquet(path)
        check_ingest(store, path, expected, on_duplicate_id=on_duplicate_id)
