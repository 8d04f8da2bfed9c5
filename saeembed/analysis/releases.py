"""Model releases answering the same prompts: the bundled example, and reading a releases table.

A releases table has one row per (prompt, release): prompt_id, prompt, model, release, released_at,
response. The bundled example (`saeembed/data/release_example.parquet`) was generated on this project's
machines by SmolLM2-135M-Instruct (greedy decoding, at most 120 new tokens) for 48 ShareGPT questions,
treated as three releases of one assistant whose prompt template changed — the known differences:

    2024-01-15 v1  the question as asked
    2024-04-15 v2  "Answer as a bulleted list of short points." appended to every question
    2024-07-15 v3  "Answer in French." appended instead

so a release comparison should see list-formatting concepts rise at v2, and French rise (and lists
fall) at v3. (A system prompt would be the natural place for such instructions, but this 135M model
all but ignores system prompts: asked there for bullet points, 2% of its answers had any.) Regenerate
it with `python -m saeembed.analysis.releases OUT.parquet` (minutes on a CPU).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import NamedTuple

import polars as pl

from saeembed.analysis.diff import diff
from saeembed.errors import SaeembedError
from saeembed.options import CompareReleasesOptions
from saeembed.storage.percentiles import DEFAULT_PRESENCE, presence_thresholds, recorded_presence
from saeembed.storage.sources import content_hash
from saeembed.storage.store import IngestCounts, Store

RELEASE_COLUMNS = ("prompt_id", "prompt", "model", "release", "released_at", "response")


class Release(NamedTuple):
    name: str
    """Release name, e.g. 'v2'."""
    released_at: str
    """ISO date of the release (orders the releases)."""
    instruction: str
    """What this release's prompt template appends to every question ('' for none)."""


EXAMPLE_PATH = Path(__file__).parents[1] / "data" / "release_example.parquet"
EXAMPLE_MODEL = "smollm2-assistant"
EXAMPLE_RELEASES = (
    Release("v1", "2024-01-15", ""),
    Release("v2", "2024-04-15", "Answer as a bulleted list of short points."),
    Release("v3", "2024-07-15", "Answer in French."),
)


def example_releases() -> pl.DataFrame:
    """The bundled example releases table (144 rows: 48 prompts × 3 releases)."""
    return pl.read_parquet(EXAMPLE_PATH)


def check_releases(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with the release columns checked: all present, no empty response, one row per (prompt_id,
    model, release), released_at a date or timestamp. Raises SaeembedError naming what is wrong."""
    missing = [c for c in RELEASE_COLUMNS if c not in frame.columns]
    if missing:
        raise SaeembedError(
            f"the releases table lacks column(s) {', '.join(missing)}; needs {', '.join(RELEASE_COLUMNS)}"
        )
    frame = frame.select(RELEASE_COLUMNS).with_columns(
        pl.col("prompt_id").cast(pl.Utf8), pl.col("model").cast(pl.Utf8), pl.col("release").cast(pl.Utf8)
    )
    if frame["released_at"].dtype == pl.Utf8:
        try:
            parsed = frame["released_at"].str.to_datetime(strict=False)
        except pl.exceptions.ComputeError:  # no date format fits any value
            parsed = pl.Series([None] * frame.height, dtype=pl.Datetime)
        if parsed.null_count() > frame["released_at"].null_count():
            bad = frame.filter(parsed.is_null() & pl.col("released_at").is_not_null())["released_at"][0]
            raise SaeembedError(f"released_at must be a date, got {bad!r}")
        frame = frame.with_columns(parsed.alias("released_at"))
    empty = frame.filter(pl.col("response").is_null() | (pl.col("response").str.strip_chars() == ""))
    if empty.height:
        row = empty.row(0, named=True)
        raise SaeembedError(
            f"{empty.height} empty responses, e.g. prompt {row['prompt_id']} of {row['model']} {row['release']}"
        )
    duplicated = frame.filter(pl.struct("prompt_id", "model", "release").is_duplicated())
    if duplicated.height:
        row = duplicated.row(0, named=True)
        raise SaeembedError(
            f"prompt {row['prompt_id']} appears more than once for {row['model']} {row['release']}: "
            "one response per prompt and release"
        )
    return frame


def read_releases(path: str | Path) -> pl.DataFrame:
    """A releases table from a .parquet, .csv or .jsonl file, checked (see `check_releases`)."""
    path = Path(path)
    readers = {".parquet": pl.read_parquet, ".csv": pl.read_csv, ".jsonl": pl.read_ndjson}
    if not path.exists():
        raise SaeembedError(f"no releases table at {path}")
    if path.suffix.lower() not in readers:
        raise SaeembedError(f"releases table must be .parquet, .csv or .jsonl, got {path.name}")
    return check_releases(readers[path.suffix.lower()](path))


def ingest_releases(store: Store, frame: pl.DataFrame, *, corpus: str, source: str) -> IngestCounts:
    """Store each response as a document of `corpus` (external_id model/release/prompt_id; meta holds
    prompt_id, prompt, model, release, released_at). Rows already stored are skipped, so a table that
    grows by a release adds only that release."""
    frame = check_releases(frame)
    meta = [
        json.dumps({**row, "released_at": str(row["released_at"])[:19]}, ensure_ascii=False)
        for row in frame.select("prompt_id", "prompt", "model", "release", "released_at").iter_rows(named=True)
    ]
    external_id = [f"{m}/{r}/{p}" for m, r, p in frame.select("model", "release", "prompt_id").iter_rows()]
    text = frame["response"].to_list()
    rows = pl.DataFrame(
        {
            "external_id": external_id,
            "text": text,
            "meta": meta,
            "content_hash": [content_hash(t, e, m) for t, e, m in zip(text, external_id, meta, strict=True)],
        }
    )
    return store.add_documents(corpus, rows, source=source)


class ReleaseComparison(NamedTuple):
    analysis_id: int
    """Key of the comparison in `analyses` (kind 'compare-releases'); its inputs list the diffs."""
    steps: pl.DataFrame
    """One row per paired diff: model, release, against, against_kind ('previous' or 'baseline'),
    released_at, pairs, diff_id (the diff's analysis id), rising, falling (significant concepts)."""
    changes: pl.DataFrame
    """The top concepts of every step, in each step's ranking: diff_id, model, release, against,
    against_kind, rank, feature_id, label, label_source, label_score, peak_tokens (in this corpus), freq_a
    (this release), freq_b (the other), delta, ci_low, ci_high, q_value, example_a, example_b (the same kind
    of text from each side, firing token «marked»)."""
    trend: pl.DataFrame
    """Frequency of the followed concepts in every release: model, release, released_at, feature_id,
    label, freq."""


def compare_releases(
    store: Store,
    corpus: str,
    *,
    baseline: str | None = None,
    min_delta: float = 0.03,
    top: int = 10,
    presence_threshold: float = DEFAULT_PRESENCE,
) -> ReleaseComparison:
    """Paired diffs (McNemar over prompts both releases answered) of every release of every model in
    `corpus` against the previous release and against `baseline` (default: the model's first release),
    plus how the top concepts' frequencies moved across releases (a concept present where its max activation
    reaches `presence_threshold` × its p90, as in `diff`)."""
    started = time.perf_counter()
    CompareReleasesOptions(
        source=None,
        corpus=corpus,
        baseline=baseline,
        min_delta=min_delta,
        top=top,
        presence_threshold=presence_threshold,
    )
    releases = store.rows("release_list", {"corpus": corpus})
    if releases.height == 0:
        raise SaeembedError(
            f"corpus '{corpus}' has no releases: ingest a table with columns {', '.join(RELEASE_COLUMNS)}"
        )
    steps, changes = [], []
    for (model,), rows in releases.group_by("model", maintain_order=True):
        names = rows["release"].to_list()
        if baseline is not None and baseline not in names:
            raise SaeembedError(f"--baseline {baseline!r} is not a release of {model}: its releases are {names}")
        base = baseline or names[0]
        planned = [(names[i], names[i - 1], "previous") for i in range(1, len(names))]
        # Against the baseline too, unless that comparison is already one with a previous release.
        compared = {frozenset(step[:2]) for step in planned}
        planned += [
            (name, base, "baseline") for name in names if frozenset((name, base)) not in compared | {frozenset([base])}
        ]
        planned.sort(key=lambda step: (names.index(step[0]), step[2] != "previous"))
        for release, other, kind in planned:
            result = diff(
                store,
                corpus,
                corpus,
                where_a=_release_predicate(model, release),
                where_b=_release_predicate(model, other),
                paired_on="prompt_id",
                min_delta=min_delta,
                top=top,
                presence_threshold=presence_threshold,
            )
            table = result.table
            significant = store.rows(
                "release_significant", {"analysis_id": result.analysis_id, "min_delta": min_delta}
            ).row(0, named=True)
            steps.append(
                {
                    "model": model,
                    "release": release,
                    "against": other,
                    "against_kind": kind,
                    "released_at": rows.filter(pl.col("release") == release)["released_at"][0],
                    "pairs": result.n_a,
                    "diff_id": result.analysis_id,
                    "rising": significant["rising"],
                    "falling": significant["falling"],
                }
            )
            changes.append(_changes(table, steps[-1]))
    if not steps:
        raise SaeembedError(f"corpus '{corpus}' has one release only: nothing to compare it with")
    step_table = pl.DataFrame(steps)
    change_table = pl.concat(changes)
    # The trend follows the first few concepts of every comparison, so that one large change (a new
    # language) does not crowd out the others (list formatting).
    per_step = max(2, top // len(steps))
    followed = change_table.filter(pl.col("rank") <= per_step).unique("feature_id", keep="first", maintain_order=True)
    trend = _trend(store, corpus, releases, followed.select("feature_id", "label"), presence_threshold)
    analysis_id = store.record_analysis(
        "compare-releases",
        {
            "corpus": corpus,
            "baseline": baseline,
            "min_delta": min_delta,
            "top": top,
            "presence_threshold": presence_threshold,
        },
        {
            "diffs": step_table["diff_id"].to_list(),
            "documents": int(releases["documents"].sum()),
            "steps": steps,
            "followed": followed["feature_id"].to_list(),
        },
        round(time.perf_counter() - started, 3),
    )
    return ReleaseComparison(analysis_id, step_table, change_table, trend)


def load_comparison(store: Store, analysis_id: int) -> ReleaseComparison:
    """A stored release comparison, as `compare_releases` returned it (examples and trend re-read)."""
    from saeembed.analysis.diff import load_diff

    stored = store.analysis(analysis_id)
    if stored.kind != "compare-releases":
        raise SaeembedError(f"analysis {analysis_id} is a {stored.kind!r}, not a release comparison")
    params, inputs = stored.params, stored.inputs
    steps = pl.DataFrame(inputs["steps"])
    changes = pl.concat(
        [_changes(load_diff(store, step["diff_id"], top=params["top"]).table, step) for step in inputs["steps"]]
    )
    releases = store.rows("release_list", {"corpus": params["corpus"]})
    labels = changes.select("feature_id", "label").unique("feature_id")
    followed = pl.DataFrame({"feature_id": inputs["followed"]}, schema={"feature_id": pl.Int32})
    followed = followed.join(labels, on="feature_id", how="left")
    trend = _trend(store, params["corpus"], releases, followed, recorded_presence(params))
    return ReleaseComparison(analysis_id, steps, changes, trend)


def _changes(table: pl.DataFrame, step: dict) -> pl.DataFrame:
    return table.select(
        pl.lit(step["diff_id"]).alias("diff_id"),
        pl.lit(step["model"]).alias("model"),
        pl.lit(step["release"]).alias("release"),
        pl.lit(step["against"]).alias("against"),
        pl.lit(step["against_kind"]).alias("against_kind"),
        "rank",
        "feature_id",
        "label",
        "label_source",
        "label_score",
        "peak_tokens",
        "freq_a",
        "freq_b",
        "delta",
        "ci_low",
        "ci_high",
        "q_value",
        "example_a",
        "example_b",
    )


def _trend(store: Store, corpus: str, releases: pl.DataFrame, followed: pl.DataFrame, presence: float) -> pl.DataFrame:
    """Every release × followed concept (feature_id, label): the share of the release's responses where
    the concept is present (max activation ≥ `presence` × its p90), 0 where it is in none."""
    run = store.latest_run(corpus)
    present = store.rows(
        "release_trend",
        {"run_id": run.run_id, "feature_ids": followed["feature_id"].to_list()},
        presence_thresholds=presence_thresholds(store, run.run_id, run.run_id, presence),
    )
    return (
        releases.select("model", "release", "released_at")
        .join(followed, how="cross")
        .join(
            present.select("model", "release", "feature_id", "freq"), on=["model", "release", "feature_id"], how="left"
        )
        .with_columns(pl.col("freq").fill_null(0.0))
    )


def _release_predicate(model: str, release: str) -> str:
    def quoted(value: str) -> str:
        return "'" + value.replace("'", "''") + "'"

    return f"meta->>'model' = {quoted(model)} AND meta->>'release' = {quoted(release)}"


def example_prompts(n: int = 48, seed: int = 0) -> pl.DataFrame:
    """`n` short English questions that open ShareGPT conversations (prompt_id, prompt)."""
    from saeembed.storage.corpora import sharegpt_turns

    turns = sharegpt_turns().filter(
        (pl.col("turn") == 0)
        & (pl.col("role") == "user")
        & pl.col("text").str.len_chars().is_between(25, 160)
        & pl.col("text").str.strip_chars().str.ends_with("?")
        & pl.col("text").str.contains(r"^[\x20-\x7E]+$")
    )
    picked = turns.unique("text", keep="first", maintain_order=True).sample(n=n, seed=seed, shuffle=True)
    return picked.select(pl.col("conversation_id").alias("prompt_id"), pl.col("text").str.strip_chars().alias("prompt"))


def generate_example(out: Path, *, n_prompts: int = 48, max_tokens: int = 120, batch_size: int = 16) -> pl.DataFrame:
    """Generate the example releases table with the local SmolLM2-135M-Instruct and write it to `out`."""
    import torch

    from saeembed.concepts.llm import LocalTransformers

    model = LocalTransformers("smollm2-135m-instruct", device="cpu", dtype="float32")
    tokenizer, network = model.tokenizer, model.network
    tokenizer.padding_side = "left"  # batched decoding: every prompt ends where generation starts
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    prompts = example_prompts(n_prompts)
    rows = []
    for release in EXAMPLE_RELEASES:
        for start in range(0, prompts.height, batch_size):
            part = prompts.slice(start, batch_size)
            texts = [
                tokenizer.apply_chat_template(
                    [{"role": "user", "content": f"{prompt}\n\n{release.instruction}".strip()}],
                    tokenize=False,
                    add_generation_prompt=True,
                )
                for prompt in part["prompt"]
            ]
            batch = tokenizer(texts, add_special_tokens=False, return_tensors="pt", padding=True)
            with torch.inference_mode():
                output = network.generate(
                    **batch, max_new_tokens=max_tokens, do_sample=False, pad_token_id=pad, top_p=None, top_k=None
                )
            answers = tokenizer.batch_decode(output[:, batch.input_ids.shape[1] :], skip_special_tokens=True)
            for prompt_id, prompt, answer in zip(part["prompt_id"], part["prompt"], answers, strict=True):
                rows.append((prompt_id, prompt, EXAMPLE_MODEL, release.name, release.released_at, answer.strip()))
            print(f"{release.name}: {min(start + batch_size, prompts.height)}/{prompts.height}", file=sys.stderr)
    frame = pl.DataFrame(rows, schema=list(RELEASE_COLUMNS), orient="row").with_columns(
        pl.col("released_at").str.to_date()
    )
    frame.write_parquet(out)
    return frame


if __name__ == "__main__":
    generate_example(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("release_example.parquet"))
