"""The LLM layer of concept labelling (auto-interp, Jiang et al. 2025): chat backends, a DuckDB cache,
bounded concurrency, and the prompts and parsers of the labelling and detection protocol.

An LLM is shown one concept's activating texts (firing tokens marked «like this») and non-activating
texts and names the most specific property present in the former and absent from the latter; a judge
LLM then says, text by text, whether a label applies to held-out texts, and the balanced accuracy of
those judgements is the label's detection score.

Backends: any OpenAI-compatible chat endpoint (vLLM, Ollama, OpenAI) through `OpenAICompatible`, or a
local Hugging Face instruct model through `LocalTransformers` (offline). `CachedChat` wraps either and
keeps every usable answer in the `llm_cache` table, so a rerun never pays for the same answer twice and
asks again where the answer was unusable.

Errors: `EndpointError` means no request can succeed (authentication, unknown model, unreachable,
timing out) and stops `complete_many`; `RequestFailed` and `MalformedAnswer` concern one request or answer
only, and carry a short `reason` by which failures are counted. `check_endpoint` (or
`OpenAICompatible.check`) finds an `EndpointError` with one cheap request, before any heavy work.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import nullcontext
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

import httpx

from saeembed.errors import SaeembedError
from saeembed.model.hub import DEFAULT_READER, resolve_reader
from saeembed.storage.llm_cache import cached_answer, forget_answer, keep_answer
from saeembed.storage.store import Store

if TYPE_CHECKING:
    from saeembed.model.reader import Device, DType

logger = logging.getLogger(__name__)

Message = dict[str, str]
"""One chat message: {"role": "system" | "user" | "assistant", "content": text}."""

# 408 and 429 ask the client to come back later; 5xx are the server's own (often passing) trouble.
_RETRYABLE_STATUS = frozenset({408, 429})
_MODEL_MISSING = re.compile(r"model.{0,200}?(does not exist|not found)|unknown model", re.I | re.S)
# A request that timed out has already cost a whole timeout, and a server that hangs once mostly hangs
# again: timeouts are retried at most this often (3 attempts), fewer than fast failures.
TIMEOUT_RETRIES = 2
# The check retries a refused connection this often (a server just starting) and a timeout never: a
# model listing that does not come within the timeout will not come on a second try either.
CHECK_RETRIES = 2
# Statuses by which a server says it does not serve GET /models: the check falls back to a chat request.
_NO_LISTING_STATUS = frozenset({404, 405, 501})
T = TypeVar("T")


class EndpointError(SaeembedError):
    """The LLM endpoint cannot serve any request (authentication, unknown model, unreachable): stop."""


class UnknownModel(EndpointError):
    """The endpoint does not serve the model asked for."""


class RequestFailed(SaeembedError):
    """One request failed (rejected by the endpoint, or answered without content); others may succeed."""

    def __init__(self, message: str, *, reason: str = "request failed") -> None:
        super().__init__(message)
        self.reason = reason
        """A short phrase by which failures are counted, e.g. 'request rejected (400)'."""


class MalformedAnswer(SaeembedError):
    """An answer that does not follow the requested format; callers record it and continue."""

    def __init__(self, message: str, *, reason: str = "unusable answer") -> None:
        super().__init__(message)
        self.reason = reason
        """A short phrase by which failures are counted, e.g. 'not JSON'."""


def failure_reason(error: BaseException) -> str:
    """The short phrase failures are counted by: the error's `reason`, else its type's name."""
    reason = getattr(error, "reason", None)
    return reason if isinstance(reason, str) and reason else type(error).__name__


class ChatBackend(Protocol):
    """Something that answers chat messages: an endpoint, a local model, or a cache in front of either."""

    model: str
    """The model that answers, recorded with every label it makes."""

    def complete(self, messages: list[Message], *, max_tokens: int, temperature: float) -> str:
        """The assistant's reply to `messages`."""
        ...


def _one_line(text: str, limit: int = 160) -> str:
    """`text` on one line, cut to `limit` characters: server bodies and answers quoted in error messages."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _error_text(response: httpx.Response) -> str:
    """The message of an error response: OpenAI's error.message, Ollama's error, vLLM's message, or the body."""
    try:
        body = response.json()
    except ValueError:
        return _one_line(response.text)
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return _one_line(str(error["message"]))
        for field in ("error", "message", "detail"):
            if isinstance(body.get(field), str):
                return _one_line(body[field])
    return _one_line(response.text)


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds the server asks to wait (Retry-After as seconds or as an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


class OpenAICompatible:
    """A chat endpoint speaking OpenAI's chat-completions API: vLLM, Ollama, llama.cpp's server, OpenAI.

    `base_url` is the API root (e.g. http://localhost:8000/v1); requests go to {base_url}/chat/completions.
    The API key is read from the environment variable `api_key_env` when this is made; without it no
    Authorization header is sent, which local servers accept. `timeout` is the seconds one request may
    take (connecting, sending, each wait for the server's next bytes). Connection errors, 408, 429 and
    5xx are retried up to `max_retries` times after the first attempt, timeouts at most TIMEOUT_RETRIES
    times, with exponential backoff from `retry_base_delay` seconds (doubling, capped at
    `retry_max_delay`, with jitter so concurrent workers do not retry in step) or the wait the server's
    Retry-After asks for. So a hanging server fails a request after 3 × `timeout` plus a few seconds.
    `check()` makes one cheap request that fails at once when no request could succeed.
    Thread-safe: one connection pool serves every thread.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60,
        max_retries: int = 4,
        retry_base_delay: float = 1.0,
        retry_max_delay: float = 60.0,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise SaeembedError(f"LLM endpoint {base_url!r} is not an http:// or https:// URL")
        if max_retries < 0:
            raise SaeembedError(f"max_retries must be at least 0, got {max_retries}")
        if not timeout > 0:
            raise SaeembedError(f"the LLM timeout must be a positive number of seconds, got {timeout}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_retries = max_retries
        self.retry_base_delay = retry_base_delay
        self.retry_max_delay = retry_max_delay
        api_key = os.environ.get(api_key_env)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(headers=headers, timeout=timeout)
        self._checked = False

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpenAICompatible:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def complete(self, messages: list[Message], *, max_tokens: int, temperature: float) -> str:
        """The content of the first choice of one chat completion."""
        payload = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        response = self._send(
            "POST", "/chat/completions", payload, retries=self.max_retries, timeout_retries=TIMEOUT_RETRIES
        )
        return self._answer(response)

    def check(self) -> None:
        """Fail now, with one line (EndpointError), if no request could succeed: unreachable, timing out,
        authentication refused, wrong base URL, or a model the endpoint does not serve.

        One GET {base_url}/models (vLLM, Ollama, llama.cpp's server and OpenAI serve it): the model must
        be listed. A model the listing lacks is tried with a 1-token chat request before it is refused,
        as some servers answer for names they do not list (llama.cpp's serves its one model under any
        name; Ollama takes "llama3" for its listed "llama3:latest"). Where /models is not served, the
        1-token chat request is the check. Passes at once once passed.
        """
        if self._checked:
            return
        # Only a refused connection is retried (see CHECK_RETRIES): the check should cost seconds, not minutes.
        response = self._send("GET", "/models", None, retries=min(self.max_retries, CHECK_RETRIES), timeout_retries=0)
        status = response.status_code
        if status in _NO_LISTING_STATUS or (status >= 400 and status not in (401, 403)):
            self._probe()
        else:
            self._raise_for_endpoint(response)
            served = _listed_models(response)
            if served is None:  # a 200 that is not a model listing: the chat request decides
                self._probe()
            elif self.model not in served and f"{self.model}:latest" not in served:
                try:
                    self._probe()
                except (UnknownModel, RequestFailed):
                    shown = ", ".join(served[:10]) + (f" and {len(served) - 10} more" if len(served) > 10 else "")
                    raise EndpointError(
                        f"LLM endpoint {self.base_url} does not serve model '{self.model}'; it serves: {shown}"
                        if served
                        else f"LLM endpoint {self.base_url} serves no model (its /models list is empty)"
                    ) from None
        self._checked = True

    def _probe(self) -> None:
        """A 1-token chat request: endpoint errors raise; a request the endpoint rejects on its own (e.g. a
        model that wants more tokens) still shows the endpoint and the model answer."""
        try:
            self.complete([{"role": "user", "content": "Say OK."}], max_tokens=1, temperature=0.0)
        except RequestFailed as error:
            logger.info("LLM endpoint %s: the check request was rejected (%s); going on", self.base_url, error)

    def _send(
        self, method: str, path: str, payload: dict[str, Any] | None, *, retries: int, timeout_retries: int
    ) -> httpx.Response:
        """The first response that is not worth retrying, else EndpointError once the retries are spent."""
        url = f"{self.base_url}{path}"
        attempt = timeouts = 0
        while True:
            attempt += 1
            retry_after = None
            try:
                response = self._client.request(method, url, json=payload)
            except httpx.TimeoutException as error:
                timeouts += 1
                kind, problem = "timeout", type(error).__name__
                give_up = timeouts > timeout_retries or attempt > retries
            except httpx.TransportError as error:
                kind = "unreachable"
                problem = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
                give_up = attempt > retries
            else:
                status = response.status_code
                if status not in _RETRYABLE_STATUS and status < 500:
                    return response
                kind = "failing"
                message = _error_text(response)
                problem = f"HTTP {status}: {message}" if message else f"HTTP {status}"
                retry_after = _retry_after(response)
                give_up = attempt > retries
            if give_up:
                break
            delay = self._delay(attempt, retry_after)
            logger.warning("LLM endpoint %s: %s; retry %d in %.1f s", self.base_url, problem, attempt, delay)
            time.sleep(delay)
        where = f"LLM endpoint {self.base_url}"
        if kind == "timeout":
            # Not "unreachable": the server took the connection (or never answered it) but did not reply in time.
            if timeouts == attempt:
                tries = f" on each of {attempt} attempts" if attempt > 1 else ""
            else:
                tries = f" ({timeouts} of {attempt} attempts timed out)"
            raise EndpointError(f"{where} timed out after {self.timeout:g} s{tries} ({problem})")
        if kind == "unreachable":
            raise EndpointError(f"{where} unreachable after {attempt} attempts: {problem}")
        raise EndpointError(f"{where} still failing after {attempt} attempts: {problem}")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.retry_max_delay)
        ceiling = min(self.retry_base_delay * 2 ** (attempt - 1), self.retry_max_delay)
        return random.uniform(ceiling / 2, ceiling)

    def _raise_for_endpoint(self, response: httpx.Response) -> None:
        """EndpointError for the statuses that mean no request can succeed: authentication, redirects."""
        status = response.status_code
        where = f"LLM endpoint {self.base_url}"
        if status in (401, 403):
            variable = f"${self.api_key_env}"
            hint = f"check {variable}" if os.environ.get(self.api_key_env) else f"{variable} is not set"
            raise EndpointError(f"{where}: authentication failed ({status}): {hint}")
        if 300 <= status < 400:
            target = response.headers.get("location")
            raise EndpointError(f"{where} redirects ({status}) to {target}: use that address as the base URL")

    def _answer(self, response: httpx.Response) -> str:
        """The reply's content, or the error a non-retryable status means."""
        self._raise_for_endpoint(response)
        status = response.status_code
        where = f"LLM endpoint {self.base_url}"
        message = _error_text(response) if status >= 400 else ""
        # A 404 that does not mention a model is a wrong path (vLLM: {"detail": "Not Found"}), not a wrong model.
        if status == 404 and "model" not in message.lower():
            raise EndpointError(f"{where}: {response.url} not found (404): check the base URL (often ending in /v1)")
        if status == 404 or (status == 400 and _MODEL_MISSING.search(message)):
            raise UnknownModel(f"{where}: model '{self.model}' not found")
        if status >= 400:
            raise RequestFailed(
                f"{where} rejected the request ({status}): {message}", reason=f"request rejected ({status})"
            )
        try:
            choice = response.json()["choices"][0]
            content = choice["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise RequestFailed(
                f"{where}: response has no choices[0].message.content: {_one_line(response.text)}",
                reason="no content in the response",
            ) from None
        if not isinstance(content, str):
            finish = choice.get("finish_reason") if isinstance(choice, dict) else None
            raise RequestFailed(
                f"{where}: response has no choices[0].message.content (finish_reason: {finish})",
                reason="no content in the response",
            )
        return content


def _listed_models(response: httpx.Response) -> list[str] | None:
    """The model ids of an OpenAI model listing ({"data": [{"id": …}, …]}), or None if it is not one."""
    try:
        data = response.json()["data"]
        return [str(entry["id"]) for entry in data]
    except (ValueError, KeyError, TypeError):
        return None


class LocalTransformers:
    """A local Hugging Face instruct model answering chats: offline, no server needed.

    `model` is resolved like a reader (packaged alias such as smollm2-135m-instruct, hub id, local folder
    or .gguf file) and loaded whole. Greedy decoding when temperature is 0, sampling otherwise.
    Calls from several threads run one at a time: the model gains nothing from sharing the CPU.
    """

    def __init__(self, model: str = DEFAULT_READER, *, device: Device = "auto", dtype: DType = "auto") -> None:
        # torch is imported here, not at module level, so the HTTP backends load without it.
        import torch

        from saeembed.model.reader import _load_transformers, resolve_device, resolve_dtype

        source = resolve_reader(model)
        self.model = source.model_id
        self.device = resolve_device(device)
        # On CPU, auto means fp32 here, unlike the Reader: decoding one token at a time, bf16 autocast
        # re-casts the weights at every step, which made generation slower than plain fp32.
        cpu_auto = dtype == "auto" and self.device.type == "cpu"
        self.dtype = torch.float32 if cpu_auto else resolve_dtype(dtype, self.device)
        network, self.tokenizer, _ = _load_transformers(source)
        if not getattr(self.tokenizer, "chat_template", None):
            raise SaeembedError(f"model {self.model} has no chat template: LLM labels need an instruct model")
        # As in the Reader: on CPU the weights stay fp32 (a bf16 or fp16 dtype runs through autocast);
        # on GPU the weights themselves are cast.
        weights_dtype = self.dtype if self.device.type == "cuda" else torch.float32
        self.network = network.to(device=self.device, dtype=weights_dtype).eval()
        self._lock = threading.Lock()

    def complete(self, messages: list[Message], *, max_tokens: int, temperature: float) -> str:
        """The model's reply to `messages`, special tokens removed."""
        import torch
        from transformers import GenerationConfig

        prompt = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        input_ids = self.tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids.to(self.device)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        # An explicit config: the model's own generation_config may carry sampling defaults that would
        # otherwise turn greedy decoding into sampling (or warn about unused flags).
        config = GenerationConfig(
            max_new_tokens=max_tokens,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_p=None,
            top_k=None,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=pad,
        )
        autocast = (
            torch.autocast(self.device.type, dtype=self.dtype)
            if self.dtype != torch.float32 and self.device.type == "cpu"
            else nullcontext()
        )
        with self._lock, torch.inference_mode(), autocast:
            output = self.network.generate(
                input_ids, attention_mask=torch.ones_like(input_ids), generation_config=config
            )
        return self.tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True).strip()


class CachedChat:
    """A backend with its answers kept in the store's `llm_cache` table: a request already answered
    (same backend kind, endpoint, model, messages and settings) is read back and makes no call.

    Given the caller's `parse`, only usable answers count (see `complete`), so an endpoint that answered
    badly and was then fixed is asked again for exactly the answers that were unusable.

    Thread-safe: each call uses its own DuckDB cursor (a connection of its own to the same database),
    so worker threads never share the caller's connection, and cache writes run one at a time.
    `calls` counts requests that reached the backend, `cache_hits` those answered from the table.
    """

    def __init__(self, backend: ChatBackend, store: Store) -> None:
        self.backend = backend
        self.store = store
        self.model = backend.model
        self.calls = 0
        self.cache_hits = 0
        self._lock = threading.Lock()

    def _request(self, messages: list[Message], *, max_tokens: int, temperature: float) -> dict[str, Any]:
        """What identifies a request: hashed into the cache key and stored with the response."""
        return {
            "backend": type(self.backend).__name__,
            "base_url": getattr(self.backend, "base_url", None),
            "model": self.backend.model,
            "messages": messages,
            # Normalised, so that temperature 0 and 0.0 are one request.
            "max_tokens": int(max_tokens),
            "temperature": float(temperature),
        }

    def check(self) -> None:
        """The backend's check (`OpenAICompatible.check`), if it has one: fails now if no request could succeed."""
        check = getattr(self.backend, "check", None)
        if check is not None:
            check()

    def complete(
        self,
        messages: list[Message],
        *,
        max_tokens: int,
        temperature: float,
        parse: Callable[[str], object] | None = None,
    ) -> str:
        """The cached answer to this request, else the backend's (then cached).

        With `parse` (the caller's parser of the answer, e.g. `parse_label`), an answer is usable when
        parse accepts it (raises no SaeembedError): a cached answer it rejects (kept before the endpoint
        was fixed, or by an older version that cached everything) is asked again and replaced, and a
        new answer it rejects is returned (for the caller to report) but not cached, so a rerun asks
        again. Without `parse` every answer is cached. The answer is returned as text either way.
        """
        request = json.dumps(
            self._request(messages, max_tokens=max_tokens, temperature=temperature),
            sort_keys=True,
            ensure_ascii=False,
            separators=(",", ":"),
        )
        key = hashlib.sha256(request.encode()).hexdigest()
        with self._lock:
            cached = cached_answer(self.store, key)
        stale = cached is not None and not _usable(cached, parse)
        if cached is not None and not stale:
            with self._lock:
                self.cache_hits += 1
            return cached
        response = self.backend.complete(messages, max_tokens=max_tokens, temperature=temperature)
        usable = _usable(response, parse)
        with self._lock:
            self.calls += 1
            if usable:
                keep_answer(self.store, key, self.backend.model, request, response, replace=stale)
            elif stale:
                # Asked again and still unusable: the table keeps usable answers only.
                forget_answer(self.store, key, cached)
        return response


def _usable(answer: str, parse: Callable[[str], object] | None) -> bool:
    """Whether `parse` accepts `answer` (any answer is usable without a parser)."""
    if parse is None:
        return True
    try:
        parse(answer)
    except SaeembedError:
        return False
    return True


def chat_backend(
    store: Store,
    llm_local: str | None = None,
    llm_base_url: str | None = None,
    llm_model: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    *,
    timeout: float = 60,
) -> CachedChat | None:
    """The LLM the `--llm-*` options name, its calls cached in the database; None when none is named.

    An endpoint is checked here (`OpenAICompatible.check`: one cheap request), so a flow that builds its
    backend first fails in seconds, before loading readers or embedders. `timeout`: seconds per request.
    """
    if llm_local and llm_base_url:
        raise SaeembedError("give either --llm-local or --llm-base-url, not both")
    if llm_base_url:
        if not llm_model:
            raise SaeembedError("--llm-base-url needs --llm-model (the model name the endpoint serves)")
        backend = OpenAICompatible(llm_base_url, llm_model, api_key_env=api_key_env, timeout=timeout)
        try:
            backend.check()
        except BaseException:
            backend.close()
            raise
        return CachedChat(backend, store)
    if llm_local:
        return CachedChat(LocalTransformers(llm_local), store)
    return None


def check_endpoint(base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", timeout: float = 10) -> None:
    """Fail now (EndpointError, one line) if the endpoint at `base_url` cannot serve `model`: unreachable,
    timing out, refusing the key, a wrong base URL, or not serving the model (`OpenAICompatible.check`).
    Needs no store: for the CLI, before any flow starts."""
    with OpenAICompatible(base_url, model, api_key_env=api_key_env, timeout=timeout) as backend:
        backend.check()


def _is_fatal(error: BaseException) -> bool:
    """Endpoint errors end the run; so do errors that are not saeembed's (bugs should surface)."""
    return isinstance(error, EndpointError) or not isinstance(error, SaeembedError)


def complete_many(
    chat: ChatBackend,
    requests: Sequence[list[Message]],
    *,
    max_tokens: int,
    temperature: float,
    concurrency: int = 4,
    on_result: Callable[[int, str | Exception], None] | None = None,
    parse: Callable[[str], object] | None = None,
) -> list[str | Exception]:
    """Answers to `requests`, in request order, with at most `concurrency` requests in flight.

    `parse` is the caller's parser of one answer (e.g. `parse_label`): a `CachedChat` caches only answers
    it accepts and asks again for cached ones it rejects (see `CachedChat.complete`). Answers are returned
    as text, parsed or not: the caller parses them (and reports those that do not parse).

    `on_result(index, answer)` is called in the calling thread as each request finishes (so it may
    write to the caller's DuckDB connection). A request that fails on its own (`RequestFailed`, or
    any other `SaeembedError` but `EndpointError`) gets its exception in place of the answer. An
    `EndpointError` (or an unexpected exception) cancels the requests not yet started, waits for those
    in flight, reports every one that finished to on_result, then is raised: answers already made
    are kept by the caller.
    """
    if concurrency < 1:
        raise SaeembedError(f"concurrency must be at least 1, got {concurrency}")
    results: dict[int, str | Exception] = {}
    fatal: BaseException | None = None
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="saeembed-llm")
    try:
        # Only a cache takes `parse`: ChatBackend stays a plain messages → text protocol.
        options = {"parse": parse} if parse is not None and isinstance(chat, CachedChat) else {}
        futures = {
            pool.submit(chat.complete, list(messages), max_tokens=max_tokens, temperature=temperature, **options): index
            for index, messages in enumerate(requests)
        }
        for future in as_completed(futures):
            if future.cancelled():
                continue
            error = future.exception()
            if error is not None and _is_fatal(error):
                if fatal is None:
                    fatal = error
                    for other in futures:
                        other.cancel()
                continue
            index = futures[future]
            results[index] = future.result() if error is None else error
            if on_result is not None:
                on_result(index, results[index])
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if fatal is not None:
        raise fatal
    return [results[index] for index in range(len(requests))]


def complete_parsed(
    chat: ChatBackend, messages: list[Message], parse: Callable[[str], T], *, max_tokens: int, temperature: float
) -> T:
    """One request's answer parsed by `parse` (its MalformedAnswer raised); a `CachedChat` caches it only
    when it parses, as `complete_many` with `parse` does: for single requests (keyphrases, hypotheses)."""
    if isinstance(chat, CachedChat):
        return parse(chat.complete(messages, max_tokens=max_tokens, temperature=temperature, parse=parse))
    return parse(chat.complete(messages, max_tokens=max_tokens, temperature=temperature))


# -- prompts and parsers (Jiang et al. 2025: label from contrasting examples, judge on held-out ones) --


def _numbered(texts: Sequence[str]) -> str:
    # One line per text, so the numbering shows where each example starts and ends.
    return "\n".join(f"{number}. {' '.join(text.split())}" for number, text in enumerate(texts, start=1))


def label_messages(positives: Sequence[str], negatives: Sequence[str]) -> list[Message]:
    """The labelling prompt: texts where the concept fires (firing tokens already marked «like this»)
    and texts where it does not; asks for the most specific property present in the former and absent
    from the latter, as JSON {"label": ≤ 8 words, "description": one sentence}.

    One user message (no system message): some chat templates (Gemma's) refuse the system role.
    """
    if not positives:
        raise SaeembedError("cannot ask for a label without activating examples")
    parts = [
        "You are naming one concept that a sparse autoencoder found in a language model's representations of text.",
        f"Texts where the concept is active (the tokens where it fires most are marked «like this»):\n"
        f"{_numbered(positives)}",
    ]
    if negatives:
        parts.append(f"Texts where the concept is not active:\n{_numbered(negatives)}")
    contrast = " and that the inactive texts lack" if negatives else ""
    parts.append(
        f"What is the most specific property that the active texts share{contrast}? It may be a topic, a "
        "word or phrase, a grammatical or formatting pattern, a style, a language or a kind of text; the "
        'marked tokens show where it is strongest. Prefer a specific property (e.g. "mentions of the '
        'Federal Reserve") to a general one (e.g. "economics").'
    )
    parts.append(
        'Answer with only a JSON object: {"label": "<a short phrase of at most 8 words>", '
        '"description": "<one sentence describing the property>"}'
    )
    return [{"role": "user", "content": "\n\n".join(parts)}]


def judge_messages(label: str, text: str) -> list[Message]:
    """The detection prompt: does the concept `label` apply to `text`? Answer JSON {"applies": bool}.

    `text` is shown as it is: held-out texts carry no «markers», so the judge sees only the label.
    """
    content = (
        f'A concept is described as: "{label}".\n\n'
        f"Text:\n{' '.join(text.split())}\n\n"
        "Does this concept apply to the text, i.e. is the property present in it? "
        'Answer with only a JSON object: {"applies": true} or {"applies": false}'
    )
    return [{"role": "user", "content": content}]


MAX_KEYPHRASES = 5
"""Keyphrases an LLM may add to a clustering's --about text."""


def keyphrase_messages(about: str) -> list[Message]:
    """The expansion prompt of directed clustering (Jiang et al. 2025): the axis the user named →
    JSON {"keyphrases": [≤ 5 short phrases naming the properties along it]}."""
    content = (
        f'A user wants to group texts by this aspect: "{about}".\n\n'
        f"List up to {MAX_KEYPHRASES} short keyphrases (2–5 words each) naming the different properties a text "
        "can have along this aspect, specific enough to recognise in one text (for the aspect "
        '"tone": "angry complaint", "polite request", "enthusiastic praise").\n\n'
        'Answer with only a JSON object: {"keyphrases": ["...", "..."]}'
    )
    return [{"role": "user", "content": content}]


def parse_keyphrases(text: str) -> list[str]:
    """The keyphrases in an answer to `keyphrase_messages` (at most MAX_KEYPHRASES, duplicates and ';'
    dropped); MalformedAnswer when there is none."""
    answer = json_object(text)
    items = answer.get("keyphrases") if answer is not None else None
    if not isinstance(items, list):
        raise MalformedAnswer(
            f'keyphrase answer has no "keyphrases" list: {_one_line(text, 80)!r}', reason='no "keyphrases" list'
        )
    phrases: list[str] = []
    for item in items:
        phrase = " ".join(str(item).replace(";", ",").split()) if isinstance(item, str) else ""
        if phrase and phrase.lower() not in {p.lower() for p in phrases}:
            phrases.append(phrase)
    if not phrases:
        raise MalformedAnswer(f"keyphrase answer lists no keyphrase: {_one_line(text, 80)!r}", reason="no keyphrase")
    return phrases[:MAX_KEYPHRASES]


class LabelAnswer(NamedTuple):
    label: str
    """The concept's name: a short phrase."""
    description: str | None
    """One sentence describing the concept; None when the answer gave none."""


def json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in `text`: code fences and prose around it are skipped."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def parse_label(text: str) -> LabelAnswer:
    """The label and description in an answer to `label_messages`; MalformedAnswer when there is none."""
    answer = json_object(text)
    if answer is None:
        raise MalformedAnswer(f"label answer is not JSON: {_one_line(text, 80)!r}", reason="not JSON")
    if "label" not in answer:
        raise MalformedAnswer(f'label answer has no "label": {_one_line(text, 80)!r}', reason='no "label"')
    label = answer["label"]
    if not isinstance(label, str) or not label.strip():
        raise MalformedAnswer(f"label answer has an empty label: {_one_line(text, 80)!r}", reason="empty label")
    description = answer.get("description")
    description = " ".join(description.split()) if isinstance(description, str) and description.strip() else None
    return LabelAnswer(" ".join(label.split()), description)


_TRUTH = {"true": True, "yes": True, "false": False, "no": False}


def parse_judgement(text: str) -> bool:
    """The judge's verdict: JSON {"applies": true/false}, or an answer starting with yes/no (true/false)."""
    answer = json_object(text)
    if answer is not None:
        applies = answer.get("applies")
        if isinstance(applies, bool):
            return applies
        if isinstance(applies, str) and applies.strip().lower() in _TRUTH:
            return _TRUTH[applies.strip().lower()]
        raise MalformedAnswer(
            f'judgement has no true/false "applies": {_one_line(text, 80)!r}', reason='no true/false "applies"'
        )
    leading = re.match(r"\W*(yes|no|true|false)\b", text, re.I)
    if leading is None:
        raise MalformedAnswer(
            f'judgement is neither JSON {{"applies": …}} nor yes/no: {_one_line(text, 80)!r}',
            reason="neither JSON nor yes/no",
        )
    return _TRUTH[leading.group(1).lower()]


def detection_score(judgements_on_positives: Sequence[bool], judgements_on_negatives: Sequence[bool]) -> float:
    """Balanced accuracy of the judge: the mean of its hit rate on activating texts and its correct-
    rejection rate on non-activating ones (0.5 is chance, 1 perfect).

    Computed directly: it is sklearn's balanced_accuracy_score, whose import alone takes over a second.
    """
    if len(judgements_on_positives) == 0 or len(judgements_on_negatives) == 0:
        raise SaeembedError("a detection score needs judgements on both activating and non-activating texts")
    hit_rate = sum(map(bool, judgements_on_positives)) / len(judgements_on_positives)
    rejection_rate = sum(not judgement for judgement in judgements_on_negatives) / len(judgements_on_negatives)
    return (hit_rate + rejection_rate) / 2
