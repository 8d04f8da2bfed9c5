"""`saeembed …`: long jobs run as Prefect flows; look-ups answer straight from the library.

Rows go to stdout (a table, or one JSON document with --json); logs and progress go to stderr.
Heavy imports (torch, Prefect) happen inside the commands that need them, so look-ups start fast.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from saeembed.errors import SaeembedError, explain

if TYPE_CHECKING:
    import polars as pl

    from saeembed.options import Options

app = typer.Typer(
    help="Embed text corpora with a sparse autoencoder over an LLM's activations; analyse them in DuckDB.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
docs_app = typer.Typer(help="Look at documents.", no_args_is_help=True)
concepts_app = typer.Typer(help="Look at concepts (SAE latents).", no_args_is_help=True)
corpora_app = typer.Typer(
    help="Corpora in the database and the offline corpora bundled with packages.", no_args_is_help=True
)
app.add_typer(docs_app, name="docs")
app.add_typer(concepts_app, name="concepts")
app.add_typer(corpora_app, name="corpora")

# No markup by default: what is printed quotes the user's texts, labels and predicates, where "[/b]" is data.
stdout = Console(markup=False)
stderr = Console(stderr=True, markup=False)

DbOption = Annotated[
    Path | None, typer.Option("--db", help="DuckDB file (default: $SAEEMBED_DB or ./saeembed.duckdb).")
]
LabelMaxDocsOption = Annotated[
    int,
    typer.Option(
        "--label-max-docs", help="Largest corpus (documents) labelled as it is brought in; larger: a warning."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
DeviceOption = Annotated[str, typer.Option(help="auto | cpu | cuda")]
LlmLocalOption = Annotated[
    str | None, typer.Option("--llm-local", help="Local HF instruct model (id, folder or .gguf).")
]
LlmBaseUrlOption = Annotated[
    str | None, typer.Option("--llm-base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
]
LlmModelOption = Annotated[str | None, typer.Option("--llm-model", help="Model name at the endpoint.")]
LlmKeyOption = Annotated[
    str, typer.Option("--llm-api-key-env", help="Environment variable holding the endpoint's key.")
]
LlmTimeoutOption = Annotated[
    float, typer.Option("--llm-timeout", help="Seconds an LLM request may take before it counts as timed out.")
]
LevelOption = Annotated[
    str, typer.Option("--level", help="document | unit (the units `embed --unit` made: sentences, paragraphs, chunks)")
]
UnitOption = Annotated[
    str | None, typer.Option("--unit", help="sentence | paragraph | chunk:N: which units (implies --level unit).")
]
PresenceOption = Annotated[
    float,
    typer.Option(
        "--presence-threshold",
        help="A concept is present in a document where its max activation reaches this share of its p90 "
        "(0: any firing).",
    ),
]
DtypeOption = Annotated[
    str, typer.Option(help="auto | float32 | bfloat16 | float16 (auto: bf16 where native, fp16 on old GPUs, else fp32)")
]


def main(argv: list[str] | None = None) -> None:
    """Console entry point. Every failure a user can cause or meet ends as one line `error: …` on stderr:
    exit code 2 for bad input and the machine's trouble (busy or damaged database, disk full, permission
    denied), 130 when interrupted, 3 for a bug in saeembed (its traceback with --debug or SAEEMBED_DEBUG=1)."""
    from typer.exceptions import TyperException

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("SAEEMBED_DEBUG", "") not in ("", "0")
    args = [arg for arg in args if arg != "--debug"]
    _Debug.enabled = debug
    try:
        code = app(args=args, prog_name="saeembed", standalone_mode=False)
    except typer.Exit as done:
        code = done.exit_code
    except TyperException as error:  # the command line itself is wrong (click's UsageError and kin)
        context = getattr(error, "ctx", None)
        if type(error).__name__ == "NoArgsIsHelpError" and context is not None:
            print(context.get_help())
            code = 0
        else:
            message = error.format_message() if hasattr(error, "format_message") else str(error)
            where = " ".join(context.command_path.split()[1:]) + " " if context is not None else ""
            _fail(f"{message} (see: saeembed {where}--help)", 2, error, debug)
    except (typer.Abort, KeyboardInterrupt) as error:
        _fail("interrupted: whole batches already stored are kept; rerun to resume", 130, error, debug)
    except Exception as error:
        message = explain(error)
        if message is not None:
            _fail(message, 2, error, debug)
        first = (str(error).strip().splitlines() or [""])[0][:200]
        _fail(
            f"internal error ({type(error).__name__}: {first}): this is a bug in saeembed; rerun with --debug "
            "(or SAEEMBED_DEBUG=1) for the traceback, and please report it",
            3,
            error,
            debug,
        )
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int, error: BaseException, debug: bool) -> None:
    if debug:
        traceback.print_exception(error)
    stderr.print(Text.assemble(("error:", "bold red"), f" {message}"), highlight=False, soft_wrap=True)
    # Prefect keeps the failed run's exception; dropping its frames frees what they held (open DuckDB
    # handles) before the interpreter exits.
    error.__traceback__ = None
    sys.exit(code)


class _Debug:
    """Whether this process shows tracebacks (set by main from --debug / SAEEMBED_DEBUG)."""

    enabled = False


def _db(db: Path | None) -> str:
    from saeembed.storage.store import default_db_path

    return str(db if db is not None else default_db_path())


def _run_flow(flow_name: str, db: str, options: Options, **extra: Any) -> dict:
    """Run one of saeembed's Prefect flows in this process with a checked options object; its result.

    A failure raised inside the flow reaches the user as one line (see `main`), without Prefect's
    traceback of it (that stays behind --debug).
    """
    import importlib

    module = importlib.import_module(f"saeembed_flows.{flow_name}")
    flow = getattr(module, f"{flow_name}_flow")
    from prefect.logging.configuration import setup_logging

    setup_logging()  # Prefect adds its handlers lazily; make them exist to filter the console one
    for handler in logging.getLogger().handlers:
        handler.addFilter(_HideFailures())
    _console_logs_to_current_stderr()
    return flow(db=db, **options.params(), **extra)


def _console_logs_to_current_stderr() -> None:
    """Point Prefect's console handlers at whatever sys.stderr is when they write: Prefect configures
    logging once per process, so a second command run in one process (tests, notebooks) would otherwise
    log to the stream the first one had, closed by then."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler) and not isinstance(handler.stream, _CurrentStderr):
                handler.addFilter(_HideFailures())
                with handler.lock:  # not setStream: it flushes the old stream, which may be closed
                    handler.stream = _CurrentStderr()
                    handler.console.file = handler.stream


class _CurrentStderr:
    """A text stream that writes to sys.stderr as it is at the time of writing."""

    @property
    def encoding(self) -> str:
        return getattr(sys.stderr, "encoding", None) or "utf-8"

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


class _HideFailures(logging.Filter):
    """Drop Prefect's log records about a failure (its traceback, "Finished in state Failed"): the CLI
    prints the failure as one line instead. With --debug they stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _Debug.enabled:
            return True
        if record.exc_info:
            return False
        message = record.getMessage()
        return "SaeembedError" not in message and "Finished in state Failed" not in message


def _emit(payload: Any, as_json: bool, render: Any) -> None:
    if as_json:
        print(json.dumps(payload, default=str, ensure_ascii=False))
    else:
        render()


def _table(rows: list[dict], columns: list[str], title: str | None = None) -> Table:
    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_label_text(row, column) if column in LABELS else _fmt(row.get(column)) for column in columns))
    return table


LABELS = {"label": "", "label_a": "_a", "label_b": "_b"}
"""Label columns of the listings, and the suffix of their label_source/peak_tokens columns."""


def _label_text(row: dict, column: str) -> str:
    """A label with, below it, where it was made and its score, and what the concept peaks on here."""
    from saeembed.concepts.provenance import label_note

    label, note = row.get(column) or "", label_note(row, LABELS[column])
    return f"{label}\n{note}" if note else label


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        # Whole units for rates and durations, three significant digits for scores; ints (ids) stay as they are.
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return "" if value is None else str(value)


def _summary(title: str, values: dict) -> None:
    stdout.print(_table([{"field": k, "value": v} for k, v in values.items()], ["field", "value"], title))


# -- long jobs (Prefect flows) -----------------------------------------------------------------


@app.command()
def ingest(
    path: Annotated[
        str,
        typer.Argument(help=".parquet/.csv/.jsonl file, a glob of them (quoted), a folder of .txt, or a .duckdb file"),
    ],
    corpus: Annotated[str, typer.Option("--corpus", help="Corpus name (created if new).")],
    text_col: Annotated[str, typer.Option("--text-col", help="Column holding the text.")] = "text",
    id_col: Annotated[
        str | None, typer.Option("--id-col", help="Column holding your ids (default: 'id' when present).")
    ] = None,
    table: Annotated[str | None, typer.Option("--table", help="With a .duckdb file: the table to read.")] = None,
    on_bad_line: Annotated[
        str, typer.Option("--on-bad-line", help="A JSONL line that is not JSON: error (stop) | skip (report).")
    ] = "error",
    on_duplicate_id: Annotated[
        str,
        typer.Option(
            "--on-duplicate-id", help="An id that repeats with another text: keep (both) | first | last | error."
        ),
    ] = "keep",
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add documents to a corpus; other columns become metadata (SQL: meta->>'column'). Rows already stored
    are skipped, so a scheduled ingest of a growing source adds only the new ones."""
    from saeembed.options import IngestOptions
    from saeembed.preflight import check_database
    from saeembed.storage.sources import check_source

    options = IngestOptions.pick(locals())
    check_source(options.path, text_col=options.text_col, id_col=options.id_col, table=options.table)
    check_database(_db(db), writes=True, creates=True)
    report = _run_flow("ingest", _db(db), options)
    _emit(report, as_json, lambda: _summary(f"ingest → {corpus}", report))
    _ingest_warnings(report)


def _ingest_warnings(report: dict) -> None:
    """One line on stderr for each kind of row that was not stored as it was read."""
    notes = [
        (report["skipped_empty"], "rows with an empty text", report["empty_examples"]),
        (report["skipped_bad_line"], "lines that are not JSON objects", report["bad_line_examples"]),
    ]
    for count, what, examples in notes:
        if count:
            stderr.print(f"skipped {count} {what} (e.g. {', '.join(examples)})", highlight=False, markup=False)
    if report["duplicate_ids"]:
        ids = ", ".join(report["duplicate_id_examples"])
        fate = f"skipped {report['skipped_duplicate_id']}" if report["skipped_duplicate_id"] else "kept all"
        stderr.print(
            f"warning: {report['duplicate_ids']} rows repeat an earlier row's id with another text ({fate}; "
            f"e.g. {ids}; --on-duplicate-id first|last|error decides)",
            highlight=False,
            markup=False,
        )
    if report["replaced_surrogates"]:
        stderr.print(
            f"warning: {report['replaced_surrogates']} rows held unpaired UTF-16 surrogates (JSON \\ud800-style "
            "escapes), stored as U+FFFD",
            highlight=False,
            markup=False,
        )


@app.command()
def embed(
    corpus: Annotated[str, typer.Option("--corpus", help="Corpus to embed.")],
    sae: Annotated[str, typer.Option("--sae", help="'default' or an SAE checkpoint folder/file.")] = "default",
    reader: Annotated[
        str | None, typer.Option("--reader", help="Reader LLM: hub id, folder or .gguf (default: the SAE's).")
    ] = None,
    layer: Annotated[int | None, typer.Option("--layer", help="Layer to read (default: the SAE's).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Documents per forward pass.")] = 32,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Tokens read per document.")] = 512,
    chat_template: Annotated[
        bool,
        typer.Option("--chat-template/--no-chat-template", help="Read each document as an assistant turn."),
    ] = True,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    shard_docs: Annotated[
        int,
        typer.Option(
            "--shard-docs", help="Documents per stored shard and per task (fewer files read faster; a kill loses one)."
        ),
    ] = 1024,
    workers: Annotated[
        int, typer.Option("--workers", help="Embed on a local Dask cluster of this many worker processes.")
    ] = 1,
    dask_address: Annotated[
        str | None, typer.Option("--dask-address", help="Embed on the Dask cluster at tcp://HOST:PORT.")
    ] = None,
    unit: Annotated[
        str,
        typer.Option(
            "--unit",
            help="document | sentence | paragraph | chunk:N: one vector per unit (documents still read whole), "
            "into corpus CORPUS:UNIT.",
        ),
    ] = "document",
    label: Annotated[
        bool, typer.Option("--label", help="Then give the embedded corpus token labels of its own, if small.")
    ] = False,
    label_max_docs: LabelMaxDocsOption = 20_000,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Embed the corpus's not-yet-embedded documents, or their units (a rerun resumes where a killed one stopped)."""
    from saeembed.options import EmbedJobOptions
    from saeembed.preflight import check_corpora, check_database, check_reader, check_sae

    options = EmbedJobOptions.pick(locals())
    check_sae(options.sae)
    check_reader(options.reader)
    check_database(_db(db), writes=True)
    check_corpora(_db(db), [options.corpus], embedded=False)
    summary = _run_flow("embed", _db(db), options, show_progress=not as_json)
    _emit(summary, as_json, lambda: _summary(f"embed {summary['corpus']}", summary))
    _warn_unlabelled(summary.get("labels"))


def _warn_unlabelled(labels: dict | None) -> None:
    """The one-line warning of a flow that did not label the corpus it brought in."""
    if labels is not None and labels["warning"]:
        stderr.print(f"warning: {labels['warning']}", highlight=False)


@app.command("train-sae")
def train_sae(
    corpus: Annotated[str, typer.Option("--corpus", help="Corpus whose activations train the SAE.")],
    layer: Annotated[int, typer.Option("--layer", help="Reader layer whose output the SAE reads.")],
    out: Annotated[Path, typer.Option("--out", help="New folder for the SAE (cfg.json + sae.safetensors).")],
    latents: Annotated[int, typer.Option("--latents", help="Number of latents.")] = 8192,
    k: Annotated[int, typer.Option("--k", help="Active latents per token (TopK; ITDA: matching-pursuit steps).")] = 32,
    arch: Annotated[
        str, typer.Option("--arch", help="topk (a trained SAE) or itda (a dictionary of activations).")
    ] = "topk",
    atoms: Annotated[int | None, typer.Option("--atoms", help="With --arch itda: atoms (default: --latents).")] = None,
    unit: Annotated[
        str,
        typer.Option(
            "--unit",
            help="token (default) | sentence | paragraph | chunk:N | document: train on each unit's mean "
            "activation (step-level SAE; it embeds units of that kind).",
        ),
    ] = "token",
    reader: Annotated[str, typer.Option("--reader", help="Reader LLM.")] = "smollm2-135m-instruct",
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Tokens read per document.")] = 128,
    train_tokens: Annotated[int, typer.Option("--train-tokens", help="Training tokens to collect.")] = 2_000_000,
    heldout_docs: Annotated[int, typer.Option("--heldout-docs", help="Documents held out for the report.")] = 500,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Tokens per optimisation step.")] = 4096,
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the training tokens.")] = 1,
    lr: Annotated[
        float | None, typer.Option("--lr", help="Adam learning rate (default: 2e-4/sqrt(latents/2^14)).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Train a TopK SAE with the AuxK loss, or build an ITDA dictionary; report held-out FVU, L0 and dead latents."""
    from saeembed.options import TrainSaeOptions
    from saeembed.preflight import check_corpora, check_database, check_reader

    options = TrainSaeOptions.pick(locals())
    check_reader(options.reader)
    check_database(_db(db), writes=False)
    check_corpora(_db(db), [options.corpus], embedded=False)
    report = _run_flow("train_sae", _db(db), options, show_progress=not as_json)
    _emit(report, as_json, lambda: _summary("train-sae", report))


@app.command()
def label(
    corpus: Annotated[str, typer.Option("--corpus", help="Corpus whose documents the labels are made from.")],
    method: Annotated[str, typer.Option("--method", help="tokens (offline, fast) | llm")] = "tokens",
    features: Annotated[str, typer.Option("--features", help="all | top:N | ID,ID,…")] = "all",
    force: Annotated[bool, typer.Option("--force", help="Relabel concepts that already have a label.")] = False,
    llm_local: LlmLocalOption = None,
    llm_base_url: LlmBaseUrlOption = None,
    llm_model: LlmModelOption = None,
    llm_api_key_env: LlmKeyOption = "OPENAI_API_KEY",
    llm_timeout: LlmTimeoutOption = 60.0,
    concurrency: Annotated[int, typer.Option("--concurrency", help="LLM requests in flight.")] = 4,
    from_matches: Annotated[
        int | None,
        typer.Option("--from-matches", help="A concept matching's analysis id: carry run A's labels to run B."),
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Label concepts and score each label (offline AUROC; LLM judge detection with --method llm), or carry
    labels across a concept matching."""
    from saeembed.options import LabelOptions
    from saeembed.preflight import check_corpora, check_database

    options = LabelOptions.pick(locals())
    check_database(_db(db), writes=True)
    check_corpora(_db(db), [options.corpus], embedded=True)
    _check_llm_endpoint(options)
    summary = _run_flow("label", _db(db), options, show_progress=not as_json)
    shown = {**summary, "failures": ", ".join(f"{why}: {n}" for why, n in summary["failures"].items()) or "none"}
    _emit(summary, as_json, lambda: _summary(f"label {corpus}", shown))
    if summary["failed"]:
        stderr.print(
            f"warning: {summary['failed']} concepts not labelled ({shown['failures']}), "
            f"e.g. {summary['first_failure']}",
            highlight=False,
            markup=False,
        )


@app.command("diff")
def diff_command(
    a: Annotated[str, typer.Argument(help="Corpus A (with --by: the corpus to split).")],
    b: Annotated[str | None, typer.Argument(help="Corpus B (may be A itself with --where-a/--where-b).")] = None,
    where_a: Annotated[
        str | None, typer.Option("--where-a", help="SQL predicate selecting A's documents, e.g. meta->>'model' = 'v2'")
    ] = None,
    where_b: Annotated[str | None, typer.Option("--where-b", help="SQL predicate selecting B's documents.")] = None,
    paired_on: Annotated[
        str | None, typer.Option("--paired-on", help="meta column pairing A's and B's documents (McNemar).")
    ] = None,
    by: Annotated[str | None, typer.Option("--by", help="meta column: each level against the rest of A.")] = None,
    where: Annotated[str | None, typer.Option("--where", help="With --by: predicate on A's documents.")] = None,
    min_delta: Annotated[float, typer.Option("--min-delta", help="Least |Δ| to report.")] = 0.03,
    top: Annotated[int, typer.Option("--top", help="Concepts to show.")] = 50,
    rank_by: Annotated[str, typer.Option("--rank-by", help="specific (default) | delta | q")] = "specific",
    presence_threshold: PresenceOption = 0.5,
    report: Annotated[Path | None, typer.Option("--report", help="Write a self-contained HTML report.")] = None,
    llm_local: LlmLocalOption = None,
    llm_base_url: LlmBaseUrlOption = None,
    llm_model: LlmModelOption = None,
    llm_api_key_env: LlmKeyOption = "OPENAI_API_KEY",
    llm_timeout: LlmTimeoutOption = 60.0,
    judged_per_side: Annotated[
        int, typer.Option("--judged-per-side", help="With an LLM: held-out documents per side to judge.")
    ] = 40,
    level: LevelOption = "document",
    unit: UnitOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Concepts whose frequency differs between A and B, with CIs and BH q-values (Prefect flow). With an
    LLM (--llm-local or --llm-base-url): ≤ 10 hypotheses drawn from them, verified on held-out documents."""
    from saeembed.options import DiffOptions
    from saeembed.preflight import check_corpora, check_database

    options = DiffOptions.pick(locals())
    check_database(_db(db), writes=True)
    corpora = [options.a] + ([options.b] if options.b else [])
    check_corpora(_db(db), corpora, embedded=True, level=options.level, unit=options.unit)
    _check_llm_endpoint(options)
    result = _run_flow("diff", _db(db), options)

    def render() -> None:
        stdout.print(
            f"analysis {result['analysis_id']} ({result['test']}): A {result['n_a']} vs B {result['n_b']} "
            + ("units" if options.level == "unit" else "documents")
            + (f"; report: {result['report']}" if result["report"] else "")
        )
        rows = [
            {**r, "ci": f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]", "delta": f"{r['delta']:+.3f}"}
            for r in result["rows"]
        ]
        columns = ["rank", "feature_id", "label", "freq_a", "freq_b", "delta", "ci", "q_value"]
        stdout.print(_table(rows, (["grp"] if by else []) + columns))
        if result["hypotheses"] is not None:
            columns = ["hypothesis_id", "hypothesis", "more_in", "freq_a", "freq_b", "q_value", "confirmed"]
            stdout.print(_table(result["hypotheses"], columns, title="hypotheses, judged on held-out documents"))

    _emit(result, as_json, render)


@app.command()
def correlate(
    corpus: Annotated[str, typer.Argument(help="Corpus whose concepts to mine.")],
    with_column: Annotated[
        str | None, typer.Option("--with-column", help="meta column the concepts should track.")
    ] = None,
    where: Annotated[str | None, typer.Option("--where", help="SQL predicate selecting the documents.")] = None,
    min_npmi: Annotated[float, typer.Option("--min-npmi", help="Least NPMI of a reported pair.")] = 0.6,
    max_label_sim: Annotated[
        float, typer.Option("--max-label-sim", help="Most label-embedding cosine of a reported pair.")
    ] = 0.2,
    min_count: Annotated[int, typer.Option("--min-count", help="Least documents with both concepts.")] = 5,
    max_same_token: Annotated[
        float,
        typer.Option("--max-same-token", help="Most share of co-occurrences where both peak on the same token."),
    ] = 0.5,
    top: Annotated[int, typer.Option("--top", help="Rows to show.")] = 50,
    report: Annotated[Path | None, typer.Option("--report", help="Write a self-contained HTML report.")] = None,
    level: LevelOption = "document",
    unit: UnitOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Concept pairs that go together (NPMI), or concepts that track a metadata column (Prefect flow)."""
    from saeembed.options import CorrelateOptions
    from saeembed.preflight import check_corpora, check_database

    options = CorrelateOptions.pick(locals())
    check_database(_db(db), writes=True)
    check_corpora(_db(db), [options.corpus], embedded=True, level=options.level, unit=options.unit)
    result = _run_flow("correlate", _db(db), options)

    def render() -> None:
        rows = next((v for v in result.values() if isinstance(v, list)), [])
        stdout.print(f"analysis {result.get('analysis_id')}: {len(rows)} rows")
        if with_column is None:
            columns = ["feature_a", "label_a", "feature_b", "label_b", "n_ab", "p_b_given_a", "p_a_given_b", "npmi"]
        else:
            columns = ["feature_id", "label", "level", "statistic", "test", "q_value"]
        present = [c for c in columns if rows and c in rows[0]]
        stdout.print(_table(rows, present))

    _emit(result, as_json, render)


@app.command()
def cluster(
    corpus: Annotated[str, typer.Argument(help="Corpus whose documents to cluster.")],
    about: Annotated[
        str | None, typer.Option("--about", help='The axis to cluster along, e.g. "tone" or "complaints".')
    ] = None,
    concepts: Annotated[str | None, typer.Option("--concepts", help="ID,ID,… concepts to cluster on instead.")] = None,
    method: Annotated[str, typer.Option("--method", help="hdbscan (no k needed) | spectral (needs --k)")] = "hdbscan",
    k: Annotated[int | None, typer.Option("--k", help="Clusters, for spectral.")] = None,
    min_cluster_size: Annotated[
        int | None, typer.Option("--min-cluster-size", help="HDBSCAN's smallest cluster (default: from the size).")
    ] = None,
    n_concepts: Annotated[int, typer.Option("--n-concepts", help="With --about: concepts to select.")] = 20,
    where: Annotated[str | None, typer.Option("--where", help="SQL predicate selecting the documents.")] = None,
    dense: Annotated[
        bool, typer.Option("--dense", help="Cluster the same documents on all-MiniLM-L6-v2 embeddings instead.")
    ] = False,
    report: Annotated[Path | None, typer.Option("--report", help="Write a self-contained HTML report.")] = None,
    llm_local: LlmLocalOption = None,
    llm_base_url: LlmBaseUrlOption = None,
    llm_model: LlmModelOption = None,
    llm_api_key_env: LlmKeyOption = "OPENAI_API_KEY",
    llm_timeout: LlmTimeoutOption = 60.0,
    level: LevelOption = "document",
    unit: UnitOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cluster documents along an axis you name: only the concepts about it count (Jaccard; HDBSCAN or
    spectral), or dense embeddings for comparison (Prefect flow)."""
    from saeembed.options import ClusterOptions, parse_concept_ids
    from saeembed.preflight import check_corpora, check_database

    parsed = parse_concept_ids(concepts, "--concepts") if concepts is not None else None
    options = ClusterOptions.pick({**locals(), "concepts": parsed})
    check_database(_db(db), writes=True)
    check_corpora(_db(db), [options.corpus], embedded=True, level=options.level, unit=options.unit)
    _check_llm_endpoint(options)
    result = _run_flow("cluster", _db(db), options)

    def render() -> None:
        from saeembed.concepts.provenance import concept_name

        stdout.print(
            f"analysis {result['analysis_id']}: {result['method']} on {result['representation']}, "
            f"{result['n_clusters']} clusters; {result['n_without_concepts']} of {result['n_docs']} documents "
            "have none of the selected concepts" + (f"; report: {result['report']}" if result["report"] else ""),
            highlight=False,
        )
        if result["keyphrases"]:
            stdout.print(f"keyphrases from the LLM: {'; '.join(result['keyphrases'])}", highlight=False)
        rows = [
            {
                "cluster": "noise" if r["cluster"] == -1 else r["cluster"],
                "size": r["size"],
                "top concepts": "; ".join(concept_name(c) for c in r["top_concepts"][:3]),
                "typical document": ((r["typical_docs"] or [{}])[0].get("text") or "")[:100],
            }
            for r in result["summaries"]
        ]
        stdout.print(_table(rows, ["cluster", "size", "top concepts", "typical document"]))

    _emit(result, as_json, render)


@app.command("compare-releases")
def compare_releases_command(
    source: Annotated[
        str,
        typer.Argument(
            help="Table of prompt_id, prompt, model, release, released_at, response (.parquet/.csv/.jsonl), "
            "'example' for the bundled one, or 'none' to compare what --corpus holds."
        ),
    ] = "example",
    corpus: Annotated[str, typer.Option("--corpus", help="Corpus the responses go to.")] = "releases",
    baseline: Annotated[
        str | None, typer.Option("--baseline", help="Release every other is compared with (default: the first).")
    ] = None,
    sae: Annotated[str, typer.Option("--sae", help="default | folder of an SAE.")] = "default",
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Tokens read per response.")] = 256,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    min_delta: Annotated[float, typer.Option("--min-delta", help="Least |Δ| to report.")] = 0.03,
    top: Annotated[int, typer.Option("--top", help="Concepts per comparison.")] = 10,
    presence_threshold: PresenceOption = 0.5,
    report: Annotated[Path | None, typer.Option("--report", help="Write a self-contained HTML report.")] = None,
    label: Annotated[
        bool,
        typer.Option("--label/--no-label", help="Give the corpus token labels of its own first, if small."),
    ] = True,
    label_max_docs: LabelMaxDocsOption = 20_000,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Compare releases answering the same prompts: paired diffs against the previous release and a baseline
    (Prefect flow: ingest, embed, diffs, report)."""
    from saeembed.options import CompareReleasesOptions
    from saeembed.preflight import check_corpora, check_database, check_sae

    options = CompareReleasesOptions.pick({**locals(), "source": None if source.lower() == "none" else source})
    check_sae(options.sae)
    if options.source not in (None, "example") and not Path(options.source).expanduser().exists():
        raise SaeembedError(f"no releases table at {options.source}")
    check_database(_db(db), writes=True, creates=options.source is not None)
    if options.source is None:
        check_corpora(_db(db), [options.corpus], embedded=False)
    result = _run_flow("compare_releases", _db(db), options, show_progress=not as_json)

    def render() -> None:
        stdout.print(
            f"analysis {result['analysis_id']}: {result['embedded']} responses newly embedded"
            + (f"; report: {result['report']}" if result["report"] else "")
        )
        columns = ["model", "release", "against", "against_kind", "pairs", "rising", "falling"]
        stdout.print(_table(result["steps"], columns, title="paired diffs (significant concepts, q < 0.05)"))
        rows = [{**r, "delta": f"{r['delta']:+.3f}"} for r in result["changes"] if r["rank"] <= 3]
        columns = ["release", "against", "rank", "feature_id", "label", "freq_a", "freq_b", "delta", "q_value"]
        stdout.print(_table(rows, columns, title="top 3 concepts per comparison (freq_a: the newer release)"))

    _emit(result, as_json, render)
    _warn_unlabelled(result["labels"])


@app.command()
def explore(
    corpus: Annotated[str, typer.Argument(help="Corpus to map.")],
    about: Annotated[
        str | None, typer.Option("--about", help="Place the documents by the concepts about this text only.")
    ] = None,
    concepts: Annotated[
        str | None, typer.Option("--concepts", help="Place the documents by these concepts only: ID,ID,…")
    ] = None,
    dense: Annotated[
        bool, typer.Option("--dense", help="Place the documents by their dense embeddings (all-MiniLM-L6-v2).")
    ] = False,
    color_by: Annotated[
        str | None,
        typer.Option("--color-by", help="Colour the points by a meta column, cluster:ANALYSIS_ID or concept:ID."),
    ] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="The page to write (default: explore-CORPUS.html here).")
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """A map of the corpus's documents in one offline page: hover to read a document and its concepts, select
    points to list the concepts they have more than the rest, search labels to light up documents. No Prefect."""
    from saeembed.options import ExploreOptions, parse_concept_ids
    from saeembed.preflight import check_corpora, check_database

    parsed = parse_concept_ids(concepts, "--concepts") if concepts is not None else None
    options = ExploreOptions.pick({**locals(), "concepts": parsed})
    check_database(_db(db), writes=options.dense)  # --dense stores the documents' embeddings it makes
    check_corpora(_db(db), [options.corpus], embedded=True)
    from saeembed.analysis.explore import explore_map
    from saeembed.reports.explore import explore_page
    from saeembed.reports.html import write_report
    from saeembed.storage.store import Store

    with Store.open(_db(db), read_only=not options.dense) as store:
        found = explore_map(
            store,
            options.corpus,
            about=options.about,
            concepts=options.concepts,
            dense=options.dense,
            color_by=options.color_by,
        )
    page = explore_page(found)
    written = write_report(options.html, page)
    result = {
        "corpus": found.corpus,
        "run_id": found.run_id,
        "representation": found.representation,
        "color_by": found.color_by,
        "points": found.points.height,
        "unmapped": found.n_unmapped,
        "html": str(written),
        "bytes": len(page.encode()),
    }
    _emit(
        result,
        as_json,
        lambda: stdout.print(
            f"{written}: {result['points']:,} documents placed by UMAP of {found.representation}"
            + (f" ({found.n_unmapped:,} without those concepts, left off)" if found.n_unmapped else "")
            + f", {result['bytes'] / 1e6:.1f} MB; open it in a browser (it needs no network)",
            highlight=False,
        ),
    )


@app.command("search-index")
def search_index(
    corpus: Annotated[str, typer.Option("--corpus", help="Corpus whose search indexes to build.")],
    flat_below: Annotated[
        int, typer.Option("--flat-below", help="Documents below which the dense index is flat (else IVF).")
    ] = 50_000,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Build what `saeembed search` reads (Prefect flow): the dense FAISS index of the corpus's documents
    (all-MiniLM-L6-v2) and the concept-major cache of its latest run. Search builds them when missing too."""
    from saeembed.options import SearchIndexOptions
    from saeembed.preflight import check_corpora, check_database

    options = SearchIndexOptions(corpus=corpus, flat_below=flat_below)
    check_database(_db(db), writes=True)
    check_corpora(_db(db), [options.corpus], embedded=False)
    summary = _run_flow("search_index", _db(db), options, show_progress=not as_json)
    _emit(summary, as_json, lambda: _summary(f"search-index {corpus}", summary))


@app.command()
def serve(
    project: Annotated[Path, typer.Option("--project", help="The Prefect project file.")] = Path("prefect.yaml"),
    only: Annotated[str | None, typer.Option("--only", help="NAME,NAME,… deployments to serve (default: all).")] = None,
    db: Annotated[
        Path | None, typer.Option("--db", help="DuckDB file every flow uses (default: each deployment's own).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="Flow runs at once (DuckDB has one writer).")] = 1,
) -> None:
    """Serve prefect.yaml's deployments from this machine (Prefect's serve: schedules run, the UI can trigger
    runs). Needs a Prefect server: `prefect server start`, and PREFECT_API_URL pointing at it."""
    from saeembed.options import ServeOptions

    names = tuple(name.strip() for name in only.split(",") if name.strip()) if only is not None else None
    options = ServeOptions(project=str(project), only=names, limit=limit)
    if not project.exists():
        raise SaeembedError(f"no Prefect project file at {project}: run from the repository or pass --project")
    if db is not None and not db.parent.exists():
        raise SaeembedError(f"cannot use database {db}: folder {db.parent} does not exist")
    from saeembed_flows.serve import serve_project

    serve_project(
        Path(options.project),
        only=list(options.only) if options.only else None,
        db=str(db) if db else None,
        limit=options.limit,
    )


@app.command()
def demo(
    db: DbOption = None,
    n_docs: Annotated[int, typer.Option("--n-docs", help="News articles in the demo corpus.")] = 3000,
    as_json: JsonOption = False,
) -> None:
    """Ingest a bundled AG News sample and embed it with the default reader and SAE."""
    from saeembed.options import DemoOptions
    from saeembed.preflight import check_database

    options = DemoOptions(n_docs=n_docs)
    check_database(_db(db), writes=True, creates=True)
    result = _run_flow("demo", _db(db), options, show_progress=not as_json)
    _emit(result, as_json, lambda: _print_demo(result))


def _print_demo(result: dict) -> None:
    _summary("saeembed demo", {k: v for k, v in result.items() if k not in ("example_sql", "example_sql_file")})
    stdout.print("\nTry it (also while a flow writes; any DuckDB client reads the file too):", style="bold")
    stdout.print(f"  saeembed sql --db {result['db']} --file {result['example_sql_file']}\n", highlight=False)
    stdout.print(result["example_sql"], highlight=False, soft_wrap=True)


# -- look-ups (library only, no Prefect) ---------------------------------------------------------


@app.command()
def search(
    query: Annotated[
        str | None, typer.Argument(help='The property to find, e.g. "negative review" or "refuses to answer".')
    ] = None,
    like: Annotated[
        str | None,
        typer.Option("--like", help="Instead of QUERY: ids of documents that have the property, e.g. 12,40,97."),
    ] = None,
    unlike: Annotated[
        str | None, typer.Option("--unlike", help="With --like: ids of documents that do not have it.")
    ] = None,
    corpus: Annotated[str | None, typer.Option("--corpus", help="Corpus to search (default: the only one).")] = None,
    mode: Annotated[str, typer.Option("--mode", help="sae | dense | fused")] = "sae",
    top: Annotated[int, typer.Option("--top", help="Documents to return.")] = 20,
    n_concepts: Annotated[int, typer.Option("--concepts", help="sae/fused: concepts the query is mapped to.")] = 60,
    temperature: Annotated[float, typer.Option("--temperature", help="sae/fused: T in w_r = exp(-r/(k·T)).")] = 0.2,
    exemplar_weight: Annotated[
        float,
        typer.Option(
            "--exemplar-weight",
            help="sae/fused: share of a concept's closeness to the query from its strongest documents' mean "
            "embedding; the rest from its label (0: labels only, the paper's).",
        ),
    ] = 0.5,
    where: Annotated[str | None, typer.Option("--where", help="SQL predicate selecting the documents.")] = None,
    llm_local: LlmLocalOption = None,
    llm_base_url: LlmBaseUrlOption = None,
    llm_model: LlmModelOption = None,
    llm_api_key_env: LlmKeyOption = "OPENAI_API_KEY",
    llm_timeout: LlmTimeoutOption = 60.0,
    level: LevelOption = "document",
    unit: UnitOption = None,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="Write an HTML page of the results (units marked in their documents)."),
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Documents that have a property: concepts whose labels and strongest documents match it (sae), a dense
    FAISS index (dense), or both fused by reciprocal rank (fused). No Prefect. With an LLM, it picks the
    concepts. With --like, documents like the examples: the concepts they share more than the corpus does."""
    from saeembed.options import SearchOptions, parse_doc_ids
    from saeembed.preflight import check_corpora, check_database

    examples = {
        name: None if ids is None else parse_doc_ids(ids, f"--{name}")
        for name, ids in (("like", like), ("unlike", unlike))
    }
    options = SearchOptions.pick({**locals(), **examples})
    check_database(_db(db), writes=True)
    if options.corpus is not None:
        check_corpora(_db(db), [options.corpus], embedded=True, level=options.level, unit=options.unit)
    _check_llm_endpoint(options)
    import polars as pl

    from saeembed.analysis.lookup import only_corpus
    from saeembed.analysis.retrieve import search_documents, search_like
    from saeembed.concepts.llm import chat_backend
    from saeembed.storage.store import Store

    with Store.open(_db(db)) as store:
        searched = store.corpus_at_level(options.corpus or only_corpus(store), options.level, options.unit)
        if options.like is not None:
            result = search_like(
                store,
                options.like,
                unlike=options.unlike,
                corpus=searched,
                mode=options.mode,
                top=options.top,
                n_concepts=options.n_concepts,
                temperature=options.temperature,
                where=options.where,
            )
        else:
            chat = chat_backend(store, llm_local, llm_base_url, llm_model, llm_api_key_env, timeout=options.llm_timeout)
            result = search_documents(
                store,
                options.query,
                corpus=searched,
                mode=options.mode,
                top=options.top,
                n_concepts=options.n_concepts,
                temperature=options.temperature,
                exemplar_weight=options.exemplar_weight,
                where=options.where,
                chat=chat,
            )
        if options.report is not None:
            from saeembed.reports.html import write_report
            from saeembed.reports.pages import analysis_report

            write_report(options.report, analysis_report(store, result.analysis_id)[1])
    payload = {k: v.to_dicts() if isinstance(v, pl.DataFrame) else v for k, v in result._asdict().items()}
    payload["report"] = options.report

    def render() -> None:
        facts = [f"analysis {result.analysis_id}", f"mode {result.mode}", f"{result.seconds * 1000:.0f} ms"]
        if result.index:
            facts.append(f"dense index: {result.index}")
        if result.confidence:
            facts.append(f"confidence: {result.confidence}")
        stdout.print(", ".join(facts), highlight=False)
        if result.message:
            stdout.print(result.message, style="yellow", highlight=False)
        if result.mode != "dense" and result.concepts.height and options.like is not None:
            columns = ["rank", "feature_id", "label", "why", "weight"]
            title = "concepts the examples share more than the rest"
            stdout.print(_table(result.concepts.head(10).to_dicts(), columns, title=title))
        elif result.mode != "dense" and result.concepts.height:
            columns = ["rank", "feature_id", "label", "similarity", "weight", "p90"]
            stdout.print(_table(result.concepts.head(10).to_dicts(), columns, title="concepts the query maps to"))
        rows = [
            {
                **r,
                "matched": ", ".join(str(c["feature_id"]) for c in (r["concepts"] or [])[:5]),
                "snippet": (r["snippet"] or "")[:160],
                "in document": _around_mark(r["in_document"] or ""),
            }
            for r in result.documents.to_dicts()
        ]
        if result.documents["parent_doc_id"].is_null().all():
            stdout.print(_table(rows, ["rank", "doc_id", "score", "matched", "snippet"], title="documents"))
        else:
            columns = ["rank", "doc_id", "parent_doc_id", "score", "matched", "in document"]
            stdout.print(_table(rows, columns, title="units, «marked» in their documents"))
        if options.report is not None:
            stdout.print(f"report: {options.report}", highlight=False)

    _emit(payload, as_json, render)


def _around_mark(text: str, width: int = 240) -> str:
    """A window of `text` of about `width` characters that shows its «marked» span from the start."""
    start = max(0, text.find("«") - width // 4)
    return ("…" if start else "") + text[start : start + width] + ("…" if start + width < len(text) else "")


@app.command()
def history(
    analysis: Annotated[str, typer.Argument(help="Analysis id, or a kind (diff, correlate, cluster) for its latest.")],
    concepts: Annotated[
        str | None, typer.Option("--concepts", help="ID,ID,… concepts to follow (default: the latest run's top).")
    ] = None,
    top: Annotated[int, typer.Option("--top", help="Concepts (pairs) to follow from the latest run.")] = 10,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """How an analysis's results moved across its runs (same kind and parameters): Δ, NPMI or cluster shares."""
    from saeembed.analysis.history import analysis_history
    from saeembed.options import HistoryOptions, parse_concept_ids
    from saeembed.storage.store import Store

    followed = parse_concept_ids(concepts, "--concepts") if concepts is not None else None
    options = HistoryOptions(analysis=analysis, concepts=followed, top=top)
    with Store.open(_db(db), read_only=True) as store:
        found = analysis_history(
            store, options.analysis, concepts=list(options.concepts) if options.concepts else None, top=options.top
        )
    payload = {
        "kind": found.kind,
        "params": found.params,
        "runs": found.runs.to_dicts(),
        "series": found.series.to_dicts(),
    }

    def render() -> None:
        stdout.print(f"{found.kind} {json.dumps(found.params)}: {found.runs.height} runs", highlight=False)
        stdout.print(_table(found.runs.to_dicts(), ["analysis_id", "created_at", "seconds", "inputs"]))
        value, keys = {
            "diff": ("delta", ["feature_id", "label"]),
            "correlate": ("npmi", ["feature_a", "feature_b"]),
            "cluster": ("share", ["cluster"]),
        }[found.kind]
        if found.series.height == 0:
            stdout.print("no results to follow")
            return
        wide = found.series.pivot(on="analysis_id", index=keys, values=value, aggregate_function="first")
        run_columns = [str(i) for i in found.runs["analysis_id"].to_list() if str(i) in wide.columns]
        title = f"{value} per run (columns: analysis ids)"
        stdout.print(_table(wide.to_dicts(), [*keys, *run_columns], title=title))

    _emit(payload, as_json, render)


def _check_llm_endpoint(options: Any) -> None:
    """One cheap request to the LLM endpoint (or a look for the local model) before Prefect starts or any
    model loads: an unreachable, slow or misconfigured LLM is reported in seconds."""
    if options.llm_base_url is not None:
        from saeembed.concepts.llm import check_endpoint

        check_endpoint(
            options.llm_base_url,
            options.llm_model,
            api_key_env=options.llm_api_key_env,
            timeout=min(options.llm_timeout, 10.0),
        )
    elif options.llm_local is not None:
        from saeembed.model.hub import resolve_reader

        resolve_reader(options.llm_local)


@app.command()
def report(
    analysis: Annotated[str, typer.Argument(help="Analysis id, or a kind (diff, correlate, …) for its latest.")],
    html: Annotated[Path, typer.Option("--html", help="Where to write the self-contained HTML page.")],
    concept_pages: Annotated[
        bool,
        typer.Option(
            "--concept-pages",
            help="Also write a page for every concept the report lists (FILE-concepts/ID.html; loads the model) "
            "and link each listed concept to it.",
        ),
    ] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write the HTML report of a stored analysis (tables, charts, marked examples; no external resources)."""
    from saeembed.options import ReportOptions
    from saeembed.reports.pages import analysis_report, write_concept_pages
    from saeembed.storage.store import Store

    options = ReportOptions(analysis=analysis, html=str(html), concept_pages=concept_pages)
    folder = html.with_name(f"{html.stem}-concepts")
    with Store.open(_db(db), read_only=True) as store:
        analysis_id, page = analysis_report(store, options.analysis)
        if options.concept_pages:
            page, listed = write_concept_pages(store, analysis_id, page, folder)
    html.write_text(page, encoding="utf-8")
    payload = {"analysis_id": analysis_id, "html": str(html.resolve()), "bytes": len(page)}
    if options.concept_pages:
        payload |= {"concept_pages": str(folder.resolve()), "concepts": listed}
    _emit(payload, as_json, lambda: stdout.print(f"analysis {analysis_id}: wrote {html} ({len(page):,} bytes)"))


@app.command()
def sql(
    query: Annotated[
        str | None, typer.Argument(help="One query (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN).")
    ] = None,
    file: Annotated[Path | None, typer.Option("--file", help="Read the query from this file instead.")] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print the rows as CSV.")] = False,
    limit: Annotated[int, typer.Option("--limit", help="Rows shown in the table (--json and --csv print all).")] = 50,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Your own SQL, read-only: answers at once, also while a flow writes (no Prefect)."""
    import polars as pl

    from saeembed.options import SqlOptions
    from saeembed.storage.user_sql import run_query

    options = SqlOptions(query=query, file=None if file is None else str(file), csv=as_csv, json=as_json, limit=limit)
    rows = pl.from_arrow(run_query(_db(db), options.query))
    if as_csv:
        sys.stdout.write(rows.write_csv())
        return
    _emit(rows.to_dicts(), as_json, lambda: _print_rows(rows, options.limit))


def _print_rows(rows: pl.DataFrame, limit: int) -> None:
    stdout.print(_table(rows.head(limit).to_dicts(), rows.columns))
    if rows.height > limit:
        stdout.print(f"… {rows.height - limit:,} more rows (--limit N, or --csv / --json for all)", highlight=False)


@docs_app.command("show")
def docs_show(
    doc_id: Annotated[int, typer.Argument(help="doc_id from the documents table.")],
    top: Annotated[int, typer.Option("--top", help="Concepts to show.")] = 20,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """A document with its strongest concepts and the token where each fired («marked»)."""
    from saeembed.analysis.lookup import show_document
    from saeembed.options import DocsShowOptions
    from saeembed.storage.store import Store

    options = DocsShowOptions(doc_id=doc_id, top=top)
    with Store.open(_db(db), read_only=True) as store:
        view = show_document(store, options.doc_id, top=options.top)
    payload = {**view._asdict(), "concepts": view.concepts.to_dicts(), "units": view.units.to_dicts()}

    def render() -> None:
        stdout.print(
            Text.assemble(
                (f"doc {view.doc_id}", "bold"),
                f" ({view.external_id}) in {view.corpus}, run {view.run_id}: "
                f"{view.n_tokens} tokens{' (truncated)' if view.truncated else ''}",
            )
        )
        if view.meta:
            stdout.print(f"meta: {view.meta}", highlight=False)
        if view.parent_doc_id is not None:
            stdout.print(f"a unit of doc {view.parent_doc_id}, «marked» in it:", highlight=False)
            stdout.print(view.in_document, highlight=False, markup=False)
        else:
            stdout.print(view.text, highlight=False, markup=False)
        columns = ["feature_id", "label", "max_act", "n_active_tokens", "freq", "context"]
        stdout.print(_table(view.concepts.to_dicts(), columns))
        if view.units.height:
            rows = [{**r, "text": r["text"].strip()[:100]} for r in view.units.to_dicts()]
            columns = ["unit_corpus", "unit_index", "doc_id", "text", "concepts"]
            stdout.print(_table(rows, columns, title="units, with their strongest concepts «where they peak»"))

    _emit(payload, as_json, render)


@concepts_app.command("top")
def concepts_top(
    corpus: Annotated[str, typer.Option("--corpus", help="Corpus (its latest embedding run).")],
    top: Annotated[int, typer.Option("--top", help="Concepts to list.")] = 20,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """The corpus's most frequent concepts, with the tokens where they peak."""
    from saeembed.analysis.lookup import top_concepts
    from saeembed.options import ConceptsTopOptions
    from saeembed.storage.store import Store

    options = ConceptsTopOptions(corpus=corpus, top=top)
    with Store.open(_db(db), read_only=True) as store:
        frame = top_concepts(store, options.corpus, top=options.top)
    rows = frame.to_dicts()
    _emit(
        rows,
        as_json,
        lambda: stdout.print(
            _table(
                rows,
                ["feature_id", "label", "n_docs", "freq", "mean_max_act", "top_tokens"],
                f"top concepts in {corpus}",
            )
        ),
    )


@concepts_app.command("show")
def concepts_show(
    feature_id: Annotated[int, typer.Argument(help="Concept id (SAE latent index).")],
    corpus: Annotated[str | None, typer.Option("--corpus", help="Corpus (default: the only embedded one).")] = None,
    top: Annotated[int, typer.Option("--top", help="Top documents to show.")] = 10,
    all_tokens: Annotated[
        bool, typer.Option("--all-tokens", help="Re-read the documents to mark every firing token (loads the model).")
    ] = False,
    html: Annotated[
        Path | None,
        typer.Option("--html", help="Write the concept's page (every firing token marked; loads the model)."),
    ] = None,
    by: Annotated[
        str | None,
        typer.Option("--by", help="With --html: the page shows the concept's frequency by this meta column."),
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """A concept's label and scores, and its top documents with the firing tokens «marked»; with --html, its
    page (activation histogram, documents without it, the concepts it fires with, frequency by a column)."""
    from saeembed.analysis.lookup import concept_profile, show_concept
    from saeembed.options import ConceptsShowOptions
    from saeembed.storage.store import Store

    options = ConceptsShowOptions(
        feature_id=feature_id, corpus=corpus, top=top, all_tokens=all_tokens, html=html, by=by
    )
    profile = None
    with Store.open(_db(db), read_only=True) as store:
        if options.html is not None:
            profile = concept_profile(store, options.feature_id, corpus=options.corpus, top=options.top, by=options.by)
            view = profile.view
        else:
            view = show_concept(
                store, options.feature_id, corpus=options.corpus, top=options.top, all_tokens=options.all_tokens
            )
    payload = {**view._asdict(), "labels": view.labels.to_dicts(), "documents": view.documents.to_dicts()}
    if profile is not None:
        from saeembed.reports.concept import concept_report
        from saeembed.reports.html import write_report

        written = write_report(options.html, concept_report(profile))
        payload |= {
            "html": str(written),
            "histogram": profile.histogram.to_dicts(),
            "cooccurring": profile.cooccurring.to_dicts(),
            "by_column": None if profile.by_column is None else profile.by_column.to_dicts(),
        }

    def render() -> None:
        current = view.labels.head(1).to_dicts()
        title = f"concept {view.feature_id}"
        if current:
            title += f": {current[0]['label']}"
        stdout.print(Text(title, style="bold"), highlight=False)
        stdout.print(f"present in {view.n_docs} of {view.corpus_docs} documents of {view.corpus} (run {view.run_id})")
        if view.labels.height:
            stdout.print(
                _table(
                    view.labels.to_dicts(),
                    ["method", "model", "label", "auroc", "detection", "created_at"],
                )
            )
            if current and current[0]["description"]:
                stdout.print(current[0]["description"], highlight=False, markup=False)
        else:
            stdout.print(f"no label yet: run `saeembed label --corpus {view.corpus}`")
        stdout.print(_table(view.documents.to_dicts(), ["rank", "doc_id", "max_act", "marked"]))
        if profile is not None:
            stdout.print(f"concept page: {payload['html']}", highlight=False)

    _emit(payload, as_json, render)


@concepts_app.command("search")
def concepts_search(
    query: Annotated[str, typer.Argument(help='What the concepts should be about, e.g. "sports".')],
    corpus: Annotated[str | None, typer.Option("--corpus", help="Corpus (default: the only embedded one).")] = None,
    top: Annotated[int, typer.Option("--top", help="Concepts to return.")] = 20,
    min_score: Annotated[
        float, typer.Option("--min-score", help="Least label score (AUROC) to return; 0 keeps unscored labels.")
    ] = 0.6,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Concepts whose labels are closest to QUERY (sentence embeddings, FAISS)."""
    from saeembed.analysis.lookup import only_corpus
    from saeembed.concepts.search import search_concepts
    from saeembed.options import ConceptsSearchOptions
    from saeembed.storage.store import Store

    options = ConceptsSearchOptions(query=query, corpus=corpus, top=top, min_score=min_score)
    with Store.open(_db(db), read_only=True) as store:
        name = options.corpus or only_corpus(store)
        frame = search_concepts(store, options.query, corpus=name, top=options.top, min_score=options.min_score)
    rows = frame.to_dicts()
    _emit(
        rows,
        as_json,
        lambda: stdout.print(
            _table(rows, ["feature_id", "label", "score", "similarity", "freq"], f"concepts about {query!r} in {name}")
        ),
    )


@concepts_app.command("match")
def concepts_match(
    run_a: Annotated[int, typer.Argument(help="Embedding run whose concepts to match.")],
    run_b: Annotated[int, typer.Argument(help="Embedding run to match them in (the same documents).")],
    method: Annotated[
        str, typer.Option("--method", help="correlation (of activations) or decoder (cosine; same reader and layer).")
    ] = "correlation",
    max_docs: Annotated[int, typer.Option("--max-docs", help="Shared documents to read (a seeded sample).")] = 20_000,
    top: Annotated[int, typer.Option("--top", help="Matches to show.")] = 20,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write an HTML page of the matched pairs, side by side.")
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Each concept of RUN_A with its closest concept of RUN_B, and how universal the two spaces are (Prefect flow)."""
    from saeembed.options import MatchOptions
    from saeembed.preflight import check_database, check_runs

    options = MatchOptions.pick(locals())
    check_database(_db(db), writes=True)
    check_runs(_db(db), [options.run_a, options.run_b])
    result = _run_flow("match", _db(db), options)

    def render() -> None:
        summary = result["summary"]
        stdout.print(
            f"analysis {result['analysis_id']}: {summary['n_concepts_a']} concepts of run {run_a} matched in run "
            f"{run_b} over {summary['n_docs']} shared documents ({method})"
        )
        stdout.print(
            f"matched (score ≥ 0.5): {summary['share_matched']:.1%}   mean best score: {summary['mean_best']:.3f}   "
            f"SVCCA: {_fmt(summary['svcca'])} (shuffled pairs: {_fmt(summary['svcca_reference'])})"
        )
        if summary["itda_jaccard"] is not None:
            stdout.print(f"Jaccard similarity of the two ITDA dictionaries' atoms: {summary['itda_jaccard']:.3f}")
        columns = ["feature_a", "label_a", "feature_b", "label_b", "score", "runner_up", "runner_up_score"]
        stdout.print(_table(result["matches"], columns, "best matches"))
        if result["report"]:
            stdout.print(f"report: {result['report']}", highlight=False)

    _emit(result, as_json, render)


@corpora_app.command("list")
def corpora_list(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Corpora in the database with document and embedding counts."""
    from saeembed.storage.store import Store

    with Store.open(_db(db), read_only=True) as store:
        rows = store.rows("cli_corpora").to_dicts()
    _emit(rows, as_json, lambda: stdout.print(_table(rows, ["corpus", "documents", "source", "created_at"])))


@corpora_app.command("export")
def corpora_export(
    name: Annotated[str, typer.Argument(help="'demo' (AG News sample) or 'sae-training' (the default SAE's mix).")],
    out: Annotated[Path, typer.Option("--out", help="Parquet file to write.")],
    n_docs: Annotated[int | None, typer.Option("--n-docs", help="Rows to keep (default: all / 3000 for demo).")] = None,
) -> None:
    """Write a bundled offline corpus to Parquet, ready for `saeembed ingest`."""
    from saeembed.options import CorporaExportOptions
    from saeembed.storage.corpora import demo_corpus, training_texts

    options = CorporaExportOptions(name=name, out=str(out), n_docs=n_docs)
    if options.name == "demo":
        frame = demo_corpus(n=options.n_docs or 3000)
    else:
        frame = training_texts(max_texts=options.n_docs)
    frame.write_parquet(out)
    stderr.print(f"wrote {frame.height} rows to {out}")


if __name__ == "__main__":
    main()
