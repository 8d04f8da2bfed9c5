"""The structure the code promises: the model runs without the database stack, the library never imports
Prefect, and tests share code through tests/support.py only."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import saeembed

ROOT = Path(__file__).resolve().parents[1]
MODEL = [
    "saeembed.model.hub",
    "saeembed.model.reader",
    "saeembed.model.sae",
    "saeembed.model.tokens",
    "saeembed.model.train",
    "saeembed.model.pooling",
]

BLOCK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
"""


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_the_model_imports_where_no_database_stack_is_installed():
    # A GPU box for a throughput check has torch and transformers, not DuckDB, polars, pyarrow or Prefect.
    blocked = {"duckdb", "polars", "pyarrow", "prefect", "saeembed_flows"}
    code = BLOCK.format(blocked=blocked) + "".join(f"import {module}\n" for module in MODEL)
    result = run(code)
    assert result.returncode == 0, result.stderr


def test_the_blocker_really_blocks():
    result = run(BLOCK.format(blocked={"duckdb"}) + "import saeembed.storage.store\n")
    assert result.returncode != 0 and "blocked: duckdb" in result.stderr


def test_no_library_module_imports_prefect_or_the_flows():
    modules = sorted(m.name for m in pkgutil.walk_packages(saeembed.__path__, "saeembed.") if m.name != "saeembed.sql")
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "assert 'prefect' not in sys.modules, 'prefect'\n"
        "assert 'saeembed_flows' not in sys.modules, 'saeembed_flows'\n"
        "print(len(sys.modules))\n"
    )
    result = run(code)
    assert result.returncode == 0, result.stderr
    assert "saeembed.analysis.diff" in modules and "saeembed.cli" in modules


def test_no_test_module_imports_another():
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tests."):
                assert node.module in ("tests.support",), f"{path.name} imports {node.module}"
            if isinstance(node, ast.Import):
                assert not any(alias.name.startswith("tests.") for alias in node.names), path.name


def test_the_import_paths_of_earlier_releases_still_work():
    from saeembed.concepts.labels import label_concepts
    from saeembed.concepts.search import search_concepts
    from saeembed.jobs import embed, ingest
    from saeembed.labels import label_concepts as old_label_concepts
    from saeembed.pipeline import embed as old_embed
    from saeembed.pipeline import ingest as old_ingest
    from saeembed.search import search_concepts as old_search_concepts
    from saeembed.storage.store import Store
    from saeembed.store import Store as OldStore

    assert (old_label_concepts, old_embed, old_ingest, old_search_concepts, OldStore) == (
        label_concepts,
        embed,
        ingest,
        search_concepts,
        Store,
    )


# Lowest first: a module imports only modules of its own layer or a lower one.
LAYERS = [
    ("saeembed.errors",),
    ("saeembed.model",),
    ("saeembed.storage",),
    ("saeembed.options",),
    ("saeembed.concepts",),
    ("saeembed.analysis",),
    ("saeembed.reports",),
    ("saeembed.jobs",),
    ("saeembed.preflight", "saeembed.cli", "saeembed_flows"),
]
EARLIER_PATHS = {"saeembed.store", "saeembed.pipeline", "saeembed.labels", "saeembed.search"}


def layer_of(module: str) -> int | None:
    for number, prefixes in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return number
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    parts[0] = "saeembed_flows" if parts[0] == "flows" else parts[0]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_each_layer_imports_only_the_layers_below_it():
    upward = []
    for path in sorted([*(ROOT / "saeembed").rglob("*.py"), *(ROOT / "flows").rglob("*.py")]):
        module = module_name(path)
        if module in EARLIER_PATHS:
            continue
        own = layer_of(module)
        assert own is not None, f"{module} belongs to no layer"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                if name.startswith("saeembed") and (layer_of(name) is None or layer_of(name) > own):
                    upward.append(f"{module} imports {name}")
    assert upward == []


def test_the_gpu_benchmark_runs_where_only_torch_and_transformers_are_installed():
    # The lent GPU machine has torch and transformers, not the database stack: the benchmark runs there as is.
    blocked = {"duckdb", "polars", "pyarrow", "prefect", "saeembed_flows"}
    code = BLOCK.format(blocked=blocked) + (
        "import runpy, sys\n"
        "sys.argv = ['gpu_throughput.py', '--tiny']\n"
        "runpy.run_path('benchmarks/gpu_throughput.py', run_name='__main__')\n"
    )
    result = run(code)
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()[-2:]
    assert header.split()[:3] == ["size", "layers", "raw"]
    size, layers, raw, pipeline, ratio = row.split()[:5]
    assert (size, layers) == ("tiny", "3")
    assert float(raw.replace(",", "")) > 0 and float(pipeline.replace(",", "")) > 0
    assert float(ratio) == pytest.approx(float(pipeline.replace(",", "")) / float(raw.replace(",", "")), rel=0.02)
