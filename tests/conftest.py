"""Shared fixtures: the real SmolLM2 reader (loaded once), real DuckDB files in tmp folders, and a
Prefect test harness for the flow tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

# Tests read layer 3: a truncated 4-layer reader keeps the suite fast while exercising the real model.
TEST_LAYER = 3


@pytest.fixture(scope="session")
def reader():
    from saeembed.reader import Reader

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
