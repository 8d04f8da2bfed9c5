"""Every command refuses bad input with one `error:` line and exit code 2, before Prefect starts or a model
loads, leaving the database byte for byte as it was; the machine's own trouble (a busy, truncated or
damaged database, a full disk) is one line too."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from saeembed.cli import main
from saeembed.storage.store import Store, copy_database
from tests.support import build_store

SECRET = "TOPSECRET-7319"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Corpora 'a' and 'b' (embedded, meta topic/prompt), with a diff already stored (analysis 1)."""
    folder = tmp_path_factory.mktemp("cli-errors")
    docs = {
        corpus: [(f"{topic} story {i}", {"topic": topic, "prompt": i}, [1, 2 + i % 3]) for i, topic in enumerate(kinds)]
        for corpus, kinds in {"a": ["Sports", "Business"] * 6, "b": ["Sports"] * 8}.items()
    }
    path = build_store(folder / "errors.duckdb", docs)
    from saeembed.analysis.diff import diff

    with Store.open(path) as store:
        diff(store, "a", "b", presence_threshold=0)
    return path


@pytest.fixture(scope="module")
def secret(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("secret") / "secret.txt"
    path.write_text(SECRET + "\n")
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_main(capsys: pytest.CaptureFixture, args: list[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(args)
    captured = capsys.readouterr()
    return done.value.code, captured.out, captured.err


# (arguments after the command, what the one line must say). {db} is the test database, {tmp} a folder.
BAD = [
    (["ingest", "{tmp}/missing.csv", "--corpus", "x"], "no such file or directory"),
    (["ingest", "{tmp}/docs.csv", "--corpus", "x", "--text-col", "body"], "column 'body' not found"),
    (["ingest", "{tmp}/docs.csv", "--corpus", " "], "--corpus is empty"),
    (["ingest", "{tmp}/docs.csv", "--corpus", "x", "--on-bad-line", "maybe"], "unknown --on-bad-line 'maybe'"),
    (["ingest", "{tmp}/docs.csv", "--corpus", "x", "--on-duplicate-id", "all"], "unknown --on-duplicate-id 'all'"),
    (["embed", "--corpus", "a", "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["embed", "--corpus", "a", "--batch-size", "-5"], "--batch-size must be at least 1, got -5"),
    (["embed", "--corpus", "a", "--max-tokens", "0"], "--max-tokens must be at least 1, got 0"),
    (["embed", "--corpus", "a", "--max-tokens", "99999999999"], "--max-tokens must be at most"),
    (["embed", "--corpus", "a", "--batch-size", "abc"], "Invalid value for '--batch-size'"),
    (["embed", "--corpus", "a", "--layer", "-1"], "--layer must be at least 0"),
    (["embed", "--corpus", "a", "--device", "tpu"], "unknown --device 'tpu'"),
    (["embed", "--corpus", "a", "--dtype", "int8"], "unknown --dtype 'int8'"),
    (["embed", "--corpus", "nope"], "no corpus named 'nope'"),
    (["embed", "--corpus", "a", "--sae", "{tmp}/no-sae"], "SAE not found"),
    (["embed", "--corpus", "a", "--reader", "{tmp}/no.gguf"], "reader file not found"),
    (["embed", "--corpus", "a", "--db", "{tmp}/none.duckdb"], "no database at"),
    (["embed", "--corpus", "a", "--unit", "sentences"], "--unit must be one of document, sentence, paragraph"),
    (["embed", "--corpus", "a", "--unit", "chunk:0"], "--unit chunk size must be between 1 and"),
    (["embed", "--corpus", "a", "--unit", "chunk:-4"], "--unit chunk size must be between 1 and"),
    (["embed", "--corpus", "a", "--unit", "chunk:ten"], "--unit must be one of"),
    (["diff", "a", "b", "--level", "unit"], "corpus 'a' has no embedded units: run `saeembed embed --corpus a --unit"),
    (["diff", "a", "b", "--level", "sentence"], "unknown --level 'sentence'"),
    (["diff", "a", "b", "--unit", "document"], "--unit names a unit below the document"),
    (["correlate", "a", "--unit", "paragraph"], "corpus 'a' has no embedded paragraph units"),
    (["cluster", "a", "--about", "tone", "--unit", "chunk:0"], "--unit chunk size must be between 1 and"),
    (["search", "x", "--corpus", "a", "--level", "unit"], "corpus 'a' has no embedded units"),
    (["train-sae", "--corpus", "a", "--layer", "3", "--out", "{tmp}/sae", "--latents", "0"], "--latents must be"),
    (["train-sae", "--corpus", "a", "--layer", "3", "--out", "{tmp}/sae", "--k", "99999"], "--k must be at most"),
    (["train-sae", "--corpus", "a", "--layer", "3", "--out", "{tmp}/sae", "--lr", "-1"], "--lr must be above 0"),
    (["train-sae", "--corpus", "a", "--layer", "3", "--out", "{tmp}", "--epochs", "1"], "is not an empty folder"),
    (["train-sae", "--corpus", "nope", "--layer", "3", "--out", "{tmp}/sae"], "no corpus named 'nope'"),
    (["train-sae", "--corpus", "a", "--layer", "3", "--out", "{tmp}/sae", "--atoms", "64"], "--atoms goes with --arch"),
    (["train-sae", "--corpus", "a", "--layer", "3", "--out", "{tmp}/sae", "--arch", "sparse"], "unknown --arch"),
    (["train-sae", "--corpus", "a", "--layer", "3", "--out", "{tmp}/sae", "--arch", "itda", "--atoms", "0"], "--atoms"),
    (["train-sae", "--corpus", "a", "--layer", "3", "--out", "{tmp}/sae", "--unit", "step"], "or token, the default"),
    (["train-sae", "--corpus", "a", "--layer", "3", "--out", "{tmp}/sae", "--unit", "chunk:0"], "chunk size must be"),
    (["concepts", "match", "1", "1"], "RUN_A and RUN_B are both run 1"),
    (["label", "--corpus", "a", "--method", "magic"], "unknown --method 'magic'"),
    (["label", "--corpus", "a", "--concurrency", "0"], "--concurrency must be at least 1"),
    (["label", "--corpus", "a", "--concurrency", "1000000"], "--concurrency must be at most"),
    (["label", "--corpus", "a", "--features", "top:0"], "--features top:N must be at least 1"),
    (["label", "--corpus", "a", "--features", "x,y"], "comma-separated concept ids"),
    (["label", "--corpus", "a", "--method", "llm"], "--method llm needs an LLM"),
    (["label", "--corpus", "a", "--method", "llm", "--llm-base-url", "ftp://x", "--llm-model", "m"], "not an http"),
    (["label", "--corpus", "a", "--method", "llm", "--llm-local", "m", "--llm-timeout", "0"], "--llm-timeout"),
    (["label", "--corpus", "nope"], "no corpus named 'nope'"),
    (["diff", "a", "b", "--top", "0"], "--top must be at least 1, got 0"),
    (["diff", "a", "b", "--top", "1000000000000"], "--top must be at most 1,000,000"),
    (["diff", "a", "b", "--min-delta", "2"], "--min-delta must be between 0 and 1"),
    (["diff", "a", "b", "--min-delta", "nan"], "--min-delta must be a number"),
    (["diff", "a", "b", "--rank-by", "size"], "unknown --rank-by 'size'"),
    (["diff", "a", "b", "--presence-threshold", "1.5"], "--presence-threshold must be between 0 and 1"),
    (["diff", "a", "b", "--judged-per-side", "1"], "--judged-per-side must be at least 2"),
    (["diff", "a", "b", "--report", "{tmp}/out.txt"], "--report must end in .html"),
    (["diff", "a", "nope"], "no corpus named 'nope'"),
    (["diff", "a", "b", "--where", "TRUE"], "--where goes with --by"),
    (["diff", "a", "b", "--top", "abc"], "Invalid value for '--top'"),
    (["correlate", "a", "--min-npmi", "3"], "--min-npmi must be between -1 and 1"),
    (["correlate", "a", "--min-count", "0"], "--min-count must be at least 1"),
    (["correlate", "a", "--max-same-token", "2"], "--max-same-token must be between 0 and 1"),
    (["correlate", "a", "--where", "feature_id = 3"], "unknown column 'feature_id'"),
    (["correlate", "nope"], "no corpus named 'nope'"),
    (["cluster", "a", "--about", "x", "--method", "kmeans"], "unknown --method 'kmeans'"),
    (["cluster", "a", "--about", "x", "--method", "spectral", "--k", "1"], "--k must be at least 2"),
    (["cluster", "a", "--about", "x", "--n-concepts", "0"], "--n-concepts must be at least 1"),
    (["cluster", "a", "--concepts", "a,b"], "comma-separated concept ids"),
    (["cluster", "a"], "give exactly one of --about TEXT or --concepts"),
    (["cluster", "a", "--about", "x", "--min-cluster-size", "1"], "--min-cluster-size must be at least 2"),
    (["compare-releases", "--max-tokens", "0"], "--max-tokens must be at least 1"),
    (["compare-releases", "--presence-threshold", "-1"], "--presence-threshold must be between 0 and 1"),
    (["compare-releases", "{tmp}/no-releases.parquet"], "no releases table at"),
    (["search", "sports", "--corpus", "a", "--top", "0"], "--top must be at least 1"),
    (["search", "sports", "--corpus", "a", "--mode", "magic"], "unknown --mode 'magic'"),
    (["search", "sports", "--corpus", "a", "--temperature", "0"], "--temperature must be above 0"),
    (["search", "sports", "--corpus", "a", "--exemplar-weight", "2"], "--exemplar-weight must be between 0 and 1"),
    (["search", "sports", "--corpus", "a", "--concepts", "0"], "--concepts must be at least 1"),
    (["search", " ", "--corpus", "a"], "empty query"),
    (["search", "--like", "", "--corpus", "a"], "--like is empty"),
    (["search", "--like", "1,99999", "--corpus", "a"], "unknown document ids: 99999"),
    (["search", "--like", "1", "--corpus", "b"], "example documents must come from corpus 'b'"),
    (["search", "sports", "--corpus", "a", "--where", "read_text('x') IS NULL"], r"may not call read_text()"),
    (["search", "sports", "--db", "{tmp}/none.duckdb"], "no database at"),
    (["search-index", "--corpus", "a", "--flat-below", "0"], "--flat-below must be at least 1"),
    (["search-index", "--corpus", "nope"], "no corpus named 'nope'"),
    (["history", "diff", "--top", "0"], "--top must be at least 1"),
    (["history", "0"], "ANALYSIS must be at least 1"),
    (["history", "diff", "--concepts", "x"], "comma-separated concept ids"),
    (["history", "999"], "analysis 999 does not exist"),
    (["report", "1", "--html", "{tmp}/out.txt"], "--html must end in .html"),
    (["report", "1", "--html", "{tmp}/no/such/folder/out.html"], "does not exist"),
    (["report", "999", "--html", "{tmp}/out.html"], "analysis 999 does not exist"),
    (["docs", "show", "1", "--top", "-3"], "--top must be at least 1, got -3"),
    (["docs", "show", "99999999999999999999999"], "DOC_ID must be at most"),
    (["docs", "show", "999"], "document 999 does not exist"),
    (["concepts", "top", "--corpus", "a", "--top", "0"], "--top must be at least 1"),
    (["concepts", "top", "--corpus", "nope"], "no corpus named 'nope'"),
    (["concepts", "top", "--corpus", "[/red]x[bold]"], "no corpus named '[/red]x[bold]'"),  # not rich markup
    (["concepts", "show", "5", "--top", "0"], "--top must be at least 1"),
    (["concepts", "show", "5", "--by", "topic"], "--by goes with --html"),
    (["concepts", "show", "5", "--html", "{tmp}/page.txt"], "--html must end in .html"),
    (["concepts", "show", "5", "--corpus", "a", "--html", "{tmp}/page.html", "--by", "genre"], "meta column 'genre'"),
    (["concepts", "search", "sports", "--corpus", "a", "--min-score", "2"], "--min-score must be between 0 and 1"),
    (["corpora", "export", "nope", "--out", "{tmp}/x.parquet"], "unknown NAME 'nope'"),
    (["corpora", "export", "demo", "--out", "{tmp}/x.csv"], "--out must end in .parquet"),
    (["corpora", "list", "--db", "{tmp}/none.duckdb"], "no database at"),
    (["demo", "--n-docs", "0"], "--n-docs must be at least 4"),
    (["demo", "--n-docs", "1000000000"], "--n-docs must be at most"),
    (["serve", "--limit", "0"], "--limit must be at least 1"),
    (["serve", "--project", "{tmp}/no.yaml"], "no Prefect project file"),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[" ".join(args)[:60] for args, _ in BAD])
def test_bad_values_are_one_line_exit_2_and_change_nothing(db, tmp_path, capsys, monkeypatch, args, message):
    pl.DataFrame({"text": ["a", "b"]}).write_csv(tmp_path / "docs.csv")
    (tmp_path / "leftover").write_text("not empty")
    # A command that got past its checks would start Prefect: with no server to talk to, it would fail
    # loudly (and slowly) instead of answering with the expected line.
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    before = digest(db)
    argv = [part.format(db=db, tmp=tmp_path) for part in args]
    if "--db" not in argv and argv[:2] != ["corpora", "export"]:  # export writes a file, it has no database
        argv += ["--db", str(db)]
    code, out, err = run_main(capsys, argv)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert out == ""
    assert digest(db) == before and not Path(f"{db}.wal").exists()
    assert not (tmp_path / "none.duckdb").exists()


# The attacks of issue 12, through the command line: refused before anything runs, nothing read.
ATTACKS = [
    [
        "diff",
        "a",
        "a",
        "--where-a",
        "meta->>'topic' = 'Sports') LIMIT (SELECT ascii(content[1]) FROM read_text('{secret}')",
        "--where-b",
        "meta->>'topic' = 'Business'",
    ],
    [
        "search",
        "sports",
        "--corpus",
        "a",
        "--where",
        "TRUE) GROUP BY ALL HAVING ((SELECT replace(content, chr(10), ' | ') FROM read_text('{secret}'))::INTEGER > 0",
    ],
    ["correlate", "a", "--where", "TRUE) OR (SELECT content FROM read_text('{secret}')) = 'x' OR (TRUE"],
    ["cluster", "a", "--concepts", "1,2", "--where", "TRUE) UNION SELECT content FROM read_text('{secret}') --"],
    ["diff", "a", "--by", "topic", "--where", "read_text('{secret}') IS NOT NULL"],
]


@pytest.mark.parametrize("attack", ATTACKS, ids=[" ".join(a[:2]) for a in ATTACKS])
def test_predicate_attacks_are_refused_and_read_nothing(db, secret, capsys, monkeypatch, attack):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    before = digest(db)
    code, out, err = run_main(capsys, [part.format(secret=secret) for part in attack] + ["--db", str(db)])
    assert code == 2 and err.startswith("error: --where") and len(err.strip().splitlines()) == 1, err
    assert SECRET not in out + err
    assert digest(db) == before


def test_a_predicate_reaching_for_another_corpus_stays_in_its_own(db):
    from saeembed.analysis.diff import diff

    with Store.open(db) as store:
        result = diff(
            store,
            "a",
            "a",
            where_a="meta->>'topic' = 'Sports') OR (meta->>'topic' = 'Sports'",
            where_b="meta->>'topic' = 'Business'",
            presence_threshold=0,
        )
    # Corpus a has 6 sports documents; corpus b's 8 are not counted.
    assert (result.n_a, result.n_b) == (6, 6)


def test_prefect_parameters_go_through_the_same_checks(db, secret, prefect_harness):
    from saeembed_flows.cluster import cluster_flow
    from saeembed_flows.diff import diff_flow
    from saeembed_flows.embed import embed_flow

    from saeembed.errors import SaeembedError

    before = digest(db)
    attack = f"TRUE) LIMIT (SELECT ascii(content[1]) FROM read_text('{secret}')"
    with pytest.raises(SaeembedError, match="no clause of its own"):
        diff_flow(a="a", b="a", where_a=attack, where_b="TRUE", db=str(db))
    with pytest.raises(SaeembedError, match="may not call read_text"):
        cluster_flow(corpus="a", concepts=[1, 2], where=f"read_text('{secret}') IS NULL", db=str(db))
    with pytest.raises(SaeembedError, match="--max-tokens must be at least 1"):
        embed_flow(corpus="a", max_tokens=0, db=str(db))
    assert digest(db) == before


def saeembed(*args: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "saeembed.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    return result, time.perf_counter() - started


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["embed", "--corpus", "a", "--max-tokens", "0"], "--max-tokens must be at least 1"),
        (["embed", "--corpus", "nope"], "no corpus named 'nope'"),
        (["label", "--corpus", "a", "--concurrency", "0"], "--concurrency must be at least 1"),
        (["diff", "a", "b", "--top", "0"], "--top must be at least 1"),
        (["train-sae", "--corpus", "a", "--layer", "3", "--out", "/nonexistent/sae", "--latents", "0"], "--latents"),
        (["compare-releases", "--max-tokens", "-5"], "--max-tokens must be at least 1"),
        (["demo", "--n-docs", "0"], "--n-docs must be at least 4"),
    ],
)
def test_commands_that_start_prefect_or_load_a_model_refuse_within_3_seconds(db, args, message):
    before = digest(db)
    result, seconds = saeembed(*args, "--db", str(db))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert seconds < 3, f"{seconds:.1f} s"
    assert digest(db) == before


HOLD = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == "read")
print("holding", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize(("mode", "state"), [("write", "is being written by process"), ("read", "held by a reader")])
def test_a_busy_database_names_who_holds_it_within_2_seconds(db, tmp_path, mode, state):
    copy = tmp_path / "busy.duckdb"
    copy_database(db, copy)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(copy), mode], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        # saeembed holds the file one operation at a time and waits out another's; this holder never lets go.
        result, seconds = saeembed("diff", "a", "b", "--db", str(copy), env={"SAEEMBED_DB_WAIT": "1"})
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert lines[0].startswith("error: database busy:") and state in lines[0] and str(holder.pid) in lines[0]
        assert "(waited 1 s)" in lines[0]
        assert seconds < 3.5, f"{seconds:.1f} s"
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("cut", [0, 100, 8192])
def test_a_truncated_database_is_one_line(db, tmp_path, capsys, cut):
    damaged = tmp_path / "cut.duckdb"
    damaged.write_bytes(db.read_bytes()[:cut])
    for args in (["docs", "show", "1"], ["embed", "--corpus", "a"], ["diff", "a", "b"]):
        code, _, err = run_main(capsys, [*args, "--db", str(damaged)])
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, err
        assert lines[0].startswith(f"error: database {damaged} is damaged or not a DuckDB database"), err


def test_a_full_disk_during_a_write_is_one_line(db, tmp_path, capsys, monkeypatch, prefect_harness):
    """Whatever raises ENOSPC deep inside a flow (here the store recording the analysis) ends as one line."""

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "copy.duckdb.wal"))

    copy = tmp_path / "copy.duckdb"
    copy_database(db, copy)
    monkeypatch.setattr(Store, "record_analysis", full)
    code, out, err = run_main(capsys, ["diff", "a", "b", "--db", str(copy)])
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert code == 2 and errors == [errors[0]] and errors[0].startswith("error: disk full"), err
    assert out == ""


def test_a_full_disk_on_a_real_filesystem_is_one_line(db, tmp_path):
    """A 3 MB tmpfs (needs root, as on CI) filled by an ingest: one line, and the database still opens."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root); the monkeypatched full-disk test covers the message")
    try:
        source = tmp_path / "big.parquet"
        pl.DataFrame({"text": [os.urandom(2000).hex() for _ in range(3000)]}).write_parquet(source)
        target = mount / "x.duckdb"
        result, _ = saeembed("ingest", str(source), "--corpus", "big", "--db", str(target))
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode == 2 and len(errors) == 1 and errors[0].startswith("error: disk full"), result.stderr
        with Store.open(target, read_only=True) as store:
            assert store.query("SELECT count(*) AS n FROM documents")["n"][0] == 0
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_bug_is_exit_3_with_the_traceback_behind_debug(db, capsys, monkeypatch):
    import saeembed.analysis.lookup

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(saeembed.analysis.lookup, "show_document", broken)
    code, _, err = run_main(capsys, ["docs", "show", "1", "--db", str(db)])
    assert code == 3 and len(err.strip().splitlines()) == 1
    assert "internal error (ZeroDivisionError: division by zero)" in err and "--debug" in err
    code, _, err = run_main(capsys, ["docs", "show", "1", "--db", str(db), "--debug"])
    assert (
        code == 3 and "Traceback (most recent call last)" in err and err.strip().splitlines()[-1].startswith("error:")
    )


@pytest.fixture()
def hanging_endpoint():
    """A server on 127.0.0.1 that accepts connections and never answers."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield f"http://127.0.0.1:{server.getsockname()[1]}/v1"
    server.close()


@pytest.mark.parametrize("command", [["label", "--corpus", "a", "--method", "llm"], ["diff", "a", "b"]])
def test_a_hanging_llm_endpoint_is_a_timeout_before_anything_loads(db, capsys, hanging_endpoint, command):
    started = time.perf_counter()
    args = [*command, "--llm-base-url", hanging_endpoint, "--llm-model", "m", "--llm-timeout", "2", "--db", str(db)]
    code, _, err = run_main(capsys, args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "timed out" in lines[0], err
    assert time.perf_counter() - started < 10


def test_an_unreachable_llm_endpoint_is_reported_in_seconds(db, capsys):
    started = time.perf_counter()
    args = ["label", "--corpus", "a", "--method", "llm", "--llm-base-url", "http://127.0.0.1:9/v1", "--llm-model", "m"]
    code, _, err = run_main(capsys, [*args, "--db", str(db)])
    # A refused connection is retried twice (a server may be starting): each retry is a warning line.
    errors = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "unreachable" in errors[0] and err.strip().endswith(errors[0]), err
    assert time.perf_counter() - started < 10


def test_user_text_is_printed_as_it_is_never_as_markup(tmp_path, capsys):
    """Rich markup in a document, its meta or a predicate once crashed the table (exit 3): it is data."""
    path = build_store(tmp_path / "markup.duckdb", {"[/b]c": [("[/b] a [bold]story", {"k": "[/red]"}, [1, 2])]})
    code, out, err = run_main(capsys, ["docs", "show", "1", "--db", str(path)])
    assert code == 0, err
    assert "[/b] a [bold]story" in out and "[/red]" in out and "in [/b]c" in out
    code, _, err = run_main(capsys, ["concepts", "top", "--corpus", "[/b]c", "--db", str(path)])
    assert code == 0, err
