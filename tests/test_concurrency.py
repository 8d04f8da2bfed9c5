"""Two embed commands started at once on one database, as two processes (each its own Prefect flow run):
the second either waits for the first or fails with "database busy"; the store stays consistent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from saeembed.storage.store import Store
from tests.support import TEXTS, small_sae

BIN = Path(sys.executable).parent


def start_embed(db: Path, sae: Path, env: dict[str, str]) -> subprocess.Popen:
    command = [BIN / "saeembed", "embed", "--corpus", "news", "--sae", sae, "--db", db, "--device", "cpu"]
    return subprocess.Popen(
        [*command, "--max-tokens", "32", "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.slow
def test_two_embeds_at_once_both_finish_or_one_says_busy_and_the_store_stays_consistent(tmp_path):
    db, sae = tmp_path / "shared.duckdb", small_sae(tmp_path / "sae")
    source = tmp_path / "news.csv"
    pl.DataFrame({"text": TEXTS}).write_csv(source)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    env.pop("PREFECT_API_URL", None)
    # The first command also sets up Prefect's database, which two processes must not create at once.
    subprocess.run([BIN / "saeembed", "ingest", source, "--corpus", "news", "--db", db], env=env, check=True)

    first, second = start_embed(db, sae, env), start_embed(db, sae, env)
    results = [(p.wait(timeout=600), p.stdout.read(), p.stderr.read()) for p in (first, second)]
    finished = [out for code, out, _ in results if code == 0]
    refused = [err for code, _, err in results if code != 0]
    assert finished, results
    assert all("database busy" in err for err in refused), refused
    with Store.open(db) as store:
        assert store.check() == []
        assert store.query("SELECT count(*) AS n FROM embedded_documents")["n"][0] == len(TEXTS)

    # Asked to wait (SAEEMBED_DB_WAIT), both finish: the second embeds what the first left, here nothing.
    pl.DataFrame({"text": [f"{t} Again." for t in TEXTS]}).write_csv(source)
    subprocess.run([BIN / "saeembed", "ingest", source, "--corpus", "news", "--db", db], env=env, check=True)
    waiting = {**env, "SAEEMBED_DB_WAIT": "600"}
    first, second = start_embed(db, sae, waiting), start_embed(db, sae, waiting)
    results = [(p.wait(timeout=900), p.stdout.read(), p.stderr.read()) for p in (first, second)]
    assert [code for code, _, _ in results] == [0, 0], results
    embedded = sorted(json.loads(out)["documents"] for _, out, _ in results)
    assert embedded == [0, len(TEXTS)]
    with Store.open(db) as store:
        assert store.check() == []
        assert store.query("SELECT count(*) AS n FROM embedded_documents")["n"][0] == 2 * len(TEXTS)
