"""The Prefect project for real: a Prefect server on 127.0.0.1, the project's prefect.yaml served by
`saeembed serve`, deployments triggered through the API, results checked in DuckDB."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import polars as pl
import pytest

from saeembed.jobs import ingest
from saeembed.storage.store import Store

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} did not answer in {timeout} s")


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture()
def prefect_server(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/api/health", timeout=180)
        yield env
    finally:
        stop(server)
        log.close()


@pytest.mark.slow
def test_served_project_runs_the_embed_and_diff_deployments(prefect_server, tmp_path):
    db = tmp_path / "served.duckdb"
    articles = tmp_path / "demo.csv"
    pl.DataFrame(
        {
            "text": [
                "The striker scored twice as the home team won the cup final.",
                "The goalkeeper saved a penalty in the last minute of the match.",
                "Shares of the bank fell after quarterly profits missed forecasts.",
                "The company said revenue rose on strong demand for its chips.",
            ],
            "topic": ["Sports", "Sports", "Business", "Business"],
        }
    ).write_csv(articles)
    with Store.open(db) as store:
        ingest(store, articles, corpus="demo")
    served_log = (tmp_path / "serve.log").open("w")
    served = subprocess.Popen(
        [BIN / "saeembed", "serve", "--project", REPO / "prefect.yaml", "--only", "embed,diff", "--db", db],
        cwd=tmp_path,
        env=prefect_server,
        stdout=served_log,
        stderr=subprocess.STDOUT,
    )
    try:
        for deployment in ("embed/embed", "diff/diff"):
            deadline = time.monotonic() + 120
            while True:  # until `serve` has registered the deployment
                run = subprocess.run(
                    [BIN / "prefect", "deployment", "run", deployment, "--watch", "--watch-timeout", "600"],
                    env=prefect_server,
                    capture_output=True,
                    text=True,
                )
                if run.returncode == 0 or "not found" not in (run.stdout + run.stderr).lower():
                    break
                assert time.monotonic() < deadline, run.stdout + run.stderr
                time.sleep(2)
            assert run.returncode == 0, run.stdout + run.stderr
            assert "Completed" in run.stdout
    finally:
        stop(served)
        served_log.close()
    with Store.open(db, read_only=True) as store:
        embedded = store.query("SELECT count(*) AS n FROM embedded_documents")["n"][0]
        diffs = store.query("SELECT kind, inputs->>'n_a' AS n_a FROM analyses").rows()
        rows = store.query("SELECT count(*) AS n FROM diff_results")["n"][0]
    assert embedded == 4 and diffs == [("diff", "2")] and rows > 0
    assert (tmp_path / "reports" / "diff-sports-business.html").read_text().startswith("<!doctype html>")


def test_every_declared_deployment_names_a_flow_that_takes_its_parameters():
    from prefect.schedules import Cron
    from saeembed_flows.serve import entrypoint_flow, project_deployments

    declared = project_deployments(REPO / "prefect.yaml")
    names = {d["name"] for d in declared}
    expected = {"ingest", "embed", "train-sae", "label", "diff", "correlate", "cluster", "search-index"}
    expected |= {"compare-releases", "report"}
    assert expected <= names
    for deployment in declared:
        flow = entrypoint_flow(deployment["entrypoint"])
        assert set(deployment.get("parameters") or {}) <= set(flow.parameters.properties), deployment["name"]
        for schedule in deployment.get("schedules") or []:
            Cron(schedule["cron"])  # raises on a malformed expression


def test_serve_refuses_unknown_deployments_and_missing_projects(tmp_path):
    from saeembed_flows.serve import serve_project

    from saeembed.errors import SaeembedError

    with pytest.raises(SaeembedError, match="no deployment named nope"):
        serve_project(REPO / "prefect.yaml", only=["nope"])
    with pytest.raises(SaeembedError, match="no Prefect project file"):
        serve_project(tmp_path / "prefect.yaml")
