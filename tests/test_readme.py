"""The README stays short and true: at most 250 lines, every flag of its command table exists in that
command's `--help` (and every option a command has is in its row), the options tables of docs/cli.md
match `--help` the same way, and every local link in the README and docs/ points at a file that
exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from saeembed.cli import app

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_LINES = 250

FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
CODE = re.compile(r"`([^`]+)`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def command_paths() -> list[tuple[str, ...]]:
    """Every leaf command of the CLI, as the words after `saeembed` (('docs', 'show'), ('diff',), …)."""
    paths: list[tuple[str, ...]] = []

    def walk(command, path: tuple[str, ...]) -> None:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, (*path, name))
        else:
            paths.append(path)

    walk(typer.main.get_command(app), ())
    return paths


COMMANDS = command_paths()


def split_row(line: str) -> list[str]:
    """The cells of a Markdown table row; `\\|` inside a cell is a literal bar."""
    cells = re.split(r"(?<!\\)\|", line.strip())
    return [cell.strip().replace("\\|", "|") for cell in cells[1:-1]]


def command_table() -> list[tuple[str, str]]:
    """(first cell, second cell) of every row of the README's command table (the one headed `command`)."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if split_row(line)[:1] == ["command"])
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = split_row(line)
        rows.append((cells[0], cells[1]))
    return rows


def invocations(cell: str) -> list[tuple[tuple[str, ...], list[str]]]:
    """For each `saeembed …` code span in a table cell: the command it names and the flags it shows."""
    found = []
    for span in CODE.findall(cell):
        words = span.split()
        if words[:1] != ["saeembed"]:
            continue
        path = max((p for p in COMMANDS if tuple(words[1 : 1 + len(p)]) == p), key=len, default=None)
        assert path is not None, f"README table names an unknown command: {span!r}"
        found.append((path, FLAG.findall(span)))
    return found


def help_text(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=200, env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, f"saeembed {' '.join(path)} --help failed: {result.output}"
    return result.output


HELP: dict[tuple[str, ...], str] = {}


def flags_in_help(path: tuple[str, ...]) -> set[str]:
    if path not in HELP:
        HELP[path] = help_text(path)
    return set(FLAG.findall(HELP[path]))


ROWS = command_table()


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_LINES, f"README.md has {len(lines)} lines; the manual belongs in docs/"


def test_the_table_has_a_row_for_every_command() -> None:
    named = {path for first, _ in ROWS for path, _ in invocations(first)}
    missing = [" ".join(path) for path in COMMANDS if path not in named]
    assert not missing, f"commands missing from the README's command table: {missing}"


@pytest.mark.parametrize("row", ROWS, ids=[first.split("`")[1][:40] for first, _ in ROWS])
def test_every_flag_in_a_row_exists(row: tuple[str, str]) -> None:
    first, second = row
    calls = invocations(first)
    assert calls, f"row without a `saeembed …` command: {first!r}"
    for path, flags in calls:
        for flag in flags:
            assert not flag.endswith("-"), f"abbreviated flag {flag!r} in the row of saeembed {' '.join(path)}"
        unknown = sorted(set(flags) - flags_in_help(path))
        assert not unknown, f"saeembed {' '.join(path)} --help has no {unknown}"
    # Flags mentioned in the description belong to one of the row's commands.
    mentioned = set(FLAG.findall(second))
    known = set().union(*(flags_in_help(path) for path, _ in calls))
    assert not sorted(mentioned - known), f"description of {first!r} names unknown flags {sorted(mentioned - known)}"


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) for p in COMMANDS])
def test_every_option_of_a_command_is_in_its_row(path: tuple[str, ...]) -> None:
    """The other way round: an option added to a command gets a place in the table (`--db`, `--json`
    and `--help` are covered by the general rules above the table)."""
    shown = {flag for first, _ in ROWS for p, flags in invocations(first) if p == path for flag in flags}
    missing = sorted(flags_in_help(path) - shown - {"--help", "--db", "--json"})
    assert not missing, f"README's row for saeembed {' '.join(path)} lacks {missing}"


def cli_reference_options() -> dict[tuple[str, ...], set[str]]:
    """The flags in the options table of each `## `saeembed …`` section of docs/cli.md."""
    sections: dict[tuple[str, ...], set[str]] = {}
    current: tuple[str, ...] | None = None
    for line in (DOCS / "cli.md").read_text(encoding="utf-8").splitlines():
        heading = re.fullmatch(r"## `saeembed ([a-z -]+)`", line)
        if heading:
            current = tuple(heading.group(1).split())
            sections[current] = set()
        elif current is not None and line.startswith("| `--"):
            sections[current] |= set(FLAG.findall(split_row(line)[0]))
    return sections


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) for p in COMMANDS])
def test_cli_reference_matches_help(path: tuple[str, ...]) -> None:
    sections = cli_reference_options()
    assert path in sections, f"docs/cli.md has no section for saeembed {' '.join(path)}"
    listed = sections[path]
    unknown = sorted(listed - flags_in_help(path))
    assert not unknown, f"docs/cli.md lists {unknown} for saeembed {' '.join(path)}, which --help lacks"
    missing = sorted(flags_in_help(path) - listed - {"--help", "--db", "--json"})
    assert not missing, f"docs/cli.md's table for saeembed {' '.join(path)} lacks {missing}"


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_local_links_point_at_files(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)  # links inside code blocks are not links
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # http:, https:, mailto:, or an anchor on the same page
        path = target.split("#", 1)[0]
        if not (page.parent / path).exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)} links to missing files: {broken}"
