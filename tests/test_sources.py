"""Reading corpora from files: every format, metadata, empty and duplicate rows, clear errors."""

from __future__ import annotations

import json

import polars as pl
import pytest

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
    }
)


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_each_format_gives_ids_texts_and_typed_meta(tmp_path, suffix):
    path = tmp_path / f"docs{suffix}"
    {".parquet": FRAME.write_parquet, ".csv": FRAME.write_csv, ".jsonl": FRAME.write_ndjson}[suffix](path)
    source = read_source(path)
    assert source.n_read == 5
    assert source.skipped_empty == 2
    assert source.empty_examples == ["2", "4"]
    assert source.skipped_duplicate == 0  # row 5 has another id, so it is another row
    assert source.rows["external_id"].to_list() == ["1", "3", "5"]
    assert source.rows["text"].to_list() == ["Goal in the last minute.", "Shares rose 3%.", "Goal in the last minute."]
    assert [json.loads(m) for m in source.rows["meta"]] == [
        {"topic": "sports", "score": 0.5},
        {"topic": "business", "score": None},
        {"topic": "sports", "score": 0.5},
    ]


def test_identical_rows_are_counted_as_duplicates(tmp_path):
    path = tmp_path / "dupes.csv"
    pl.DataFrame({"text": ["a", "b", "a"], "lang": ["en", "en", "en"]}).write_csv(path)
    source = read_source(path)
    assert (source.rows.height, source.skipped_duplicate) == (2, 1)
    assert source.rows["external_id"].to_list() == [None, None]


def test_folder_of_txt_files(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("first document")
    (tmp_path / "sub" / "b.txt").write_text("second document")
    (tmp_path / "ignored.md").write_text("not a text file")
    source = read_source(tmp_path)
    assert source.rows["external_id"].to_list() == ["a.txt", "sub/b.txt"]
    assert [json.loads(m) for m in source.rows["meta"]] == [{"path": "a.txt"}, {"path": "sub/b.txt"}]


def test_content_hash_is_stable_and_covers_every_part():
    assert content_hash("t", "1", '{"a":1}') == content_hash("t", "1", '{"a":1}')
    assert len({content_hash("t", "1", None), content_hash("t", None, None), content_hash("t", "1", "{}")}) == 3


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


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(SaeembedError, match="no such file or directory"):
        read_source(tmp_path / "missing.csv")
    csv = tmp_path / "docs.csv"
    FRAME.write_csv(csv)
    with pytest.raises(SaeembedError, match="column 'body' not found in docs.csv; columns are: id, text, topic, score"):
        read_source(csv, text_col="body")
    with pytest.raises(SaeembedError, match="id column 'uid' not found"):
        read_source(csv, id_col="uid")
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("text\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(SaeembedError, match=r"latin1.csv is not UTF-8: invalid byte 0xe9 at offset 8"):
        read_source(latin1)
    folder = tmp_path / "texts"
    folder.mkdir()
    with pytest.raises(SaeembedError, match="has no .txt files"):
        read_source(folder)
    (folder / "bad.txt").write_bytes(b"ok \xff")
    with pytest.raises(SaeembedError, match="bad.txt is not UTF-8"):
        read_source(folder)
    with pytest.raises(SaeembedError, match="unsupported file type '.xlsx'"):
        (tmp_path / "x.xlsx").write_text("")
        read_source(tmp_path / "x.xlsx")
    empty = tmp_path / "empty.parquet"
    FRAME.head(0).write_parquet(empty)
    with pytest.raises(SaeembedError, match="has no rows"):
        read_source(empty)
