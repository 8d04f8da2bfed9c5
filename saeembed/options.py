"""One options object per command, validated once when it is made.

The CLI builds the object from its arguments before Prefect starts or a model loads; a flow builds it
from its parameters (so values typed into the Prefect UI are checked the same way) before it opens the
database; the library functions build it from their keyword arguments. An object that exists is valid:
every check a value can fail without the database lives in its `__post_init__`, and reports the first
problem as one SaeembedError line naming the option.

Checks that need the database or the file system (the corpus exists, the database is not busy, the
source file has that column) are `saeembed.preflight`'s.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Self

from saeembed.errors import SaeembedError, check_choice
from saeembed.model.units import TOKEN_INPUT, parse_unit
from saeembed.storage.percentiles import DEFAULT_PRESENCE, check_presence
from saeembed.storage.predicates import parse_predicate
from saeembed.storage.shards import DEFAULT_SHARD_DOCS
from saeembed.storage.sources import ON_BAD_LINE, ON_DUPLICATE_ID
from saeembed.storage.user_sql import checked_query

# Bounds that keep a value within what the code and DuckDB handle (a LIMIT beyond int64 fails deep
# inside a query); each is far beyond any useful setting.
MAX_ROWS = 1_000_000
"""Rows a command may be asked to show or return (--top)."""
MAX_BATCH = 65_536
"""Documents per forward pass."""
MAX_READ_TOKENS = 1_048_576
"""Tokens read per document (beyond the longest context of any released model)."""
MAX_LAYER = 1_000
MAX_SHARD_DOCS = 1_000_000
MAX_WORKERS = 1_024
MAX_LATENTS = 1 << 24
MAX_CONCURRENCY = 256
MAX_LLM_TIMEOUT = 3_600.0
MAX_CONCEPT_ID = (1 << 31) - 1
MAX_NAME_CHARS = 256

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")
LABEL_METHODS = ("tokens", "llm")
RANK_BY = ("specific", "delta", "q")
CLUSTER_METHODS = ("hdbscan", "spectral")
MATCH_METHODS = ("correlation", "decoder")
TRAIN_ARCHS = ("topk", "itda")
SEARCH_MODES = ("sae", "dense", "fused")
LABEL_MAX_DOCS = 20_000
"""Largest corpus `embed --label` and compare-releases label as they bring it in (token labels take minutes
at this size on a CPU; see docs/method.md)."""
MAX_EXAMPLES = 10_000
"""Most documents `search --like`/`--unlike` take (their ids travel in one query)."""
SAVE_DTYPES = ("float16", "bfloat16", "float32")
LEVELS = ("document", "unit")


# -- checks of one value -------------------------------------------------------------------------


def check_int(option: str, value: Any, *, low: int, high: int) -> int:
    """`value` if it is a whole number in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise SaeembedError(f"{option} must be a whole number, got {value!r}")
    if value < low:
        raise SaeembedError(f"{option} must be at least {low:,}, got {value:,}")
    if value > high:
        raise SaeembedError(f"{option} must be at most {high:,}, got {value:,}")
    return value


def check_number(option: str, value: Any, *, low: float, high: float, above: bool = False) -> float:
    """`value` if it is a finite number in [low, high] (in (low, high] with `above`)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SaeembedError(f"{option} must be a number, got {value!r}")
    if ((value <= low) if above else (value < low)) or value > high:
        if above:
            raise SaeembedError(f"{option} must be above {low:g} and at most {high:g}, got {value:g}")
        raise SaeembedError(f"{option} must be between {low:g} and {high:g}, got {value:g}")
    return float(value)


def check_text(option: str, value: Any, *, limit: int = MAX_NAME_CHARS) -> str:
    """`value` stripped, if it is non-empty text of at most `limit` characters without control characters."""
    if not isinstance(value, str):
        raise SaeembedError(f"{option} must be text, got {value!r}")
    text = value.strip()
    if not text:
        raise SaeembedError(f"{option} is empty")
    if len(text) > limit:
        raise SaeembedError(f"{option} is {len(text):,} characters long; at most {limit:,}")
    if re.search(r"[\x00-\x08\x0b-\x1f\x7f]", text):
        raise SaeembedError(f"{option} contains a control character: {text!r}")
    return text


def check_html(option: str, path: Any, *, folder_exists: bool = False) -> None:
    """An HTML file to write: ends in .html/.htm (and, with `folder_exists`, its folder is there; flows make
    the folder of a --report)."""
    if path is None:
        return
    target = Path(path)
    if target.suffix.lower() not in (".html", ".htm"):
        raise SaeembedError(f"{option} must end in .html, got {path}")
    if folder_exists and not target.expanduser().parent.exists():
        raise SaeembedError(f"cannot write {path}: folder {target.parent} does not exist")


def check_predicate(option: str, value: Any) -> None:
    if value is not None:
        parse_predicate(value, option)


def check_concept_ids(option: str, values: Any) -> tuple[int, ...]:
    if isinstance(values, str | bytes) or not hasattr(values, "__iter__"):
        raise SaeembedError(f"{option} takes concept ids, e.g. 12,40; got {values!r}")
    ids = tuple(check_int(option, value, low=0, high=MAX_CONCEPT_ID) for value in values)
    if not ids:
        raise SaeembedError(f"{option} is empty: give at least one feature id")
    return ids


def parse_concept_ids(text: str, option: str) -> tuple[int, ...]:
    """'12,40' → (12, 40): the form the CLI takes concept ids in."""
    try:
        return check_concept_ids(option, [int(part) for part in text.split(",") if part.strip()])
    except ValueError:
        raise SaeembedError(f"{option} takes comma-separated concept ids, e.g. 12,40; got {text!r}") from None


def check_llm(
    llm_local: str | None, llm_base_url: str | None, llm_model: str | None, llm_api_key_env: str, llm_timeout: float
) -> None:
    """The --llm-* options of one command: at most one backend, an endpoint with its model, a sane timeout."""
    if llm_local is not None and llm_base_url is not None:
        raise SaeembedError("give either --llm-local or --llm-base-url, not both")
    if llm_local is not None:
        check_text("--llm-local", llm_local, limit=4096)
    if llm_base_url is not None:
        url = check_text("--llm-base-url", llm_base_url, limit=2048)
        if not re.match(r"https?://[^/\s]+", url):
            raise SaeembedError(f"--llm-base-url {url!r} is not an http:// or https:// URL")
        if llm_model is None:
            raise SaeembedError("--llm-base-url needs --llm-model (the model name the endpoint serves)")
    if llm_model is not None:
        check_text("--llm-model", llm_model)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(llm_api_key_env)):
        raise SaeembedError(f"--llm-api-key-env must name an environment variable, got {llm_api_key_env!r}")
    check_number("--llm-timeout", llm_timeout, low=0, high=MAX_LLM_TIMEOUT, above=True)


# -- the options objects ---------------------------------------------------------------------------


class Options:
    """What every command's options object can do besides validating itself."""

    @classmethod
    def pick(cls, values: Mapping[str, Any]) -> Self:
        """The options among `values` (e.g. a flow's `locals()`); other keys are ignored."""
        names = {field.name for field in fields(cls)}  # type: ignore[arg-type]
        return cls(**{name: value for name, value in values.items() if name in names})

    def params(self) -> dict[str, Any]:
        """The options as plain values (a flow's parameters, an analysis's recorded params)."""
        return asdict(self)  # type: ignore[call-overload]

    def _check_level(self) -> None:
        """--level document|unit and --unit SPEC (a unit below the document; giving it means --level unit)."""
        unit = self.unit
        if unit is not None:
            spec = parse_unit(unit)
            if spec.is_document:
                raise SaeembedError("--unit names a unit below the document: sentence, paragraph or chunk:N")
            object.__setattr__(self, "unit", str(spec))
            object.__setattr__(self, "level", "unit")
        check_choice("--level", self.level, LEVELS)

    def _paths_as_text(self, *names: str) -> None:
        """Fields given as Paths (the CLI's) kept as text, so the options travel as a flow's JSON parameters."""
        for name in names:
            if isinstance(getattr(self, name), Path):
                object.__setattr__(self, name, str(getattr(self, name)))


@dataclass(frozen=True, kw_only=True)
class LlmOptions(Options):
    """The --llm-* options shared by label, diff, cluster and search."""

    llm_local: str | None = None
    llm_base_url: str | None = None
    llm_model: str | None = None
    llm_api_key_env: str = "OPENAI_API_KEY"
    llm_timeout: float = 60.0

    def __post_init__(self) -> None:
        check_llm(self.llm_local, self.llm_base_url, self.llm_model, self.llm_api_key_env, self.llm_timeout)

    @property
    def wants_llm(self) -> bool:
        return self.llm_local is not None or self.llm_base_url is not None


@dataclass(frozen=True, kw_only=True)
class IngestOptions(Options):
    path: str
    corpus: str
    text_col: str = "text"
    id_col: str | None = None
    table: str | None = None
    on_bad_line: str = "error"
    on_duplicate_id: str = "keep"

    def __post_init__(self) -> None:
        check_text("PATH", self.path, limit=4096)
        check_text("--corpus", self.corpus)
        check_text("--text-col", self.text_col)
        if self.id_col is not None:
            check_text("--id-col", self.id_col)
        if self.table is not None:
            check_text("--table", self.table)
        check_choice("--on-bad-line", self.on_bad_line, ON_BAD_LINE)
        check_choice("--on-duplicate-id", self.on_duplicate_id, ON_DUPLICATE_ID)


@dataclass(frozen=True, kw_only=True)
class EmbedJobOptions(Options):
    corpus: str
    sae: str = "default"
    reader: str | None = None
    layer: int | None = None
    batch_size: int = 32
    max_tokens: int = 512
    chat_template: bool = True
    device: str = "auto"
    dtype: str = "auto"
    shard_docs: int = DEFAULT_SHARD_DOCS
    workers: int = 1
    dask_address: str | None = None
    unit: str = "document"
    label: bool = False
    label_max_docs: int = LABEL_MAX_DOCS

    def __post_init__(self) -> None:
        check_text("--corpus", self.corpus)
        object.__setattr__(self, "unit", str(parse_unit(self.unit)))
        check_int("--label-max-docs", self.label_max_docs, low=0, high=10**12)
        check_text("--sae", self.sae, limit=4096)
        if self.reader is not None:
            check_text("--reader", self.reader, limit=4096)
        if self.layer is not None:
            check_int("--layer", self.layer, low=0, high=MAX_LAYER)
        check_int("--batch-size", self.batch_size, low=1, high=MAX_BATCH)
        check_int("--max-tokens", self.max_tokens, low=1, high=MAX_READ_TOKENS)
        check_int("--shard-docs", self.shard_docs, low=1, high=MAX_SHARD_DOCS)
        check_int("--workers", self.workers, low=1, high=MAX_WORKERS)
        if self.dask_address is not None:
            if self.workers != 1:
                raise SaeembedError(
                    "--workers starts a local Dask cluster; with --dask-address the cluster has its own"
                )
            if not re.fullmatch(r"(tcp|tls|inproc|ucx)://[\w.\-\[\]:]+(:\d+)?", str(self.dask_address)):
                raise SaeembedError(f"--dask-address must look like tcp://HOST:PORT, got {self.dask_address!r}")
        check_choice("--device", self.device, DEVICES)
        check_choice("--dtype", self.dtype, DTYPES)
        if self.dtype == "float16" and self.device == "cpu":
            raise SaeembedError("float16 is not supported on the CPU (use bfloat16 or float32)")


@dataclass(frozen=True, kw_only=True)
class TrainSaeOptions(Options):
    corpus: str
    layer: int
    out: str
    latents: int = 8192
    k: int = 32
    reader: str = "smollm2-135m-instruct"
    max_tokens: int = 128
    train_tokens: int = 2_000_000
    heldout_docs: int = 500
    batch_size: int = 4096
    epochs: int = 1
    lr: float | None = None
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    save_dtype: str = "float16"
    arch: str = "topk"
    atoms: int | None = None
    unit: str = TOKEN_INPUT

    def __post_init__(self) -> None:
        check_text("--corpus", self.corpus)
        check_int("--layer", self.layer, low=0, high=MAX_LAYER)
        check_choice("--arch", self.arch, TRAIN_ARCHS)
        if self.unit != TOKEN_INPUT:
            try:
                # Kept as parse_unit spells it ('Sentence' → 'sentence'): the SAE's input_unit is compared
                # with embed's --unit spelled the same way.
                object.__setattr__(self, "unit", str(parse_unit(self.unit)))
            except SaeembedError as error:
                raise SaeembedError(f"{error} (or token, the default: one token per input)") from None
        if self.atoms is not None:
            if self.arch != "itda":
                raise SaeembedError("--atoms goes with --arch itda (a TopK SAE's size is --latents)")
            check_int("--atoms", self.atoms, low=1, high=MAX_LATENTS)
        self._paths_as_text("out")
        check_text("--out", self.out, limit=4096)
        check_int("--latents", self.latents, low=2, high=MAX_LATENTS)
        check_int("--k", self.k, low=1, high=self.latents if self.arch == "topk" else MAX_LATENTS)
        check_text("--reader", self.reader, limit=4096)
        check_int("--max-tokens", self.max_tokens, low=2, high=MAX_READ_TOKENS)
        check_int("--train-tokens", self.train_tokens, low=1, high=10**12)
        check_int("--heldout-docs", self.heldout_docs, low=1, high=10**9)
        check_int("--batch-size", self.batch_size, low=1, high=1 << 24)
        check_int("--epochs", self.epochs, low=1, high=10_000)
        if self.lr is not None:
            check_number("--lr", self.lr, low=0, high=1, above=True)
        check_int("--seed", self.seed, low=0, high=2**32 - 1)
        check_choice("--device", self.device, DEVICES)
        check_choice("--dtype", self.dtype, DTYPES)
        check_choice("--save-dtype", self.save_dtype, SAVE_DTYPES)
        target = Path(self.out).expanduser()
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise SaeembedError(f"--out {self.out} exists and is not an empty folder: choose a new folder")


@dataclass(frozen=True, kw_only=True)
class LabelOptions(LlmOptions):
    corpus: str
    method: str = "tokens"
    features: str = "all"
    force: bool = False
    concurrency: int = 4
    from_matches: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_text("--corpus", self.corpus)
        check_choice("--method", self.method, LABEL_METHODS)
        if self.from_matches is not None:
            check_int("--from-matches", self.from_matches, low=1, high=2**62)
            if self.method != "tokens" or self.wants_llm or self.features != "all":
                raise SaeembedError("--from-matches carries labels over: it takes no --method, --features or --llm-*")
        check_features(self.features)
        check_int("--concurrency", self.concurrency, low=1, high=MAX_CONCURRENCY)
        if self.method == "llm" and not self.wants_llm:
            raise SaeembedError("--method llm needs an LLM: --llm-local MODEL or --llm-base-url URL --llm-model NAME")
        if self.method != "llm" and self.wants_llm:
            raise SaeembedError("the --llm-* options go with --method llm")


def check_features(spec: Any) -> str:
    """`all`, `top:N` or `ID,ID,…` (whether the ids are the SAE's is checked against the SAE)."""
    text = check_text("--features", spec, limit=1_000_000)
    if text == "all":
        return text
    if text.startswith("top:"):
        try:
            check_int("--features top:N", int(text[4:]), low=1, high=MAX_LATENTS)
        except ValueError:
            raise SaeembedError(f"--features {text}: top:N needs a positive whole number N") from None
        return text
    parse_concept_ids(text, "--features")
    return text


@dataclass(frozen=True, kw_only=True)
class DiffOptions(LlmOptions):
    a: str
    b: str | None = None
    by: str | None = None
    where_a: str | None = None
    where_b: str | None = None
    where: str | None = None
    paired_on: str | None = None
    min_delta: float = 0.03
    top: int = 50
    rank_by: str = "specific"
    presence_threshold: float = DEFAULT_PRESENCE
    report: str | None = None
    judged_per_side: int = 40
    level: str = "document"
    unit: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_text("corpus A", self.a)
        self._check_level()
        if (self.b is None) == (self.by is None):
            raise SaeembedError(
                "give corpus B (saeembed diff A B …) or --by COLUMN (saeembed diff A --by COLUMN), not both"
            )
        if self.b is not None:
            check_text("corpus B", self.b)
            if self.where is not None:
                raise SaeembedError("--where goes with --by; to compare slices use --where-a and --where-b")
        else:
            check_text("--by", self.by)
            if self.where_a is not None or self.where_b is not None or self.paired_on is not None:
                raise SaeembedError("--where-a, --where-b and --paired-on compare A with B; with --by use --where")
            if self.wants_llm:
                raise SaeembedError("hypotheses explain A vs B: leave out --by, or the --llm-* options")
        if self.paired_on is not None:
            check_text("--paired-on", self.paired_on)
        check_predicate("--where-a", self.where_a)
        check_predicate("--where-b", self.where_b)
        check_predicate("--where", self.where)
        check_number("--min-delta", self.min_delta, low=0, high=1)
        check_int("--top", self.top, low=1, high=MAX_ROWS)
        check_choice("--rank-by", self.rank_by, RANK_BY)
        check_presence(self.presence_threshold)
        self._paths_as_text("report")
        check_html("--report", self.report)
        check_int("--judged-per-side", self.judged_per_side, low=2, high=10_000)


@dataclass(frozen=True, kw_only=True)
class CorrelateOptions(Options):
    corpus: str
    with_column: str | None = None
    where: str | None = None
    min_npmi: float = 0.6
    max_label_sim: float = 0.2
    min_count: int = 5
    max_same_token: float = 0.5
    top: int = 50
    report: str | None = None
    level: str = "document"
    unit: str | None = None

    def __post_init__(self) -> None:
        check_text("CORPUS", self.corpus)
        self._check_level()
        if self.with_column is not None:
            check_text("--with-column", self.with_column)
        check_predicate("--where", self.where)
        check_number("--min-npmi", self.min_npmi, low=-1, high=1)
        check_number("--max-label-sim", self.max_label_sim, low=-1, high=1)
        check_int("--min-count", self.min_count, low=1, high=10**12)
        check_number("--max-same-token", self.max_same_token, low=0, high=1)
        check_int("--top", self.top, low=1, high=MAX_ROWS)
        self._paths_as_text("report")
        check_html("--report", self.report)


@dataclass(frozen=True, kw_only=True)
class ClusterOptions(LlmOptions):
    corpus: str
    about: str | None = None
    concepts: tuple[int, ...] | None = None
    method: str = "hdbscan"
    k: int | None = None
    min_cluster_size: int | None = None
    n_concepts: int = 20
    where: str | None = None
    dense: bool = False
    report: str | None = None
    level: str = "document"
    unit: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_text("CORPUS", self.corpus)
        self._check_level()
        if (self.about is None) == (self.concepts is None):
            raise SaeembedError(
                "say which concepts to cluster on: give exactly one of --about TEXT or --concepts ID,ID…"
            )
        if self.about is not None:
            if not isinstance(self.about, str) or not self.about.strip():
                raise SaeembedError("--about is empty: say what the clusters should be about")
            check_text("--about", self.about, limit=10_000)
        if self.concepts is not None:
            object.__setattr__(self, "concepts", check_concept_ids("--concepts", self.concepts))
        check_choice("--method", self.method, CLUSTER_METHODS)
        if self.method == "spectral" and self.k is None:
            raise SaeembedError("spectral clustering needs --k N (N ≥ 2 clusters)")
        if self.method == "hdbscan" and self.k is not None:
            raise SaeembedError("--k is for spectral clustering; HDBSCAN finds the number of clusters itself")
        if self.method == "spectral" and self.min_cluster_size is not None:
            raise SaeembedError("--min-cluster-size is for HDBSCAN; spectral clustering takes --k")
        if self.k is not None:
            check_int("--k", self.k, low=2, high=10_000)
        if self.min_cluster_size is not None:
            check_int("--min-cluster-size", self.min_cluster_size, low=2, high=10**9)
        check_int("--n-concepts", self.n_concepts, low=1, high=MAX_LATENTS)
        check_predicate("--where", self.where)
        self._paths_as_text("report")
        check_html("--report", self.report)


@dataclass(frozen=True, kw_only=True)
class CompareReleasesOptions(Options):
    source: str | None = "example"
    corpus: str = "releases"
    baseline: str | None = None
    sae: str = "default"
    max_tokens: int = 256
    device: str = "auto"
    dtype: str = "auto"
    min_delta: float = 0.03
    top: int = 10
    presence_threshold: float = DEFAULT_PRESENCE
    report: str | None = None
    label: bool = True
    label_max_docs: int = LABEL_MAX_DOCS

    def __post_init__(self) -> None:
        check_int("--label-max-docs", self.label_max_docs, low=0, high=10**12)
        if self.source is not None:
            check_text("SOURCE", self.source, limit=4096)
        check_text("--corpus", self.corpus)
        if self.baseline is not None:
            check_text("--baseline", self.baseline)
        check_text("--sae", self.sae, limit=4096)
        check_int("--max-tokens", self.max_tokens, low=1, high=MAX_READ_TOKENS)
        check_choice("--device", self.device, DEVICES)
        check_choice("--dtype", self.dtype, DTYPES)
        check_number("--min-delta", self.min_delta, low=0, high=1)
        check_int("--top", self.top, low=1, high=MAX_ROWS)
        check_presence(self.presence_threshold)
        self._paths_as_text("report")
        check_html("--report", self.report)


@dataclass(frozen=True, kw_only=True)
class SearchOptions(LlmOptions):
    query: str | None = None
    like: tuple[int, ...] | None = None
    unlike: tuple[int, ...] | None = None
    corpus: str | None = None
    mode: str = "sae"
    top: int = 20
    n_concepts: int = 60
    temperature: float = 0.2
    exemplar_weight: float = 0.5
    where: str | None = None
    level: str = "document"
    unit: str | None = None
    report: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_level()
        self._paths_as_text("report")
        check_html("--report", self.report, folder_exists=True)
        if self.like is not None:
            self._check_examples()
        elif self.unlike is not None:
            raise SaeembedError("--unlike needs --like: say which documents the results should be like")
        elif not isinstance(self.query, str) or not self.query.strip():
            raise SaeembedError("empty query: say which property the documents should have (or give --like)")
        else:
            check_text("QUERY", self.query, limit=10_000)
        if self.corpus is not None:
            check_text("--corpus", self.corpus)
        check_choice("--mode", self.mode, SEARCH_MODES)
        check_int("--top", self.top, low=1, high=MAX_ROWS)
        check_int("--concepts", self.n_concepts, low=1, high=MAX_LATENTS)
        check_number("--temperature", self.temperature, low=0, high=1000, above=True)
        check_number("--exemplar-weight", self.exemplar_weight, low=0, high=1)
        check_predicate("--where", self.where)

    def _check_examples(self) -> None:
        """Search by example: document ids, at least one like, none on both sides, no text query, a corpus."""
        if self.query is not None:
            raise SaeembedError("give a QUERY or --like example documents, not both")
        if self.wants_llm:
            raise SaeembedError("--llm-* choose the concepts of a text QUERY; with --like the examples choose them")
        if self.corpus is None:
            raise SaeembedError("--like needs --corpus: the corpus the examples and the results come from")
        for option, ids in (("--like", self.like), ("--unlike", self.unlike)):
            if ids is None:
                continue
            ids = tuple(ids)
            if any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in ids):
                raise SaeembedError(f"{option} takes document ids (whole numbers ≥ 0), got {list(ids)[:5]}")
            if len(ids) > MAX_EXAMPLES:
                raise SaeembedError(f"{option} takes at most {MAX_EXAMPLES} documents, got {len(ids)}")
            object.__setattr__(self, option.removeprefix("--"), tuple(dict.fromkeys(ids)))
        if not self.like:
            raise SaeembedError("--like is empty: give the ids of documents that have the property, e.g. 12,40,97")
        both = sorted(set(self.like) & set(self.unlike or ()))
        if both:
            raise SaeembedError(f"documents {both[:5]} are in both --like and --unlike")


def parse_doc_ids(text: str, option: str) -> tuple[int, ...]:
    """'12,40' → (12, 40): the form the CLI takes document ids in (an empty list is left to the options)."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise SaeembedError(f"{option} takes comma-separated document ids, e.g. 12,40; got {text!r}") from None


@dataclass(frozen=True, kw_only=True)
class ExploreOptions(Options):
    corpus: str
    about: str | None = None
    concepts: tuple[int, ...] | None = None
    dense: bool = False
    color_by: str | None = None
    html: str | None = None

    def __post_init__(self) -> None:
        check_text("CORPUS", self.corpus)
        if sum((self.about is not None, self.concepts is not None, bool(self.dense))) > 1:
            raise SaeembedError("give at most one of --about, --concepts and --dense: what places the points")
        if self.about is not None:
            if not isinstance(self.about, str) or not self.about.strip():
                raise SaeembedError("--about is empty: say what the map should be about")
            check_text("--about", self.about, limit=10_000)
        if self.concepts is not None:
            object.__setattr__(self, "concepts", check_concept_ids("--concepts", self.concepts))
        if self.color_by is not None:
            check_text("--color-by", self.color_by)
        if self.html is None:
            object.__setattr__(self, "html", f"explore-{re.sub(r'[^A-Za-z0-9_.-]+', '-', self.corpus)}.html")
        self._paths_as_text("html")
        check_html("--html", self.html, folder_exists=True)


@dataclass(frozen=True, kw_only=True)
class SearchIndexOptions(Options):
    corpus: str
    flat_below: int = 50_000

    def __post_init__(self) -> None:
        check_text("--corpus", self.corpus)
        check_int("--flat-below", self.flat_below, low=1, high=10**12)


@dataclass(frozen=True, kw_only=True)
class DemoOptions(Options):
    n_docs: int = 3000

    def __post_init__(self) -> None:
        check_int("--n-docs", self.n_docs, low=4, high=100_000)


@dataclass(frozen=True, kw_only=True)
class ServeOptions(Options):
    project: str = "prefect.yaml"
    only: tuple[str, ...] | None = None
    limit: int = 1

    def __post_init__(self) -> None:
        check_text("--project", self.project, limit=4096)
        if self.only is not None:
            object.__setattr__(self, "only", tuple(check_text("--only", name) for name in self.only))
            if not self.only:
                raise SaeembedError("--only is empty: name the deployments to serve, e.g. embed,diff")
        check_int("--limit", self.limit, low=1, high=MAX_CONCURRENCY)


@dataclass(frozen=True, kw_only=True)
class ReportOptions(Options):
    analysis: str
    html: str
    concept_pages: bool = False

    def __post_init__(self) -> None:
        self._paths_as_text("html")
        check_analysis(self.analysis)
        check_html("--html", self.html, folder_exists=True)


def check_analysis(value: Any) -> str:
    """An analysis id (a positive whole number) or a kind such as 'diff'."""
    text = check_text("ANALYSIS", value)
    if text.lstrip("-").isdigit():
        check_int("ANALYSIS", int(text), low=1, high=2**62)
    elif not re.fullmatch(r"[a-z][a-z-]*", text):
        raise SaeembedError(f"ANALYSIS must be an analysis id or a kind such as diff, got {text!r}")
    return text


@dataclass(frozen=True, kw_only=True)
class HistoryOptions(Options):
    analysis: str
    concepts: tuple[int, ...] | None = None
    top: int = 10

    def __post_init__(self) -> None:
        check_analysis(self.analysis)
        if self.concepts is not None:
            object.__setattr__(self, "concepts", check_concept_ids("--concepts", self.concepts))
        check_int("--top", self.top, low=1, high=MAX_ROWS)


@dataclass(frozen=True, kw_only=True)
class DocsShowOptions(Options):
    doc_id: int
    top: int = 20

    def __post_init__(self) -> None:
        check_int("DOC_ID", self.doc_id, low=1, high=2**62)
        check_int("--top", self.top, low=1, high=MAX_ROWS)


@dataclass(frozen=True, kw_only=True)
class ConceptsTopOptions(Options):
    corpus: str
    top: int = 20

    def __post_init__(self) -> None:
        check_text("--corpus", self.corpus)
        check_int("--top", self.top, low=1, high=MAX_ROWS)


@dataclass(frozen=True, kw_only=True)
class ConceptsShowOptions(Options):
    feature_id: int
    corpus: str | None = None
    top: int = 10
    all_tokens: bool = False
    html: str | None = None
    by: str | None = None

    def __post_init__(self) -> None:
        check_int("FEATURE_ID", self.feature_id, low=0, high=MAX_CONCEPT_ID)
        if self.corpus is not None:
            check_text("--corpus", self.corpus)
        check_int("--top", self.top, low=1, high=MAX_ROWS)
        self._paths_as_text("html")
        check_html("--html", self.html, folder_exists=True)
        if self.by is not None:
            check_text("--by", self.by)
            if self.html is None:
                raise SaeembedError("--by goes with --html: the concept page shows the frequency by that column")


@dataclass(frozen=True, kw_only=True)
class MatchOptions(Options):
    """`saeembed concepts match RUN_A RUN_B`."""

    run_a: int
    run_b: int
    method: str = "correlation"
    max_docs: int = 20_000
    top: int = 20
    report: str | None = None

    def __post_init__(self) -> None:
        self._paths_as_text("report")
        check_html("--report", self.report)
        check_int("RUN_A", self.run_a, low=1, high=2**31 - 1)
        check_int("RUN_B", self.run_b, low=1, high=2**31 - 1)
        if self.run_a == self.run_b:
            raise SaeembedError(f"RUN_A and RUN_B are both run {self.run_a}: give two different embedding runs")
        check_choice("--method", self.method, MATCH_METHODS)
        check_int("--max-docs", self.max_docs, low=2, high=10**9)
        check_int("--top", self.top, low=1, high=MAX_ROWS)


@dataclass(frozen=True, kw_only=True)
class ConceptsSearchOptions(Options):
    query: str
    corpus: str | None = None
    top: int = 20
    min_score: float = 0.6

    def __post_init__(self) -> None:
        check_text("QUERY", self.query, limit=10_000)
        if self.corpus is not None:
            check_text("--corpus", self.corpus)
        check_int("--top", self.top, low=1, high=MAX_ROWS)
        check_number("--min-score", self.min_score, low=0, high=1)


@dataclass(frozen=True, kw_only=True)
class CorporaExportOptions(Options):
    name: str
    out: str
    n_docs: int | None = None

    def __post_init__(self) -> None:
        self._paths_as_text("out")
        check_choice("NAME", self.name, ("demo", "sae-training"))
        if Path(self.out).suffix != ".parquet":
            raise SaeembedError(f"--out must end in .parquet, got {self.out}")
        if not Path(self.out).expanduser().parent.exists():
            raise SaeembedError(f"cannot write {self.out}: folder {Path(self.out).parent} does not exist")
        if self.n_docs is not None:
            check_int("--n-docs", self.n_docs, low=1, high=10**9)


@dataclass(frozen=True, kw_only=True)
class SqlOptions(Options):
    query: str | None = None
    file: str | None = None
    csv: bool = False
    json: bool = False
    limit: int = 50

    def __post_init__(self) -> None:
        if self.query is None and self.file is None:
            raise SaeembedError('give a query (saeembed sql "SELECT …") or --file FILE')
        if self.query is not None and self.file is not None:
            raise SaeembedError("give a query or --file FILE, not both")
        if self.csv and self.json:
            raise SaeembedError("give --csv or --json, not both")
        check_int("--limit", self.limit, low=1, high=MAX_ROWS)
        if self.file is not None:
            path = Path(self.file)
            if not path.is_file():
                raise SaeembedError(f"--file {self.file}: no such file")
            try:
                object.__setattr__(self, "query", path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as error:
                raise SaeembedError(f"--file {self.file} cannot be read as UTF-8 text: {error}") from None
        checked_query(self.query)
