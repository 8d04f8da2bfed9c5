"""The LLM layer against a real OpenAI-compatible HTTP server run by the tests (scripted replies), real
DuckDB files, and the real SmolLM2-135M-Instruct; prompt parsers and the detection score on hand-made
inputs."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sklearn.metrics import balanced_accuracy_score

from saeembed.concepts.llm import (
    CachedChat,
    EndpointError,
    LabelAnswer,
    LocalTransformers,
    MalformedAnswer,
    OpenAICompatible,
    RequestFailed,
    chat_backend,
    check_endpoint,
    complete_many,
    complete_parsed,
    detection_score,
    failure_reason,
    judge_messages,
    keyphrase_messages,
    label_messages,
    parse_judgement,
    parse_keyphrases,
    parse_label,
)
from saeembed.errors import SaeembedError
from saeembed.storage.store import Store
from tests.support import ChatServer, Reply, completion, last_user_text, model_listing


@pytest.fixture()
def serve() -> Iterator[Callable[..., ChatServer]]:
    servers: list[ChatServer] = []

    def start(script: Callable[[int, dict[str, Any]], Reply], **options: Any) -> ChatServer:
        servers.append(ChatServer(script, **options))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def label_reply(number: int, request: dict[str, Any]) -> Reply:
    """Answers a label prompt after the first activating text's first word, like a model would."""
    first = re.search(r"^1\. (\S+)", last_user_text(request), re.M).group(1)
    if first == "NOTJSON":
        return completion("I think these texts are about sport.")
    if first == "NOLABEL":
        return completion('{"description": "texts about sport"}')
    if first == "TOOLONG":
        return Reply(400, {"error": {"message": "This model's maximum context length is 8 tokens", "type": "x"}})
    return completion(json.dumps({"label": f"about {first}", "description": f"Texts that mention {first}."}))


def client(server: ChatServer, **options: Any) -> OpenAICompatible:
    return OpenAICompatible(server.base_url, "test-model", **{"retry_base_delay": 0.01, **options})


# -- OpenAICompatible ------------------------------------------------------------------------------


def test_sends_an_openai_chat_request_and_returns_the_content(serve, monkeypatch):
    server = serve(lambda number, request: completion("hello there"))
    monkeypatch.setenv("SAEEMBED_TEST_KEY", "sk-test-123")
    messages = [{"role": "user", "content": "Say hello."}]
    with client(server, api_key_env="SAEEMBED_TEST_KEY") as chat:
        assert chat.complete(messages, max_tokens=7, temperature=0.0) == "hello there"
    monkeypatch.delenv("SAEEMBED_TEST_KEY")
    with client(server, api_key_env="SAEEMBED_TEST_KEY") as chat:
        chat.complete(messages, max_tokens=7, temperature=0.0)
    assert server.requests[0] == {"model": "test-model", "messages": messages, "max_tokens": 7, "temperature": 0.0}
    assert server.headers[0]["Authorization"] == "Bearer sk-test-123"
    assert "Authorization" not in server.headers[1]


def test_a_500_is_retried_then_the_answer_returned(serve):
    server = serve(lambda number, request: Reply(500, {"error": "overloaded"}) if number == 1 else completion("ok"))
    with client(server) as chat:
        assert chat.complete([{"role": "user", "content": "hi"}], max_tokens=5, temperature=0) == "ok"
    assert len(server.requests) == 2


def test_a_429_waits_as_long_as_retry_after_says_not_the_backoff(serve):
    server = serve(lambda number, request: Reply(429, {}, (("Retry-After", "0"),)) if number < 3 else completion("ok"))
    started = time.monotonic()
    with client(server, retry_base_delay=30.0) as chat:
        assert chat.complete([{"role": "user", "content": "hi"}], max_tokens=5, temperature=0) == "ok"
    assert len(server.requests) == 3
    assert time.monotonic() - started < 5


def test_persistent_5xx_fails_after_the_bounded_retries(serve):
    server = serve(lambda number, request: Reply(503, {"error": {"message": "no capacity"}}))
    with client(server, max_retries=2) as chat, pytest.raises(EndpointError) as caught:
        chat.complete([{"role": "user", "content": "hi"}], max_tokens=5, temperature=0)
    assert str(caught.value) == f"LLM endpoint {server.base_url} still failing after 3 attempts: HTTP 503: no capacity"
    assert len(server.requests) == 3


def test_401_fails_at_once_naming_the_key_variable(serve, monkeypatch):
    server = serve(lambda number, request: Reply(401, {"error": {"message": "Incorrect API key provided"}}))
    monkeypatch.setenv("SAEEMBED_TEST_KEY", "sk-wrong")
    with client(server, api_key_env="SAEEMBED_TEST_KEY") as chat, pytest.raises(EndpointError) as caught:
        chat.complete([{"role": "user", "content": "hi"}], max_tokens=5, temperature=0)
    assert str(caught.value) == f"LLM endpoint {server.base_url}: authentication failed (401): check $SAEEMBED_TEST_KEY"
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "reply",
    [
        Reply(404, {"object": "error", "message": "The model `nope` does not exist.", "type": "NotFoundError"}),
        Reply(404, {"error": 'model "nope" not found, try pulling it first'}),
        Reply(400, {"error": {"message": "The model `nope` does not exist or you do not have access to it."}}),
    ],
    ids=["vllm-404", "ollama-404", "400"],
)
def test_an_unknown_model_fails_at_once_naming_it(serve, reply):
    server = serve(lambda number, request: reply)
    with OpenAICompatible(server.base_url, "nope") as chat, pytest.raises(EndpointError) as caught:
        chat.complete([{"role": "user", "content": "hi"}], max_tokens=5, temperature=0)
    assert str(caught.value) == f"LLM endpoint {server.base_url}: model 'nope' not found"
    assert len(server.requests) == 1


def test_a_wrong_path_is_reported_as_a_wrong_base_url(serve):
    server = serve(lambda number, request: completion("never"))
    with OpenAICompatible(server.base_url.removesuffix("/v1"), "m") as chat, pytest.raises(EndpointError) as caught:
        chat.complete([{"role": "user", "content": "hi"}], max_tokens=5, temperature=0)
    assert "/chat/completions not found (404): check the base URL" in str(caught.value)
    assert server.requests == []


def test_a_closed_port_is_unreachable_after_bounded_retries():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    chat = OpenAICompatible(f"http://127.0.0.1:{port}/v1", "m", max_retries=3, retry_base_delay=0.01)
    with chat, pytest.raises(EndpointError) as caught:
        chat.complete([{"role": "user", "content": "hi"}], max_tokens=5, temperature=0)
    assert str(caught.value).startswith(f"LLM endpoint http://127.0.0.1:{port}/v1 unreachable after 4 attempts: ")
    assert "ConnectError" in str(caught.value)
    assert time.monotonic() - started < 5


def test_a_reply_without_message_content_is_a_clear_error(serve):
    server = serve(lambda number, request: Reply(200, {"choices": []}) if number == 1 else completion(None))
    with client(server) as chat:
        with pytest.raises(RequestFailed, match=r"response has no choices\[0\]\.message\.content"):
            chat.complete([{"role": "user", "content": "hi"}], max_tokens=5, temperature=0)
        with pytest.raises(RequestFailed, match=r"no choices\[0\]\.message\.content \(finish_reason: stop\)"):
            chat.complete([{"role": "user", "content": "hi"}], max_tokens=5, temperature=0)


# -- timeouts and the endpoint check -------------------------------------------------------------------


@pytest.fixture()
def hanging() -> Iterator[str]:
    """The base URL of a server on 127.0.0.1 that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.05)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    listener.close()


def test_a_hanging_endpoint_fails_the_check_and_each_request_as_a_timeout_within_seconds(hanging, tmp_path: Path):
    started = time.monotonic()
    with Store.open(tmp_path / "cache.duckdb") as store, pytest.raises(EndpointError) as caught:
        chat_backend(store, llm_base_url=hanging, llm_model="m", timeout=2)
    # The check does not retry a timeout: a model listing that does not come in 2 s will not come later.
    assert str(caught.value) == f"LLM endpoint {hanging} timed out after 2 s (ReadTimeout)"
    assert time.monotonic() - started < 5
    started = time.monotonic()
    with OpenAICompatible(hanging, "m", timeout=2) as chat, pytest.raises(EndpointError) as caught:
        chat.complete([{"role": "user", "content": "hi"}], max_tokens=5, temperature=0)
    assert str(caught.value) == f"LLM endpoint {hanging} timed out after 2 s on each of 3 attempts (ReadTimeout)"
    # 3 attempts of 2 s and the default backoff (at most 1 + 2 s) between them.
    assert 6 <= time.monotonic() - started < 12


def test_check_endpoint_passes_a_listed_model_with_one_request(serve):
    server = serve(lambda number, request: completion("never"), listing=model_listing("other", "test-model"))
    check_endpoint(server.base_url, "test-model")
    # Ollama lists tags: "llama3" is its "llama3:latest".
    server.listing = model_listing("llama3:latest")
    check_endpoint(server.base_url, "llama3")
    assert server.gets == ["/v1/models"] * 2
    assert server.requests == []


def test_check_endpoint_names_the_models_served_when_the_model_is_not(serve):
    def vllm(number: int, request: dict[str, Any]) -> Reply:
        return Reply(404, {"object": "error", "message": f"The model `{request['model']}` does not exist."})

    server = serve(vllm, listing=model_listing("llama-3-8b", "qwen-7b"))
    with pytest.raises(EndpointError) as caught:
        check_endpoint(server.base_url, "gpt-4o")
    assert (
        str(caught.value)
        == f"LLM endpoint {server.base_url} does not serve model 'gpt-4o'; it serves: llama-3-8b, qwen-7b"
    )
    # A server that answers for names it does not list (llama.cpp's, under any name) passes.
    server.script = lambda number, request: completion("OK")
    check_endpoint(server.base_url, "gpt-4o")
    assert [request["max_tokens"] for request in server.requests] == [1, 1]


def test_check_endpoint_without_a_model_listing_asks_for_one_token(serve):
    server = serve(lambda number, request: completion("OK"), listing=None)
    check_endpoint(server.base_url, "test-model")
    assert server.gets == ["/v1/models"]
    assert server.requests == [
        {
            "model": "test-model",
            "messages": [{"role": "user", "content": "Say OK."}],
            "max_tokens": 1,
            "temperature": 0.0,
        }
    ]
    server.script = lambda number, request: Reply(404, {"error": 'model "nope" not found, try pulling it first'})
    with pytest.raises(EndpointError) as caught:
        check_endpoint(server.base_url, "nope")
    assert str(caught.value) == f"LLM endpoint {server.base_url}: model 'nope' not found"


def test_check_endpoint_reports_a_refused_key_at_once(serve, monkeypatch):
    server = serve(
        lambda number, request: completion("never"), listing=Reply(401, {"error": {"message": "Incorrect API key"}})
    )
    monkeypatch.setenv("SAEEMBED_TEST_KEY", "sk-wrong")
    with pytest.raises(EndpointError) as caught:
        check_endpoint(server.base_url, "test-model", api_key_env="SAEEMBED_TEST_KEY")
    assert str(caught.value) == f"LLM endpoint {server.base_url}: authentication failed (401): check $SAEEMBED_TEST_KEY"
    assert (server.gets, server.requests) == (["/v1/models"], [])


def test_check_endpoint_on_a_closed_port_fails_within_seconds():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(EndpointError) as caught:
        check_endpoint(f"http://127.0.0.1:{port}/v1", "m")
    assert str(caught.value).startswith(f"LLM endpoint http://127.0.0.1:{port}/v1 unreachable after 3 attempts: ")
    assert time.monotonic() - started < 5


def test_chat_backend_checks_the_endpoint_once_with_its_timeout(serve, tmp_path: Path):
    server = serve(label_reply)
    with Store.open(tmp_path / "cache.duckdb") as store:
        chat = chat_backend(store, llm_base_url=server.base_url, llm_model="test-model", timeout=7)
        assert isinstance(chat, CachedChat) and chat.backend.timeout == 7
        chat.check()
        assert (server.gets, server.requests) == (["/v1/models"], [])
        with pytest.raises(EndpointError, match=r"does not serve model 'gpt-4o'; it serves: test-model$"):
            server.script = lambda number, request: Reply(404, {"message": "The model `gpt-4o` does not exist."})
            chat_backend(store, llm_base_url=server.base_url, llm_model="gpt-4o")
        with pytest.raises(SaeembedError, match="timeout must be a positive number of seconds, got 0"):
            chat_backend(store, llm_base_url=server.base_url, llm_model="test-model", timeout=0)


# -- complete_many -------------------------------------------------------------------------------------


def test_malformed_and_rejected_answers_are_returned_in_place_and_the_other_labels_kept(serve):
    server = serve(label_reply)
    firsts = ["cats", "NOTJSON", "dogs", "NOLABEL", "TOOLONG", "birds"]
    requests = [label_messages([f"{first} «here»", "more text"], ["other text"]) for first in firsts]
    labels: dict[int, LabelAnswer] = {}
    problems: dict[int, str] = {}

    def keep(index: int, answer: str | Exception) -> None:
        try:
            if isinstance(answer, Exception):
                raise answer
            labels[index] = parse_label(answer)
        except SaeembedError as error:
            problems[index] = str(error)

    with client(server) as chat:
        answers = complete_many(chat, requests, max_tokens=50, temperature=0, concurrency=3, on_result=keep)
    assert labels == {
        0: LabelAnswer("about cats", "Texts that mention cats."),
        2: LabelAnswer("about dogs", "Texts that mention dogs."),
        5: LabelAnswer("about birds", "Texts that mention birds."),
    }
    assert problems == {
        1: "label answer is not JSON: 'I think these texts are about sport.'",
        3: 'label answer has no "label": \'{"description": "texts about sport"}\'',
        4: f"LLM endpoint {server.base_url} rejected the request (400): "
        "This model's maximum context length is 8 tokens",
    }
    assert isinstance(answers[4], RequestFailed)
    assert answers[1] == "I think these texts are about sport."


def test_concurrency_is_bounded_and_results_come_in_request_order(serve):
    # Later requests answer sooner, so finishing order differs from request order.
    def script(number: int, request: dict[str, Any]) -> Reply:
        index = int(last_user_text(request))
        return completion(f"answer {index}")._replace(delay=0.05 * (10 - index))

    server = serve(script)
    finished: list[int] = []
    with client(server) as chat:
        answers = complete_many(
            chat,
            [[{"role": "user", "content": str(index)}] for index in range(10)],
            max_tokens=5,
            temperature=0,
            concurrency=3,
            on_result=lambda index, answer: finished.append(index),
        )
    assert answers == [f"answer {index}" for index in range(10)]
    assert server.max_in_flight == 3
    assert sorted(finished) == list(range(10))
    assert finished != sorted(finished)


def test_a_fatal_error_stops_the_run_after_reporting_every_finished_answer(serve):
    answered: set[int] = set()

    def script(number: int, request: dict[str, Any]) -> Reply:
        index = int(last_user_text(request))
        if index == 4:
            return Reply(401, {"error": {"message": "key revoked"}})
        answered.add(index)
        return completion(f"answer {index}")._replace(delay=0.05)

    server = serve(script)
    reported: dict[int, str | Exception] = {}
    with client(server) as chat, pytest.raises(EndpointError, match=r"authentication failed \(401\)"):
        complete_many(
            chat,
            [[{"role": "user", "content": str(index)}] for index in range(20)],
            max_tokens=5,
            temperature=0,
            concurrency=2,
            on_result=reported.__setitem__,
        )
    assert set(reported) == answered
    assert reported == {index: f"answer {index}" for index in answered}
    assert {0, 1, 2, 3} <= answered
    assert len(server.requests) < 10


# -- CachedChat ------------------------------------------------------------------------------------------


def test_the_cache_answers_repeated_requests_without_calls_even_after_reopening(serve, tmp_path: Path):
    server = serve(label_reply)
    requests = [label_messages([f"{word} «x»"], ["y"]) for word in ("alpha", "beta", "gamma", "delta")]
    path = tmp_path / "cache.duckdb"
    with client(server) as backend:
        with Store.open(path) as store:
            chat = CachedChat(backend, store)
            first = complete_many(chat, requests, max_tokens=40, temperature=0, concurrency=4)
            assert (chat.calls, chat.cache_hits, len(server.requests)) == (4, 0, 4)
            again = complete_many(chat, requests, max_tokens=40, temperature=0, concurrency=4)
            assert again == first
            assert (chat.calls, chat.cache_hits, len(server.requests)) == (4, 4, 4)
        with Store.open(path) as store:
            chat = CachedChat(backend, store)
            assert complete_many(chat, requests, max_tokens=40, temperature=0) == first
            assert (chat.calls, chat.cache_hits, len(server.requests)) == (0, 4, 4)
            assert chat.complete(requests[0], max_tokens=40, temperature=0.0) == first[0]
            assert (chat.calls, chat.cache_hits) == (0, 5)
            # Other generation settings are another request.
            chat.complete(requests[0], max_tokens=41, temperature=0)
            assert (chat.calls, len(server.requests)) == (1, 5)
            rows = store.query(
                "SELECT model, request->>'$.base_url', request->'$.messages', response FROM llm_cache "
                "WHERE request->>'$.max_tokens' = '40' ORDER BY response"
            ).rows()
    assert [row[0] for row in rows] == ["test-model"] * 4
    assert {row[1] for row in rows} == {server.base_url}
    assert json.loads(rows[0][2]) == requests[0]
    assert [row[3] for row in rows] == sorted(first)
    assert first[0] == '{"label": "about alpha", "description": "Texts that mention alpha."}'


def test_failed_requests_are_not_cached(serve, tmp_path: Path):
    server = serve(lambda number, request: completion(None) if number == 1 else completion("fine"))
    messages = [{"role": "user", "content": "hi"}]
    with client(server) as backend, Store.open(tmp_path / "cache.duckdb") as store:
        chat = CachedChat(backend, store)
        with pytest.raises(RequestFailed):
            chat.complete(messages, max_tokens=5, temperature=0)
        assert chat.complete(messages, max_tokens=5, temperature=0) == "fine"
        assert store.query("SELECT response FROM llm_cache").rows() == [("fine",)]


def prose_or_label(mode: dict[str, str]) -> Callable[[int, dict[str, Any]], Reply]:
    """Answers label prompts in prose while mode["answer"] is "prose" (an endpoint misconfigured, say),
    with JSON labels once it is "json"."""

    def script(number: int, request: dict[str, Any]) -> Reply:
        if mode["answer"] == "prose":
            return completion("Sure! The concept is about sport.")
        return label_reply(number, request)

    return script


def test_unusable_answers_are_not_cached_so_a_rerun_asks_again_once_the_endpoint_is_fixed(serve, tmp_path: Path):
    mode = {"answer": "prose"}
    server = serve(prose_or_label(mode))
    requests = [label_messages([f"{word} «x»"], ["y"]) for word in ("alpha", "beta", "gamma")]
    with client(server) as backend, Store.open(tmp_path / "cache.duckdb") as store:
        chat = CachedChat(backend, store)
        first = complete_many(chat, requests, max_tokens=40, temperature=0, parse=parse_label)
        assert first == ["Sure! The concept is about sport."] * 3
        assert (chat.calls, chat.cache_hits) == (3, 0)
        assert store.query("SELECT count(*) FROM llm_cache").rows() == [(0,)]
        mode["answer"] = "json"
        second = complete_many(chat, requests, max_tokens=40, temperature=0, parse=parse_label)
        assert [parse_label(answer).label for answer in second] == ["about alpha", "about beta", "about gamma"]
        assert (chat.calls, chat.cache_hits, len(server.requests)) == (6, 0, 6)
        assert complete_many(chat, requests, max_tokens=40, temperature=0, parse=parse_label) == second
        assert (chat.calls, chat.cache_hits, len(server.requests)) == (6, 3, 6)


def test_unusable_answers_cached_by_older_versions_are_asked_again_and_replaced(serve, tmp_path: Path):
    mode = {"answer": "prose"}
    server = serve(prose_or_label(mode))
    messages = label_messages(["delta «x»"], ["y"])
    with client(server) as backend, Store.open(tmp_path / "cache.duckdb") as store:
        chat = CachedChat(backend, store)
        # Without a parser every answer is cached, as older versions cached them.
        chat.complete(messages, max_tokens=40, temperature=0)
        assert store.query("SELECT response FROM llm_cache").rows() == [("Sure! The concept is about sport.",)]
        # Asked again, still unusable: no longer kept.
        assert chat.complete(messages, max_tokens=40, temperature=0, parse=parse_label).startswith("Sure!")
        assert (chat.calls, chat.cache_hits) == (2, 0)
        assert store.query("SELECT count(*) FROM llm_cache").rows() == [(0,)]
        chat.complete(messages, max_tokens=40, temperature=0)
        mode["answer"] = "json"
        fixed = chat.complete(messages, max_tokens=40, temperature=0, parse=parse_label)
        assert parse_label(fixed) == LabelAnswer("about delta", "Texts that mention delta.")
        assert store.query("SELECT response FROM llm_cache").rows() == [(fixed,)]
        assert chat.complete(messages, max_tokens=40, temperature=0, parse=parse_label) == fixed
        assert (chat.calls, chat.cache_hits, len(server.requests)) == (4, 1, 4)


def test_keyphrases_and_judgements_are_cached_only_when_they_parse(serve, tmp_path: Path):
    answers = iter(["I would group them by subject.", '{"keyphrases": ["football matches", "stock prices"]}'])
    server = serve(lambda number, request: completion(next(answers) if number <= 2 else "Maybe"))
    messages = keyphrase_messages("subject")
    with client(server) as backend, Store.open(tmp_path / "cache.duckdb") as store:
        chat = CachedChat(backend, store)
        with pytest.raises(MalformedAnswer, match='no "keyphrases" list'):
            complete_parsed(chat, messages, parse_keyphrases, max_tokens=200, temperature=0)
        for _ in range(2):
            phrases = complete_parsed(chat, messages, parse_keyphrases, max_tokens=200, temperature=0)
            assert phrases == ["football matches", "stock prices"]
        assert (chat.calls, chat.cache_hits) == (2, 1)
        judged = complete_many(
            chat, [judge_messages("sport", "A match.")], max_tokens=20, temperature=0, parse=parse_judgement
        )
        assert judged == ["Maybe"]
        assert store.query("SELECT count(*) FROM llm_cache").rows() == [(1,)]
    # Without a cache, complete_parsed parses all the same.
    with client(server) as backend, pytest.raises(MalformedAnswer, match="neither JSON"):
        complete_parsed(backend, judge_messages("sport", "A match."), parse_judgement, max_tokens=20, temperature=0)


def test_failures_carry_a_short_reason_to_count_them_by():
    reasons = {}
    for answer in ("Sports news", '{"name": "x"}', '{"label": " "}'):
        with pytest.raises(MalformedAnswer) as caught:
            parse_label(answer)
        reasons[answer] = failure_reason(caught.value)
    assert reasons == {"Sports news": "not JSON", '{"name": "x"}': 'no "label"', '{"label": " "}': "empty label"}
    assert failure_reason(RequestFailed("x", reason="request rejected (400)")) == "request rejected (400)"
    assert failure_reason(SaeembedError("x")) == "SaeembedError"


# -- prompts and parsers -------------------------------------------------------------------------------


def test_label_prompt_lists_the_examples_one_per_line_and_asks_for_json():
    [message] = label_messages(["The «Fed» raised\nrates.", "The «ECB» held."], ["The Lakers won."])
    assert message["role"] == "user"
    content = message["content"]
    active, inactive = content.split("Texts where the concept is not active:")
    assert "1. The «Fed» raised rates.\n2. The «ECB» held." in active
    assert "1. The Lakers won." in inactive
    assert '{"label": "<a short phrase of at most 8 words>", "description":' in content
    assert "Texts where the concept is not active" not in label_messages(["a «b»"], [])[0]["content"]
    with pytest.raises(SaeembedError, match="without activating examples"):
        label_messages([], ["x"])


def test_judge_prompt_shows_the_label_and_the_text():
    [message] = judge_messages("central banks", "The ECB\ncut rates.")
    assert '"central banks"' in message["content"]
    assert "Text:\nThe ECB cut rates.\n" in message["content"]
    assert '{"applies": true}' in message["content"]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            '{"label": "sports news", "description": "Articles about sport."}',
            LabelAnswer("sports news", "Articles about sport."),
        ),
        (
            '```json\n{"label": "  dates  ", "description": "Calendar\\n dates."}\n```',
            LabelAnswer("dates", "Calendar dates."),
        ),
        ('Sure! Here it is: {"label": "the word {x}"} Hope that helps.', LabelAnswer("the word {x}", None)),
        ('{bad} then {"label": "prices", "description": ""}', LabelAnswer("prices", None)),
    ],
)
def test_parse_label_reads_one_json_object_amid_fences_and_prose(answer, expected):
    assert parse_label(answer) == expected


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ("Sports news", "label answer is not JSON: 'Sports news'"),
        ('["sports"]', "label answer is not JSON: '[\"sports\"]'"),
        ('{"name": "sports"}', 'label answer has no "label": \'{"name": "sports"}\''),
        ('{"label": "  "}', 'label answer has an empty label: \'{"label": " "}\''),
        ('{"label": null}', "label answer has an empty label: '{\"label\": null}'"),
        ("x" * 200, "label answer is not JSON: '" + "x" * 79 + "…'"),
    ],
)
def test_parse_label_names_the_problem(answer, message):
    with pytest.raises(MalformedAnswer) as caught:
        parse_label(answer)
    assert str(caught.value) == message
    assert isinstance(caught.value, SaeembedError)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ('{"applies": true}', True),
        ('```json\n{"applies": false}\n```', False),
        ('The answer is {"applies": "yes"}.', True),
        ("Yes, the text is about central banks.", True),
        ("no.", False),
        ("  **No** it is not", False),
        ("True", True),
    ],
)
def test_parse_judgement(answer, expected):
    assert parse_judgement(answer) is expected


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ("Maybe", "judgement is neither JSON {\"applies\": …} nor yes/no: 'Maybe'"),
        ("Not really", "judgement is neither JSON {\"applies\": …} nor yes/no: 'Not really'"),
        ('{"applies": "sometimes"}', 'judgement has no true/false "applies": \'{"applies": "sometimes"}\''),
    ],
)
def test_parse_judgement_names_the_problem(answer, message):
    with pytest.raises(MalformedAnswer) as caught:
        parse_judgement(answer)
    assert str(caught.value) == message


def test_detection_score_is_balanced_accuracy():
    positives = [True, True, False, True]  # hit rate 3/4
    negatives = [False, True, False, False, False]  # correct rejections 4/5
    assert detection_score(positives, negatives) == pytest.approx(0.775)
    truth = [True] * len(positives) + [False] * len(negatives)
    assert detection_score(positives, negatives) == pytest.approx(balanced_accuracy_score(truth, positives + negatives))
    assert detection_score([True, True], [False]) == 1.0
    assert detection_score([True, True], [True, True]) == 0.5
    assert detection_score([False], [True]) == 0.0
    with pytest.raises(SaeembedError, match="both activating and non-activating"):
        detection_score([True], [])


# -- LocalTransformers -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_local_smollm2_answers_a_label_prompt_and_is_cached(tmp_path: Path):
    backend = LocalTransformers("smollm2-135m-instruct", device="cpu")
    assert backend.model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert backend.network.config.num_hidden_layers == 30  # the whole model, not a truncated reader
    messages = label_messages(
        ["The «Federal Reserve» raised rates.", "Traders await the «Fed» decision.", "The «central bank» held."],
        ["The Lakers won the game.", "A new phone was released.", "It rained in Paris."],
    )
    with Store.open(tmp_path / "cache.duckdb") as store:
        chat = CachedChat(backend, store)
        answer = chat.complete(messages, max_tokens=40, temperature=0)
        assert answer.strip()
        assert "<|im_end|>" not in answer
        assert chat.complete(messages, max_tokens=40, temperature=0) == answer
        assert (chat.calls, chat.cache_hits) == (1, 1)
        assert store.query("SELECT model, request->>'$.backend' FROM llm_cache").rows() == [
            ("HuggingFaceTB/SmolLM2-135M-Instruct", "LocalTransformers")
        ]
    # Greedy decoding is deterministic: a second generation gives the same text.
    assert backend.complete(messages, max_tokens=40, temperature=0) == answer
