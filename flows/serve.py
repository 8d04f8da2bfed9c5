"""Serve the project's deployments (prefect.yaml) from this machine with Prefect's own `serve`: no work
pool or worker to set up; each run is a subprocess here, visible and triggerable in the Prefect UI.

The deployments, parameters and schedules are read from prefect.yaml, so `prefect deploy --all` (work
pool route) and `saeembed serve` (this route) run the same project.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import saeembed_flows  # noqa: F401  (Prefect settings before Prefect is imported)
import yaml
from prefect import Flow, serve
from prefect.schedules import Cron

from saeembed.errors import SaeembedError

DEFAULT_LIMIT = 1
"""Flow runs at once. DuckDB lets one process write a database file at a time, so by default scheduled
runs queue here instead of failing with 'database busy'."""


def project_deployments(project: Path) -> list[dict[str, Any]]:
    """The deployments declared in `project` (a prefect.yaml)."""
    if not project.is_file():
        raise SaeembedError(f"no Prefect project file at {project}: run from the repository or pass --project")
    try:
        declared = yaml.safe_load(project.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise SaeembedError(f"{project} is not valid YAML: {str(error).splitlines()[0]}") from None
    deployments = declared.get("deployments") or []
    if not deployments:
        raise SaeembedError(f"{project} declares no deployments")
    return deployments


def entrypoint_flow(entrypoint: str) -> Flow:
    """The flow object of a prefect.yaml entrypoint such as flows/embed.py:embed_flow (flows/ is installed
    as the saeembed_flows package)."""
    path, _, name = entrypoint.partition(":")
    module = importlib.import_module(f"saeembed_flows.{Path(path).stem}")
    flow = getattr(module, name, None)
    if not isinstance(flow, Flow):
        raise SaeembedError(f"entrypoint {entrypoint} names no flow")
    return flow


def serve_project(
    project: Path,
    *,
    only: list[str] | None = None,
    db: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> None:
    """Serve the deployments of `project` (those named in `only`), with `db` as every flow's database
    when given. Blocks until interrupted (SIGINT/SIGTERM)."""
    declared = project_deployments(project)
    names = [d["name"] for d in declared]
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise SaeembedError(f"no deployment named {', '.join(unknown)} in {project}; it has {', '.join(names)}")
    if limit < 1:
        raise SaeembedError(f"--limit must be at least 1, got {limit}")
    runners = []
    for deployment in declared:
        if only and deployment["name"] not in only:
            continue
        flow = entrypoint_flow(deployment["entrypoint"])
        parameters = dict(deployment.get("parameters") or {})
        if db is not None and "db" in flow.parameters.properties:
            parameters["db"] = db
        schedules = [
            Cron(schedule["cron"], active=bool(schedule.get("active", True)), timezone=schedule.get("timezone"))
            for schedule in deployment.get("schedules") or []
        ]
        runners.append(
            flow.to_deployment(
                name=deployment["name"],
                parameters=parameters,
                schedules=schedules or None,
                description=deployment.get("description") or flow.description,
            )
        )
    serve(*runners, limit=limit)
