"""Reading corpora from files: every format, ids, typed metadata, empty and duplicate rows, hashes, clear errors."""

from __future__ import annotations

import gzip
import json
import re
from decimal import Decimal

import polars as pl
import pytest
import zstandard

from saeembed import sources
from saeembed.errors import SaeembedError
from saeembed.pipeline import ingest
from saeembed.sources import content_hash, read_source
from saeembed.store import Store

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
