"""Shared fixtures: the real SmolLM2 reader (loaded once), real DuckDB files in tmp folders, and a
Prefect test harness for the flow tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.support import TEST_LAYER, build_store, planted

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="session")
def reader():
    from saeembed.model.reader import Reader

    return Reader.load("smollm2-135m-instruct", layer=TEST_LAYER, device="cpu", dtype="float32")


@pytest.fixture()
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "test.duckdb"


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory):
    """A real Prefect API (temporary SQLite database) for the whole session, results in a tmp folder."""
    import saeembed_flows  # noqa: F401
    from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    results = tmp_path_factory.mktemp("prefect-results")
    with (
        prefect_test_harness(server_startup_timeout=120),
        temporary_settings({PREFECT_RESULTS_LOCAL_STORAGE_PATH: str(results)}),
    ):
        yield


@pytest.fixture()
def two_corpora(tmp_path: Path) -> Path:
    """Corpora 'a' and 'b' of 200 documents each: concept 7 in 30% of a, 5% of b (see `planted`)."""
    rng = np.random.default_rng(0)
    return build_store(tmp_path / "diff.duckdb", {"a": planted(200, 0.30, rng, "a"), "b": planted(200, 0.05, rng, "b")})
