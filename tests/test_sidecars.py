"""Files kept beside the database: a failed write leaves the old file whole, a key names what was built."""

from __future__ import annotations

import numpy as np
import pytest

from saeembed.storage.sidecars import Loaded, beside, read_key, write_atomically, write_key


def test_a_write_that_fails_leaves_the_old_file_and_no_staging(tmp_path):
    target = beside(tmp_path / "x.duckdb", "vectors.npy")
    assert target == tmp_path / "x.duckdb.vectors.npy"
    write_atomically(target, lambda staging: np.save(staging, np.arange(3)))

    def broken(staging):
        np.save(staging, np.arange(10))
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, broken)
    assert np.load(target).tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["x.duckdb.vectors.npy"]  # no staging left behind
    write_atomically(target, lambda staging: np.save(staging, np.arange(5)))
    assert np.load(target).tolist() == [0, 1, 2, 3, 4]
    assert [p.name for p in tmp_path.iterdir()] == ["x.duckdb.vectors.npy"]


def test_a_folder_is_replaced_whole(tmp_path):
    folder = tmp_path / "columns"

    def write(names):
        def make(staging):
            staging.mkdir()
            for name in names:
                (staging / name).write_text(name)

        return make

    write_atomically(folder, write(["a", "b"]))
    write_atomically(folder, write(["c"]))
    assert sorted(p.name for p in folder.iterdir()) == ["c"]


def test_keys_and_what_this_process_loaded(tmp_path):
    path = tmp_path / "k.json"
    assert read_key(path) is None
    path.write_text("not json")
    assert read_key(path) is None
    write_key(path, {"run": 3})
    assert read_key(path) == {"run": 3}
    loaded: Loaded[str] = Loaded()
    assert loaded.get(path, "a") is None
    assert loaded.put(path, "a", "value") == "value" and loaded.get(path, "a") == "value"
    assert loaded.get(path, "b") is None  # built from another state: not served
    loaded.clear()
    assert loaded.get(path, "a") is None
