"""What the tests share: builders of real DuckDB stores with known concept vectors, a small SAE for the
real reader, the documents of the analysis tests, and an OpenAI-compatible HTTP server on 127.0.0.1 with
scripted replies. Tests import from here, never from one another."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from saeembed.model.sae import SaeConfig, SparseAutoencoder
from saeembed.storage.store import Store
from saeembed.storage.synthetic import synthetic_corpus, synthetic_sae, write_concept_lists

READER = "HuggingFaceTB/SmolLM2-135M-Instruct"


def build_store(
    path: Path,
    corpora: dict[str, list[tuple[str, dict, list[int | tuple[int, float]]]]],
    peak: dict[int, int] | None = None,
) -> Path:
    """A store whose documents (text, meta, concepts present) are given: one run per corpus, one SAE.
    A concept is an id (max activation 1 + id/100) or (id, max activation). Each concept peaks at token
    `peak[concept]` (default 1)."""
    with Store.open(path) as store:
        sae_id = synthetic_sae(store, 64)
        for corpus, docs in corpora.items():
            run_id, doc_ids = synthetic_corpus(
                store, corpus, [t for t, _, _ in docs], [m for _, m, _ in docs], sae_id=sae_id
            )
            concepts = [
                dict(f if isinstance(f, tuple) else (f, 1.0 + f / 100) for f in features) for _, _, features in docs
            ]
            write_concept_lists(store, run_id, doc_ids, concepts, peak=peak)
    return path


# Tests read layer 3: a truncated 4-layer reader keeps the suite fast while exercising the real model.
TEST_LAYER = 3


TEXTS = [
    "The striker scored twice as the home side won the cup final.",
    "Oil prices climbed after the cartel agreed to cut output.",
    "Astronomers found a planet orbiting two stars.",
    "Parliament passed the budget late on Tuesday.",
    "Chip makers reported record quarterly revenue.",
    "The coach was sacked after a run of five defeats.",
    "Hi",
    "A long sentence about the weather, the markets, the elections and the football results this weekend.",
]


def small_sae(folder: Path, *, d_in: int = 576, layer: int = TEST_LAYER, reader: str | None = None) -> Path:
    generator = torch.Generator().manual_seed(0)
    cfg = SaeConfig(
        arch="topk",
        d_in=d_in,
        d_sae=256,
        k=8,
        reader_model=reader or "HuggingFaceTB/SmolLM2-135M-Instruct",
        layer=layer,
    )
    sae = SparseAutoencoder.from_tensors(
        cfg,
        {
            "W_enc": torch.randn(d_in, 256, generator=generator) / d_in**0.5,
            "b_enc": torch.full((256,), 50.0),  # every kept pre-activation positive: exactly k per token
            "W_dec": torch.randn(256, d_in, generator=generator),
            "b_dec": torch.zeros(d_in),
        },
    )
    sae.save(folder)
    return folder


def planted(n: int, share_with_7: float, rng: np.random.Generator, side: str) -> list[tuple[str, dict, list[int]]]:
    """n documents: concept 1 everywhere, 2 in half of them, 7 in `share_with_7` of them."""
    docs = []
    for i in range(n):
        features = [1] + ([2] if i % 2 else []) + ([7] if i < share_with_7 * n else [])
        docs.append((f"Document {i} of side {side} about things.", {"side": side, "prompt": f"p{i}"}, features))
    rng.shuffle(docs)
    return docs


SPORTS = [
    "The striker scored twice as the football club won the league match.",
    "The tennis champion won the final in straight sets at Wimbledon.",
    "The basketball team beat their rivals in overtime to reach the playoffs.",
    "The goalkeeper saved a penalty and the soccer side held on to win.",
    "The sprinter broke the world record in the hundred metres final.",
    "The cricket captain hit a century as his side won the test match.",
    "The cyclist won the mountain stage of the Tour de France.",
    "The boxer knocked out the champion in the third round.",
]


FINANCE = [
    "Shares fell on Wall Street as the central bank raised interest rates.",
    "The company reported record quarterly earnings and raised its dividend.",
    "The stock market rallied after inflation figures came in lower than expected.",
    "Investors sold government bonds as yields rose to a ten-year high.",
    "The bank cut its profit forecast after loan losses grew.",
    "Oil prices climbed and energy stocks led the index higher.",
    "The retailer's shares slumped after weak holiday sales.",
    "The merger of the two banks was approved by regulators.",
]


OTHER = ["A recipe for lemon cake with poppy seeds.", "The weather will be mild with light rain."]


ALONE = ["The museum opened a new wing for modern art.", "Volunteers planted trees along the river."]


# Sports documents carry concepts from {1, 2, 3}, finance ones from {4, 5, 6}; two stray documents carry
# only concept 7 or 8 (present nowhere else: HDBSCAN noise); two carry none of 1–8. Concept 9 is everywhere.
SPORTS_CONCEPTS = [[1, 2, 3], [1, 2, 3], [1, 2], [1, 2, 3], [2, 3], [1, 2, 3], [1, 3], [1, 2, 3]]


FINANCE_CONCEPTS = [[4, 5, 6], [4, 5], [4, 5, 6], [4, 5, 6], [5, 6], [4, 5, 6], [4, 6], [4, 5, 6]]


CLUSTER_DOCS = (
    [(t, {"kind": "sports"}, [*c, 9]) for t, c in zip(SPORTS, SPORTS_CONCEPTS, strict=True)]
    + [(t, {"kind": "finance"}, [*c, 9]) for t, c in zip(FINANCE, FINANCE_CONCEPTS, strict=True)]
    + [(OTHER[0], {"kind": "other"}, [7, 9]), (OTHER[1], {"kind": "other"}, [8, 9])]
    + [(t, {"kind": "alone"}, [9]) for t in ALONE]
)


CLUSTER_LABELS = {
    1: "football and soccer matches",
    2: "winning a sports championship",
    3: "athletes and sports teams",
    4: "stock market shares",
    5: "banks and interest rates",
    6: "company earnings and profits",
    7: "baking recipes",
    8: "weather forecast",
    9: "the letter e",
}


def labelled_store(path: Path) -> Path:
    """The CLUSTER_DOCS store with the CLUSTER_LABELS as token labels of run 1."""
    build_store(path, {"c": CLUSTER_DOCS})
    with Store.open(path) as store:
        for feature_id, label in CLUSTER_LABELS.items():
            store.query(
                "INSERT INTO features (sae_id, feature_id, method, model, label, run_id, auroc) "
                "VALUES (1, ?, 'tokens', 'm', ?, 1, 0.9)",
                [feature_id, label],
            )
    return path


# 20 documents: concepts 1 and 2 together in 6, 1 alone in 1, 2 alone in 1; 3 and 4 together in 5 (always
# peaking on the same token); 9 in every document; 5 in the first 10 (meta half = 'first').
CORRELATE_DOCS = [
    (
        f"doc {i}",
        {"half": "first" if i < 10 else "second", "score": i},
        sorted(
            {9}
            | ({1, 2} if i < 6 else set())
            | ({1} if i == 6 else set())
            | ({2} if i == 7 else set())
            | ({3, 4} if 10 <= i < 15 else set())
            | ({5} if i < 10 else set())
        ),
    )
    for i in range(20)
]


CORRELATE_PEAK = {1: 1, 2: 2, 3: 4, 4: 4, 5: 5, 9: 9}


RELEASE_DATES = {"v1": "2024-01-15", "v2": "2024-04-15", "v3": "2024-07-15"}


EXPLORE_TOPICS = {"Sports": 10, "Business": 20, "Sci/Tech": 30, "World": 40}
"""Planted topics of `explore_docs` and the first of each one's four concepts (10–13 for Sports, …)."""


def explore_docs(per_topic: int = 30, seed: int = 0) -> list[tuple[str, dict, list[tuple[int, float]]]]:
    """Documents of four planted topics: each has three of its topic's four concepts and two of eight
    background ones (1–8), activations between 1 and 2."""
    rng = np.random.default_rng(seed)
    docs = []
    for topic, first in EXPLORE_TOPICS.items():
        for i in range(per_topic):
            own = rng.choice(np.arange(first, first + 4), 3, replace=False).tolist()
            background = rng.choice(np.arange(1, 9), 2, replace=False).tolist()
            concepts = [(int(f), float(rng.uniform(1, 2))) for f in sorted(own + background)]
            docs.append(
                (f"A {topic.lower()} story, number {i}, about one thing and another.", {"topic": topic}, concepts)
            )
    return docs


def release_docs(n: int = 40) -> list[tuple[str, dict, list[int]]]:
    """n prompts answered by three releases: concept 5 ("bullet list") in 4 of 40 answers of v1, 32 of v2
    and 2 of v3; concept 1 everywhere."""
    lists = {"v1": range(4), "v2": range(32), "v3": range(2)}
    return [
        (
            f"answer {release} {i}",
            {"prompt_id": f"p{i}", "model": "bot", "release": release, "released_at": RELEASE_DATES[release]},
            [1, 5] if i in lists[release] else [1],
        )
        for release in ("v2", "v1", "v3")  # stored out of release order on purpose
        for i in range(n)
    ]


class Reply(NamedTuple):
    status: int
    """HTTP status of the reply."""
    body: Any
    """JSON-serialisable body, or a str sent as it is."""
    headers: tuple[tuple[str, str], ...] = ()
    """Extra response headers (name, value)."""
    delay: float = 0.0
    """Seconds the server waits before answering (to hold requests in flight)."""


def completion(content: str | None, model: str = "test-model") -> Reply:
    """A 200 reply shaped like OpenAI's chat.completion object."""
    return Reply(
        200,
        {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        },
    )


def model_listing(*models: str) -> Reply:
    """A 200 reply shaped like OpenAI's GET /models list."""
    return Reply(
        200, {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "me"} for m in models]}
    )


TEST_MODELS = model_listing("test-model")
"""What the test server lists by default: the model every test asks for."""


class ChatServer:
    """An HTTP server on 127.0.0.1 answering POST /v1/chat/completions with `script(number, request)`,
    where number counts requests from 1, and GET /v1/models with `listing` (404 when None). It records
    every chat request, its headers, the paths of GET requests, and the most chat requests it ever had in
    flight at once."""

    def __init__(self, script: Callable[[int, dict[str, Any]], Reply], listing: Reply | None = TEST_MODELS) -> None:
        self.script = script
        self.listing = listing
        self.gets: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with server.lock:
                    server.gets.append(self.path)
                if self.path != "/v1/models" or server.listing is None:
                    self.send(Reply(404, {"detail": "Not Found"}))
                else:
                    self.send(server.listing)

            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions":
                    self.send(Reply(404, {"detail": "Not Found"}))
                    return
                with server.lock:
                    server.requests.append(request)
                    server.headers.append(dict(self.headers))
                    number = len(server.requests)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    reply = server.script(number, request)
                    time.sleep(reply.delay)
                finally:
                    with server.lock:
                        server.in_flight -= 1
                self.send(reply)

            def send(self, reply: Reply) -> None:
                data = (reply.body if isinstance(reply.body, str) else json.dumps(reply.body)).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in reply.headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def last_user_text(request: dict[str, Any]) -> str:
    return request["messages"][-1]["content"]
