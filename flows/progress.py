"""A terminal progress bar on stderr for flows started from the CLI (stdout stays clean for --json)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn


@contextmanager
def progress_bar(description: str, total: int, *, enabled: bool, unit: str = "docs") -> Iterator[callable]:
    """Yield `advance(n, tokens)`; draws a bar with a tokens/s readout when enabled."""
    if not enabled:
        yield lambda n, tokens=0: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(description, total=total, rate="")
        tokens_seen = 0

        def advance(n: int, tokens: int = 0) -> None:
            nonlocal tokens_seen
            tokens_seen += tokens
            elapsed = progress.tasks[0].elapsed or 0.0
            rate = f"{tokens_seen / elapsed:,.0f} tok/s" if tokens_seen and elapsed else ""
            progress.update(task, advance=n, rate=rate)

        yield advance


@contextmanager
def stage_bars(description: str, *, enabled: bool) -> Iterator[Callable[[str, int, int], None]]:
    """Yield `update(stage, done, total)`: one bar per stage of a job (e.g. label, score, judge)."""
    if not enabled:
        yield lambda stage, done, total: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        tasks: dict[str, TaskID] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(f"{description}: {stage}", total=total)
            progress.update(tasks[stage], completed=done, total=total)

        yield update
