"""Reading corpora from files: every format, ids, typed metadata, empty and duplicate rows, hashes, clear errors."""

from __future__ import annotations

import gzip
import json
import re
import time
from decimal import Decimal

import polars as pl
import pytest
import zstandard

from saeembed.errors import SaeembedError
from saeembed.jobs import ingest
from saeembed.storage import sources
from saeembed.storage.sources import check_source, content_hash, read_source
from saeembed.storage.store import Store

FRAME = pl.DataFrame(
    {
        "id": [1, 2, 3, 4, 5],
        "text": ["Goal in the last minute.", None, "Shares rose 3%.", "   ", "Goal in the last minute."],
        "topic": ["sports", "sports", "business", "world", "sports"],
        "score": [0.5, 1.0, None, 2.0, 0.5],
        "votes": [3, 1, 4, 1, 5],
    }
)
WRITERS = {".parquet": pl.DataFrame.write_parquet, ".csv": pl.DataFrame.write_csv, ".jsonl": pl.DataFrame.write_ndjson}


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_each_format_gives_ids_texts_and_typed_meta(tmp_path, suffix):
    path = tmp_path / f"docs{suffix}"
    WRITERS[suffix](FRAME, path)
    source = read_source(path)
    assert (source.n_read, source.skipped_empty, source.skipped_duplicate) == (5, 2, 0)  # row 5 has its own id
    assert source.empty_examples == ["2", "4"]
    assert source.rows.columns == ["external_id", "text", "meta", "content_hash"]
    assert source.rows["external_id"].to_list() == ["1", "3", "5"]
    assert source.rows["text"].to_list() == ["Goal in the last minute.", "Shares rose 3%.", "Goal in the last minute."]
    assert [json.loads(m) for m in source.rows["meta"]] == [
        {"topic": "sports", "score": 0.5, "votes": 3},
        {"topic": "business", "score": None, "votes": 4},
        {"topic": "sports", "score": 0.5, "votes": 5},
    ]


def test_compressed_and_ndjson_files_read_like_plain_ones(tmp_path):
    plain = tmp_path / "plain.jsonl"
    FRAME.write_ndjson(plain)
    (tmp_path / "docs.ndjson").write_bytes(plain.read_bytes())
    (tmp_path / "docs.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))
    FRAME.write_csv(tmp_path / "plain.csv")
    (tmp_path / "docs.csv.gz").write_bytes(gzip.compress((tmp_path / "plain.csv").read_bytes()))
    expected = read_source(plain).rows
    for name in ["docs.ndjson", "docs.jsonl.zst", "docs.csv.gz"]:
        assert read_source(tmp_path / name).rows.equals(expected), name


def test_nested_meta_is_kept_and_odd_types_become_json(tmp_path):
    path = tmp_path / "nested.parquet"
    pl.DataFrame(
        {
            "text": ["a", "b"],
            "tags": [["x", "y"], None],
            "author": [{"name": "Ann", "age": 41}, {"name": None, "age": None}],
            "price": pl.Series([Decimal("1.50"), None], dtype=pl.Decimal(10, 2)),
            "blob": [b"\xff\x00", None],
        }
    ).write_parquet(path)
    source = read_source(path)
    assert source.rows["external_id"].to_list() == [None, None]  # no 'id' column: no ids, no error
    assert [json.loads(m) for m in source.rows["meta"]] == [
        {"tags": ["x", "y"], "author": {"name": "Ann", "age": 41}, "price": 1.5, "blob": "/wA="},
        {"tags": None, "author": {"name": None, "age": None}, "price": None, "blob": None},
    ]


def test_id_column_choice(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text("id,ref,body\n007,r1,first\n8,r2,second\n")
    # Default: 'id' is used when present, read as written (leading zeros kept); 'ref' goes to meta.
    source = read_source(path, text_col="body")
    assert source.rows["external_id"].to_list() == ["007", "8"]
    assert json.loads(source.rows["meta"][0]) == {"ref": "r1"}
    # An explicit id column: 'id' is then ordinary metadata (numbers in a CSV are numbers).
    source = read_source(path, text_col="body", id_col="ref")
    assert source.rows["external_id"].to_list() == ["r1", "r2"]
    assert [json.loads(m) for m in source.rows["meta"]] == [{"id": 7}, {"id": 8}]
    # Only text: no ids, null meta.
    only_text = tmp_path / "only_text.jsonl"
    only_text.write_text('{"text": "x"}\n{"text": ""}\n')
    source = read_source(only_text)
    assert source.rows.select("external_id", "text", "meta").rows() == [(None, "x", None)]
    assert (source.skipped_empty, source.empty_examples) == (1, ["row 2"])


def test_empty_rows_are_counted_with_at_most_five_examples(tmp_path):
    path = tmp_path / "blanks.parquet"
    texts = ["keep", None, "", " ", "\n\t", None, "", "also kept"]
    pl.DataFrame({"text": texts}).write_parquet(path)
    source = read_source(path)
    assert (source.n_read, source.skipped_empty) == (8, 6)
    assert source.empty_examples == ["row 2", "row 3", "row 4", "row 5", "row 6"]
    assert source.rows["text"].to_list() == ["keep", "also kept"]


def test_identical_rows_are_counted_as_duplicates(tmp_path):
    path = tmp_path / "dupes.csv"
    pl.DataFrame({"text": ["a", "b", "a", "a"], "lang": ["en", "en", "en", "fr"]}).write_csv(path)
    source = read_source(path)
    assert source.skipped_duplicate == 1
    assert source.rows.select("text", "meta").rows() == [
        ("a", '{"lang":"en"}'),
        ("b", '{"lang":"en"}'),
        ("a", '{"lang":"fr"}'),
    ]


def test_folder_of_txt_files(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("second document")
    (tmp_path / "a.txt").write_text("first document")
    (tmp_path / "sub" / "c.txt").write_text("third document\n")
    (tmp_path / "sub" / "empty.txt").write_text("  \n")
    (tmp_path / "ignored.md").write_text("not a text file")
    source = read_source(tmp_path)
    assert source.n_read == 4
    assert source.rows["external_id"].to_list() == ["a.txt", "b.txt", "sub/c.txt"]
    assert source.rows["text"].to_list() == ["first document", "second document", "third document\n"]
    assert [json.loads(m) for m in source.rows["meta"]] == [{"path": "a.txt"}, {"path": "b.txt"}, {"path": "sub/c.txt"}]
    assert (source.skipped_empty, source.empty_examples) == (1, ["sub/empty.txt"])


def test_content_hash_is_stable_and_covers_every_part(tmp_path):
    path = tmp_path / "docs.parquet"
    FRAME.write_parquet(path)
    first, again = read_source(path).rows, read_source(path).rows
    assert first["content_hash"].to_list() == again["content_hash"].to_list()
    # The column-at-once hashes are those of content_hash(), row by row.
    assert first["content_hash"].to_list() == [
        content_hash(*row) for row in first.select("text", "external_id", "meta").rows()
    ]
    assert content_hash("t", "1", '{"a":1}') == content_hash("t", "1", '{"a":1}')
    variants = [
        content_hash("t", "1", '{"a":1}'),
        content_hash("u", "1", '{"a":1}'),
        content_hash("t", "1", '{"a":2}'),
        content_hash("t", "2", '{"a":1}'),
        content_hash("t", None, '{"a":1}'),
        content_hash("t", "1", None),
        content_hash("t,1:1", None, None),  # parts cannot run into each other
        content_hash("t", "", None),
    ]
    assert len(set(variants)) == len(variants)
    assert re.fullmatch(r"[0-9a-f]{32}", variants[0])


def test_reingesting_the_same_file_adds_nothing(tmp_path):
    path = tmp_path / "docs.parquet"
    FRAME.write_parquet(path)
    with Store.open(tmp_path / "db.duckdb") as store:
        first = ingest(store, path, corpus="news")
        again = ingest(store, path, corpus="news")
        topics = store.query("SELECT meta->>'topic' AS topic FROM documents ORDER BY doc_id")["topic"].to_list()
    assert (first.inserted, first.skipped_empty) == (3, 2)
    assert (again.inserted, again.already_present) == (0, 3)
    assert topics == ["sports", "business", "sports"]


def test_missing_path_unknown_format_and_empty_files(tmp_path):
    with pytest.raises(SaeembedError, match=r"^no such file or directory: .*missing\.csv$"):
        read_source(tmp_path / "missing.csv")
    (tmp_path / "x.xlsx").write_text("")
    with pytest.raises(SaeembedError, match=r"unsupported file type '\.xlsx'.*use \.parquet, \.csv, \.jsonl"):
        read_source(tmp_path / "x.xlsx")
    FRAME.head(0).write_parquet(tmp_path / "empty.parquet")
    (tmp_path / "header_only.csv").write_text("id,text\n")
    (tmp_path / "zero.csv").write_text("")
    (tmp_path / "blank.jsonl").write_text("\n\n")
    for name in ["empty.parquet", "header_only.csv", "zero.csv", "blank.jsonl"]:
        with pytest.raises(SaeembedError, match=rf"{re.escape(name)} has no rows$"):
            read_source(tmp_path / name)
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "notes.md").write_text("# not text")
    with pytest.raises(SaeembedError, match=r"folder .*texts has no \.txt files"):
        read_source(folder)


def test_missing_columns_are_named_with_the_columns_there_are(tmp_path):
    csv = tmp_path / "data.csv"
    pl.DataFrame({"id": [1], "text": ["a"], "label": ["x"]}).write_csv(csv)
    with pytest.raises(SaeembedError, match=r"^column 'body' not found in data\.csv; columns are: id, text, label$"):
        read_source(csv, text_col="body")
    with pytest.raises(SaeembedError, match=r"^id column 'uid' not found in data\.csv; columns are: id, text, label$"):
        read_source(csv, id_col="uid")
    numbers = tmp_path / "numbers.jsonl"
    numbers.write_text('{"text": 17}\n')
    with pytest.raises(SaeembedError, match=r"^column 'text' of numbers\.jsonl holds Int64, not text$"):
        read_source(numbers)


def test_non_utf8_files_are_named_with_the_offset(tmp_path, monkeypatch):
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("text\ncafé\n".encode("latin-1"))
    with pytest.raises(SaeembedError, match=r"latin1\.csv is not UTF-8: invalid byte 0xe9 at offset 8$"):
        read_source(latin1)
    # Offsets count from the start of the file, also past a character split between two chunks.
    monkeypatch.setattr(sources, "UTF8_CHUNK_BYTES", 11)
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_bytes(b'{"text": "\xc3\xa9\xc3x"}\n')
    with pytest.raises(SaeembedError, match=r"bad\.jsonl is not UTF-8: invalid byte 0xc3 at offset 12$"):
        read_source(jsonl)
    truncated = tmp_path / "truncated.csv"
    truncated.write_bytes(b"text\nab\xe2\x82")
    with pytest.raises(SaeembedError, match=r"truncated\.csv is not UTF-8: invalid byte 0xe2 at offset 7$"):
        read_source(truncated)
    compressed = tmp_path / "latin1.csv.gz"
    compressed.write_bytes(gzip.compress(latin1.read_bytes()))
    with pytest.raises(SaeembedError, match=r"latin1\.csv\.gz is not UTF-8: .* at offset 8 of the decompressed data$"):
        read_source(compressed)
    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    (folder / "ok.txt").write_text("fine")
    (folder / "sub" / "bad.txt").write_bytes(b"ok \xff")
    with pytest.raises(SaeembedError, match=r"sub/bad\.txt is not UTF-8: invalid byte 0xff at offset 3$"):
        read_source(folder)


def test_a_glob_reads_every_matching_file_as_one_source(tmp_path):
    pl.DataFrame({"id": [1, 2], "text": ["first", "second"]}).write_parquet(tmp_path / "a.parquet")
    pl.DataFrame({"id": [2, 3], "text": ["second", "third"]}).write_parquet(tmp_path / "b.parquet")
    (tmp_path / "notes.txt").write_text("not matched")
    source = read_source(tmp_path / "*.parquet")
    assert source.rows["text"].to_list() == ["first", "second", "third"]
    assert (source.n_read, source.skipped_duplicate) == (4, 1)
    with pytest.raises(SaeembedError, match=r"no file matches .*\*\.jsonl"):
        read_source(tmp_path / "*.jsonl")


def test_a_duckdb_table_is_a_source(tmp_path):
    import duckdb

    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(
            "CREATE TABLE tickets AS "
            "SELECT 'T' || i AS id, 'ticket text ' || i AS body, i % 2 AS urgent FROM range(5) t(i)"
        )
    source = read_source(path, text_col="body", table="tickets")
    assert source.rows["external_id"].to_list() == ["T0", "T1", "T2", "T3", "T4"]
    assert json.loads(source.rows["meta"][1]) == {"urgent": 1}
    for table, message in [
        (None, "say which table to read with --table"),
        ("nope", "no table 'nope'"),
        ("tickets; DROP TABLE tickets", "must be a table name"),
    ]:
        with pytest.raises(SaeembedError, match=message):
            read_source(path, text_col="body", table=table)
    pl.DataFrame({"text": ["a"]}).write_csv(tmp_path / "x.csv")
    with pytest.raises(SaeembedError, match="x.csv is not one"):
        read_source(tmp_path / "x.csv", table="tickets")


BAD_JSONL = b'{"id": "a", "text": "first"}\n\n{"text": "ab\n   \n[1, 2]\n{"id": "b", "text": "last"}\n'


@pytest.mark.parametrize("name", ["data.jsonl", "data.ndjson", "data.jsonl.gz", "data.jsonl.zst"])
def test_a_bad_jsonl_line_is_named_with_its_number_or_skipped(tmp_path, name):
    compress = {".gz": gzip.compress, ".zst": zstandard.ZstdCompressor().compress}.get(name[name.rfind(".") :])
    path = tmp_path / name
    path.write_bytes(compress(BAD_JSONL) if compress else BAD_JSONL)
    # Blank lines count in the numbering but are neither rows nor errors.
    message = rf"^{re.escape(str(path))} line 3 is not valid JSON \(Unterminated string starting at column 10\): "
    with pytest.raises(SaeembedError, match=message + r'\{"text": "ab$'):
        read_source(path)
    source = read_source(path, on_bad_line="skip")
    assert source.rows.select("external_id", "text").rows() == [("a", "first"), ("b", "last")]
    assert (source.n_read, source.skipped_bad_line) == (4, 2)
    assert source.bad_line_examples == [
        "line 3: not valid JSON (Unterminated string starting at column 10)",
        "line 5: not a JSON object (it is an array)",
    ]


def test_every_kind_of_bad_line_has_a_reason(tmp_path):
    path = tmp_path / "odd.jsonl"
    lines = [
        '{"text": "kept"}',
        '{"text": "nan", "x": NaN}',
        '{"text": "huge float", "x": 1e400}',
        '{"text": "huge int", "x": 1' + "0" * 45 + "}",  # Python's json reads it, polars does not
        '"just a string"',
        '{"text": "trailing"} x',
        '{"text": "tab\tinside"}',
        '{"text": "also kept", "x": 2}',
    ]
    path.write_text("\n".join(lines) + "\n")
    source = read_source(path, on_bad_line="skip")
    assert source.rows["text"].to_list() == ["kept", "also kept"]
    assert (source.n_read, source.skipped_bad_line) == (8, 6)
    assert source.bad_line_examples == [
        "line 2: not valid JSON (NaN is not a JSON value)",
        "line 3: not valid JSON (1e400 is beyond a 64-bit float)",
        "line 5: not a JSON object (it is a string)",
        "line 6: not valid JSON (Extra data at column 22)",
        "line 7: not valid JSON (Invalid control character at column 14)",
    ]
    # The line polars refuses (found after the others) is counted though past the five examples; alone, it is named.
    path.write_text(lines[0] + "\n" + lines[3] + "\n")
    with pytest.raises(
        SaeembedError, match=r"odd\.jsonl line 2 is not readable \(InvalidNumber .*\): \{\"text\": \"huge"
    ):
        read_source(path)
    path.write_text("nope\n\n[]\n")
    with pytest.raises(
        SaeembedError, match=r"^no line of .*odd\.jsonl is a JSON object \(2 bad lines, e\.g\. line 1: "
    ):
        read_source(path, on_bad_line="skip")


def test_bad_lines_of_a_glob_name_their_file(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "one"}\n{"text": \n')
    (tmp_path / "b.jsonl").write_text('{"text": "two"}\n\n\n[]\n')
    with pytest.raises(SaeembedError, match=r"a\.jsonl line 2 is not valid JSON \(Expecting value at column 10\)"):
        read_source(tmp_path / "*.jsonl")
    source = read_source(tmp_path / "*.jsonl", on_bad_line="skip")
    assert source.rows["text"].to_list() == ["one", "two"]
    assert source.bad_line_examples == [
        "a.jsonl line 2: not valid JSON (Expecting value at column 10)",
        "b.jsonl line 4: not a JSON object (it is an array)",
    ]


REPEATS = pl.DataFrame(
    {
        "id": ["1", "2", "1", "1", "3", None, None],
        "text": ["old", "b", "new", "old", "c", "x", "x"],
        "lang": ["en", "en", "en", "en", "en", "en", "en"],
    }
)


@pytest.mark.parametrize(
    ("mode", "kept", "skipped"),
    [
        ("keep", [("1", "old"), ("2", "b"), ("1", "new"), ("3", "c"), (None, "x")], 0),
        ("first", [("1", "old"), ("2", "b"), ("3", "c"), (None, "x")], 1),
        # The last row of id 1 is the fourth, a copy of the first: that content wins, at the last place.
        ("last", [("2", "b"), ("1", "old"), ("3", "c"), (None, "x")], 1),
    ],
)
def test_repeated_ids_are_counted_and_resolved(tmp_path, mode, kept, skipped):
    path = tmp_path / "repeats.parquet"
    REPEATS.write_parquet(path)
    source = read_source(path, on_duplicate_id=mode)
    assert source.rows.select("external_id", "text").rows() == kept
    # Row 4 equals row 1 and row 7 equals row 6: identical rows, not repeated ids.
    assert (source.skipped_duplicate, source.duplicate_ids, source.skipped_duplicate_id) == (2, 1, skipped)
    assert source.duplicate_id_examples == ["1"]
    assert source.n_read == len(kept) + source.skipped_duplicate + source.skipped_duplicate_id


def test_a_repeated_id_can_be_refused(tmp_path):
    path = tmp_path / "repeats.csv"
    REPEATS.write_csv(path)
    with pytest.raises(SaeembedError, match=r"^id '1' repeats with different texts: rows 1 and 3 of .*repeats\.csv \("):
        read_source(path, on_duplicate_id="error")
    pl.DataFrame({"id": [7, 7], "text": ["same", "same"], "lang": ["en", "fr"]}).write_csv(path)
    with pytest.raises(SaeembedError, match=r"^id '7' repeats with different metadata: rows 1 and 2 of "):
        read_source(path, on_duplicate_id="error")
    # Across the files of a glob, each row is named with its file.
    pl.DataFrame({"id": [1, 2], "text": ["a", "b"]}).write_parquet(tmp_path / "p1.parquet")
    pl.DataFrame({"id": [3, 2], "text": ["c", "B"]}).write_parquet(tmp_path / "p2.parquet")
    with pytest.raises(
        SaeembedError, match=r"^id '2' repeats with different texts: row 2 of .*p1\.parquet and row 2 of .*p2"
    ):
        read_source(tmp_path / "p*.parquet", on_duplicate_id="error")
    assert read_source(tmp_path / "p*.parquet").duplicate_ids == 1


def test_choices_are_checked_first(tmp_path):
    with pytest.raises(SaeembedError, match=r"^unknown --on-bad-line 'ignore': use error or skip$"):
        read_source(tmp_path / "missing.jsonl", on_bad_line="ignore")
    with pytest.raises(SaeembedError, match=r"^unknown --on-duplicate-id 'Last': use keep, first, last or error$"):
        read_source(tmp_path / "missing.jsonl", on_duplicate_id="Last")


def test_lone_surrogates_become_replacement_characters_and_are_counted(tmp_path):
    path = tmp_path / "surrogates.jsonl"
    path.write_bytes(
        b'{"id": "s\\ud800", "text": "a\\ud800b", "note": "ok"}\n'
        b'{"text": "low \\uDC00 and pair \\ud83d\\ude00", "note": "\\udfff"}\n'
        b'{"text": "an escaped backslash: \\\\ud800", "note": "plain"}\n'
        b'{"text": "a real NUL: \\u0000 stays", "note": "x"}\n'
    )
    with Store.open(tmp_path / "db.duckdb") as store:
        report = ingest(store, path, corpus="c")
        stored = store.query("SELECT external_id, text, meta->>'note' AS note FROM documents ORDER BY doc_id").rows()
    assert stored == [
        ("s\ufffd", "a\ufffdb", "ok"),
        (None, "low \ufffd and pair \U0001f600", "\ufffd"),
        (None, "an escaped backslash: \\ud800", "plain"),
        (None, "a real NUL: \x00 stays", "x"),
    ]
    assert (report.replaced_surrogates, report.inserted) == (2, 4)
    # Compressed, and alongside a bad line that sends the file down the line-by-line path.
    (tmp_path / "s.jsonl.gz").write_bytes(gzip.compress(path.read_bytes() + b"{oops\n"))
    source = read_source(tmp_path / "s.jsonl.gz", on_bad_line="skip")
    assert (source.replaced_surrogates, source.skipped_bad_line, source.rows["text"][0]) == (2, 1, "a\ufffdb")


def test_nul_bytes_are_kept_in_every_format(tmp_path):
    frame = pl.DataFrame({"id": ["n"], "text": ["a\x00b"], "note": ["x\x00y"]})
    frame.write_csv(tmp_path / "nul.csv")
    frame.write_parquet(tmp_path / "nul.parquet")
    frame.write_ndjson(tmp_path / "nul.jsonl")
    for name in ["nul.csv", "nul.parquet", "nul.jsonl"]:
        source = read_source(tmp_path / name)
        assert source.rows.select("text", "meta").rows() == [("a\x00b", '{"note":"x\\u0000y"}')], name
        assert source.replaced_surrogates == 0


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_a_source_whose_every_text_is_empty_is_refused(tmp_path, suffix):
    path = tmp_path / f"data{suffix}"
    WRITERS[suffix](pl.DataFrame({"id": [1, 2, 3], "body": [None, " ", "\n"]}), path)
    with pytest.raises(
        SaeembedError, match=rf"^every row of .*data\{suffix} has an empty text \(3 rows; column 'body'\)$"
    ):
        read_source(path, text_col="body")


def test_an_empty_folder_or_glob_is_refused(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text(" \n")
    (tmp_path / "docs" / "b.txt").write_text("")
    with pytest.raises(SaeembedError, match=r"^every \.txt file in .*docs is empty \(2 files\)$"):
        read_source(tmp_path / "docs")
    (tmp_path / "x1.jsonl").write_text('{"text": ""}\n')
    (tmp_path / "x2.jsonl").write_text('{"text": null}\n{"text": "\\t"}\n')
    with pytest.raises(SaeembedError, match=r"^every row of .*x\*\.jsonl has an empty text \(3 rows; column 'text'\)$"):
        read_source(tmp_path / "x*.jsonl")
    # One empty file among others is fine: its rows are counted.
    (tmp_path / "x3.jsonl").write_text('{"text": "content"}\n')
    assert read_source(tmp_path / "x*.jsonl").skipped_empty == 3


def test_the_ingest_report_carries_every_count(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(
        b'{"id": 1, "text": "one"}\n{"id": 1, "text": "one again"}\n{"id": 2, "text": ""}\n'
        b'{"id": 3, "text": "bad\n{"id": 4, "text": "x\\udc00"}\n{"id": 4, "text": "x\\udc00"}\n'
    )
    with Store.open(tmp_path / "db.duckdb") as store:
        report = ingest(store, path, corpus="c", on_bad_line="skip", on_duplicate_id="last")
    assert report._asdict() == {
        "corpus": "c",
        "read": 6,
        "inserted": 2,
        "already_present": 0,
        "skipped_empty": 1,
        "skipped_duplicate": 1,
        "empty_examples": ["2"],
        "skipped_bad_line": 1,
        "bad_line_examples": ["line 4: not valid JSON (Unterminated string starting at column 19)"],
        "duplicate_ids": 1,
        "skipped_duplicate_id": 1,
        "duplicate_id_examples": ["1"],
        "replaced_surrogates": 2,
    }


def test_the_ingest_flow_takes_the_new_choices(prefect_harness, tmp_path):
    from saeembed_flows.ingest import ingest_flow

    path = tmp_path / "flow.jsonl"
    path.write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\nnot json\n')
    db = str(tmp_path / "flow.duckdb")
    result = ingest_flow(path=str(path), corpus="c", db=db, on_bad_line="skip", on_duplicate_id="first")
    assert (result["inserted"], result["skipped_bad_line"], result["skipped_duplicate_id"]) == (1, 1, 1)
    with pytest.raises(SaeembedError, match=r"flow\.jsonl line 3 is not valid JSON"):
        ingest_flow(path=str(path), corpus="c", db=db)


def _bad_sources(tmp_path):
    """(path, keyword arguments) of sources that read_source refuses for a reason check_source must see."""
    import duckdb

    FRAME.write_csv(tmp_path / "ok.csv")
    FRAME.write_parquet(tmp_path / "ok.parquet")
    FRAME.write_ndjson(tmp_path / "ok.jsonl")
    (tmp_path / "ok.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress((tmp_path / "ok.jsonl").read_bytes()))
    FRAME.head(0).write_parquet(tmp_path / "empty.parquet")
    (tmp_path / "header_only.csv").write_text("id,text\n")
    (tmp_path / "zero.jsonl").write_text("")
    (tmp_path / "blank.jsonl.gz").write_bytes(gzip.compress(b"\n \n"))
    (tmp_path / "x.xlsx").write_text("a")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.md").write_text("# no .txt here")
    pl.DataFrame({"text": [1, 2]}).write_parquet(tmp_path / "numbers.parquet")
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        con.execute("CREATE TABLE t AS SELECT 'x' AS body; CREATE TABLE nothing (body VARCHAR)")
    return [
        (tmp_path / "missing.csv", {}),
        (tmp_path / "*.tsv", {}),
        (tmp_path / "x.xlsx", {}),
        (tmp_path / "ok.csv", {"table": "t"}),
        (tmp_path / "w.duckdb", {}),
        (tmp_path / "w.duckdb", {"table": "t; DROP TABLE t"}),
        (tmp_path / "w.duckdb", {"table": "nope"}),
        (tmp_path / "w.duckdb", {"table": "t"}),  # no column 'text'
        (tmp_path / "w.duckdb", {"table": "nothing", "text_col": "body"}),
        (tmp_path / "ok.csv", {"text_col": "body"}),
        (tmp_path / "ok.csv", {"id_col": "uid"}),
        (tmp_path / "ok.parquet", {"text_col": "body"}),
        (tmp_path / "ok.jsonl", {"id_col": "uid"}),
        (tmp_path / "ok.jsonl.zst", {"text_col": "topic", "id_col": "uid"}),
        (tmp_path / "o*.parquet", {"text_col": "body"}),
        (tmp_path / "numbers.parquet", {}),
        (tmp_path / "empty.parquet", {}),
        (tmp_path / "header_only.csv", {}),
        (tmp_path / "zero.jsonl", {}),
        (tmp_path / "blank.jsonl.gz", {}),
        (tmp_path / "notes", {}),
    ]


def test_check_source_raises_what_read_source_raises(tmp_path):
    for path, kwargs in _bad_sources(tmp_path):
        with pytest.raises(SaeembedError) as read_error:
            read_source(path, **kwargs)
        with pytest.raises(SaeembedError) as check_error:
            check_source(path, **kwargs)
        assert str(check_error.value) == str(read_error.value), (path.name, kwargs)
    for name in ["ok.csv", "ok.parquet", "ok.jsonl", "ok.jsonl.zst", "ok.*"]:
        check_source(tmp_path / name, text_col="text", id_col="topic")
    check_source(tmp_path / "w.duckdb", text_col="body", table="t")


def test_check_source_reads_only_the_start_of_a_big_file(tmp_path):
    path = tmp_path / "big.jsonl"
    line = json.dumps({"id": 0, "text": "a line of ordinary text " * 8, "topic": "news"}) + "\n"
    with path.open("w") as handle:
        handle.write(line * 200_000)  # about 45 MB
        handle.write('{"text": "late", "source": "rss", "bad": \n')
    started = time.perf_counter()
    check_source(path, id_col="source")  # a key first seen on the last line is found by a byte scan
    check_source(path.with_name("*.jsonl"))
    assert time.perf_counter() - started < 1.0
    with pytest.raises(SaeembedError, match=r"^id column 'uid' not found in big\.jsonl; columns are: id, text, topic$"):
        check_source(path, id_col="uid")
    # The bad last line and a non-UTF-8 tail are past what check_source reads; read_source refuses them.
    small = tmp_path / "small.csv"
    small.write_bytes(b"text\n" + b"fine\n" * 300_000 + b"caf\xe9\n")
    check_source(small)
    with pytest.raises(SaeembedError, match=r"small\.csv is not UTF-8: invalid byte 0xe9"):
        read_source(small)
    parquet = tmp_path / "big.parquet"
    pl.DataFrame({"text": ["row text"] * 2_000_000}).write_parquet(parquet)
    started = time.perf_counter()
    check_source(parquet)
    assert time.perf_counter() - started < 0.2
