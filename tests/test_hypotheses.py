"""Hypotheses from a diff: an OpenAI-compatible endpoint on 127.0.0.1 plays the LLM (it proposes fixed
hypotheses and judges a text by whether it contains the hypothesis's last word), so the frequencies and
tests on the held-out documents can be checked by hand."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from statsmodels.stats import proportion

from saeembed.analysis.diff import diff
from saeembed.analysis.hypotheses import parse_hypotheses, verify_hypotheses
from saeembed.concepts.llm import CachedChat, MalformedAnswer, OpenAICompatible
from saeembed.errors import SaeembedError
from saeembed.storage.store import Store
from tests.support import ChatServer, Reply, build_store, completion, last_user_text

# A: 30 of 40 documents about sports (concept 1), the rest about markets (concept 2); B: 4 of 40 about sports.
SPORTS, MARKETS = "the team won the sports final", "stock markets rose on profits"
CORPORA = {
    "a": [(f"{SPORTS} {i}" if i < 30 else f"{MARKETS} {i}", {"prompt": i}, [1] if i < 30 else [2]) for i in range(40)],
    "b": [(f"{SPORTS} {i}" if i < 4 else f"{MARKETS} {i}", {"prompt": i}, [1] if i < 4 else [2]) for i in range(40)],
}
PROPOSED = {
    "hypotheses": [
        {"hypothesis": "mentions sports", "more_in": "A"},
        {"hypothesis": "Mentions  sports", "more_in": "A"},  # a duplicate: dropped
        {"hypothesis": "mentions markets", "more_in": "B"},
        {"hypothesis": "mentions weather", "more_in": "A"},
    ]
}


def llm(number: int, request: dict[str, Any]) -> Reply:
    prompt = last_user_text(request)
    if prompt.startswith("Two collections of texts"):
        return completion("Here you are:\n" + json.dumps(PROPOSED))
    label = re.search(r'described as: "([^"]+)"', prompt).group(1)
    text = prompt.split("Text:\n", 1)[1]
    return completion(json.dumps({"applies": label.split()[-1] in text}))


@pytest.fixture()
def store(tmp_path):
    with Store.open(build_store(tmp_path / "h.duckdb", CORPORA)) as opened:
        yield opened


@pytest.fixture()
def server():
    started = ChatServer(llm)
    yield started
    started.close()


def chat_for(server: ChatServer, store: Store) -> CachedChat:
    return CachedChat(OpenAICompatible(server.base_url, "test-model", retry_base_delay=0.01), store)


def test_hypotheses_are_judged_on_held_out_documents_with_the_diffs_test(server, store):
    analysis_id = diff(store, "a", "b").analysis_id
    result = verify_hypotheses(store, analysis_id, chat_for(server, store), judged_per_side=100)
    table = {row["hypothesis"]: row for row in result.table.iter_rows(named=True)}
    assert list(table) == ["mentions sports", "mentions markets", "mentions weather"]
    # The strongest document of each concept, on the side where it is more frequent, was shown to the LLM
    # as an example: a sports document of A and a markets document of B are not judged.
    assert (result.judged_a, result.judged_b) == (39, 39)
    sports = table["mentions sports"]
    assert (sports["n_a"], sports["size_a"], sports["n_b"], sports["size_b"]) == (29, 39, 4, 39)
    assert sports["freq_a"] == pytest.approx(29 / 39) and sports["delta"] == pytest.approx(25 / 39)
    expected_p = proportion.test_proportions_2indep(29, 39, 4, 39, method="score", compare="diff").pvalue
    assert sports["p_value"] == pytest.approx(expected_p) and sports["confirmed"]
    markets = table["mentions markets"]
    assert (markets["n_a"], markets["n_b"], markets["confirmed"]) == (10, 35, True)
    weather = table["mentions weather"]
    assert (weather["n_a"], weather["n_b"], weather["p_value"], weather["confirmed"]) == (0, 0, 1.0, False)
    stored = store.query("SELECT hypothesis, q_value, confirmed FROM diff_hypotheses ORDER BY hypothesis_id")
    assert stored["hypothesis"].to_list() == list(table)
    assert stored["q_value"].to_list() == pytest.approx(result.table["q_value"].to_list())
    # 1 summarising request + 3 hypotheses × 65 distinct texts (A and B share some texts word for word:
    # the cache answers the second one); a rerun is answered from the cache entirely.
    assert len(server.requests) == 1 + 3 * 65
    again = verify_hypotheses(store, analysis_id, chat_for(server, store), judged_per_side=100)
    assert len(server.requests) == 1 + 3 * 65 and again.table.equals(result.table)
    assert store.query("SELECT count(*) AS n FROM diff_hypotheses")["n"][0] == 3


def test_paired_hypotheses_use_mcnemar_on_the_pairs(server, store):
    analysis_id = diff(store, "a", "b", paired_on="prompt").analysis_id
    result = verify_hypotheses(store, analysis_id, chat_for(server, store), judged_per_side=100)
    sports = result.table.row(0, named=True)
    # Pairs whose A or B document was shown as an example are left out: prompts 0 (sports in A) and the
    # markets example of B (prompt 4, the first markets document of B).
    assert result.judged_a == result.judged_b == 38
    assert sports["test"].startswith("mcnemar") and (sports["n_a"], sports["n_b"]) == (28, 3)


def test_the_sample_is_seeded_and_bounded(server, store):
    analysis_id = diff(store, "a", "b").analysis_id
    first = verify_hypotheses(store, analysis_id, chat_for(server, store), judged_per_side=10, seed=1)
    second = verify_hypotheses(store, analysis_id, chat_for(server, store), judged_per_side=10, seed=1)
    assert (first.judged_a, first.judged_b) == (10, 10) and first.table.equals(second.table)


def test_errors_name_the_problem(server, store):
    chat = chat_for(server, store)
    with pytest.raises(SaeembedError, match="analysis 99 does not exist"):
        verify_hypotheses(store, 99, chat)
    no_difference = diff(store, "a", "a", where_a="doc_id % 2 = 0", where_b="doc_id % 2 = 1").analysis_id
    with pytest.raises(SaeembedError, match="no concept with q < 0.05"):
        verify_hypotheses(store, no_difference, chat)
    with pytest.raises(SaeembedError, match="at least 2"):
        verify_hypotheses(store, no_difference, chat, judged_per_side=1)
    assert not server.requests


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            '{"hypotheses": ["about sports", {"hypothesis": "uses lists", "more_in": "b"}]}',
            [
                ("about sports", "A"),
                ("uses lists", "B"),
            ],
        ),
        (json.dumps({"hypotheses": [f"h{i}" for i in range(14)]}), [(f"h{i}", "A") for i in range(10)]),
    ],
)
def test_parse_hypotheses(answer, expected):
    assert parse_hypotheses(answer) == expected


@pytest.mark.parametrize("answer", ["no JSON here", '{"ideas": []}', '{"hypotheses": [3, ""]}'])
def test_parse_hypotheses_refuses_answers_without_any(answer):
    with pytest.raises(MalformedAnswer, match="hypothes"):
        parse_hypotheses(answer)


def test_unreadable_judgements_are_left_out_of_the_counts(server, store):
    def sloppy(number: int, request: dict[str, Any]) -> Reply:
        if last_user_text(request).split("Text:\n")[-1].split("\n\n")[0].endswith(" 7"):
            return completion("maybe?")
        return llm(number, request)

    server.script = sloppy
    analysis_id = diff(store, "a", "b").analysis_id
    result = verify_hypotheses(store, analysis_id, chat_for(server, store), judged_per_side=100)
    sports = result.table.row(0, named=True)
    # Document 7 of each side gets no readable verdict: 38 judgements per side count, 28 sports in A.
    assert (sports["size_a"], sports["size_b"], sports["n_a"], sports["n_b"]) == (38, 38, 28, 4)


def test_diff_command_with_an_llm_runs_the_flow_and_prints_the_hypotheses(prefect_harness, server, tmp_path):
    from typer.testing import CliRunner

    from saeembed.cli import app

    path = build_store(tmp_path / "cli.duckdb", CORPORA)
    args = ["diff", "a", "b", "--db", str(path), "--llm-base-url", server.base_url, "--llm-model", "test-model"]
    result = CliRunner().invoke(app, [*args, "--judged-per-side", "100", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert [h["hypothesis"] for h in payload["hypotheses"]] == [
        "mentions sports",
        "mentions markets",
        "mentions weather",
    ]
    assert [h["confirmed"] for h in payload["hypotheses"]] == [True, True, False]
    with Store.open(path, read_only=True) as store:
        assert store.query("SELECT count(*) AS n FROM diff_hypotheses")["n"][0] == 3
    refused = CliRunner().invoke(app, ["diff", "a", "--by", "side", "--db", str(path), "--llm-local", "x"])
    assert refused.exit_code != 0 and "hypotheses explain A vs B" in str(refused.exception)
