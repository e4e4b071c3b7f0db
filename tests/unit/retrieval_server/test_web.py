"""retriever=web against a local stand-in of the Serper API on 127.0.0.1: nothing here reaches the internet.

The stand-in is a real HTTP server (uvicorn in a thread) that records every request it gets and answers
each one with the next scripted action ("ok", "429", "500", "hang", "garbage"; then `default`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.testclient import TestClient
from pydantic import ValidationError

from retrieval_server.client import Hit, RetrievalClient
from retrieval_server.config import ServeConfig, WebSearchConfig
from retrieval_server.server import WebService, create_app
from retrieval_server.web import MissingAPIKeyError, RateLimiter, WebSearchRetriever

KEY = "sk-test-7f3a9c1e5b2d"  # distinctive, so any leak is easy to find
HANG_S = 3.0


@dataclass
class StandIn:
    """Scripted Serper stand-in; `requests` holds (monotonic time, body, X-API-KEY) per request received."""

    url: str = ""
    script: list[str] = field(default_factory=list)
    default: str = "ok"
    requests: list[tuple[float, dict, str | None]] = field(default_factory=list)

    def reset(self) -> None:
        self.script, self.default, self.requests = [], "ok", []

    def queries(self) -> list[str]:
        return [body["q"] for _, body, _ in self.requests]


def _organic(query: str, num: int) -> list[dict]:
    n = 2 if query.startswith("rare") else num  # "rare ..." queries have fewer results than asked for
    return [
        {"title": f"{query} title {i}", "link": f"https://example.org/{query.replace(' ', '_')}/{i}",
         "snippet": f"snippet {i} about {query}", "position": i}
        for i in range(1, n + 1)
    ]  # fmt: skip


def _standin_app(standin: StandIn) -> FastAPI:
    app = FastAPI()

    @app.post("/search")
    async def search(request: Request):
        body = await request.json()
        key = request.headers.get("x-api-key")
        standin.requests.append((time.monotonic(), body, key))
        action = standin.script.pop(0) if standin.script else standin.default
        if key != KEY:  # echoes the refused key, as a careless API might: it must not reach our callers
            return JSONResponse({"message": f"Unauthorized: invalid key {key}", "statusCode": 403}, 403)
        if action == "429":
            return JSONResponse({"message": "Too many requests"}, 429, headers={"Retry-After": "0.3"})
        if action == "500":
            return JSONResponse({"message": "upstream exploded"}, 500)
        if action == "hang":
            await asyncio.sleep(HANG_S)
        if action == "garbage":
            return PlainTextResponse("<html>not json</html>")
        return {"searchParameters": body, "organic": _organic(body["q"], body["num"])}

    return app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def standin_server() -> Iterator[StandIn]:
    standin = StandIn()
    config = uvicorn.Config(
        _standin_app(standin), host="127.0.0.1", port=0, log_level="warning", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "stand-in did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    standin.url = f"http://127.0.0.1:{port}/search"
    yield standin
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def standin(standin_server: StandIn, monkeypatch: pytest.MonkeyPatch) -> StandIn:
    standin_server.reset()
    monkeypatch.setenv("SERPER_API_KEY", KEY)
    return standin_server


def _cfg(standin: StandIn, tmp_path: Path, **web) -> ServeConfig:
    settings = {
        "endpoint": standin.url,
        "cache_dir": tmp_path / "web-cache",
        "max_requests_per_second": 1000.0,
        "timeout_s": 2.0,
        "max_retries": 2,
        "backoff_s": 0.0,
        **web,
    }
    return ServeConfig(retriever="web", web=WebSearchConfig(**settings))


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator:
    """TestClient factory over `create_app(cfg)`, which loads the service in its background thread."""
    clients = []

    def make(cfg: ServeConfig) -> TestClient:
        app = create_app(cfg)
        assert app.state.ready.wait(10)
        clients.append(TestClient(app).__enter__())
        return clients[-1]

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def test_results_follow_the_retrieve_contract(standin: StandIn, tmp_path: Path, make_client) -> None:
    c = make_client(_cfg(standin, tmp_path))
    queries = ["who wrote hamlet", "capital of france"]
    r = c.post("/retrieve", json={"queries": queries, "topk": 4, "return_scores": True})
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert [len(hits) for hits in result] == [4, 4]
    for query, hits in zip(queries, result, strict=True):
        assert [set(h) for h in hits] == [{"document", "score"}] * 4
        assert [h["score"] for h in hits] == pytest.approx([1.0, 1 / 2, 1 / 3, 1 / 4])
        first = hits[0]["document"]
        assert first == {"id": f"https://example.org/{query.replace(' ', '_')}/1",
                         "contents": f'"{query} title 1"\nsnippet 1 about {query}'}  # fmt: skip
        hit = Hit(id=first["id"], contents=first["contents"], score=hits[0]["score"])
        assert (hit.title, hit.text) == (f"{query} title 1", f"snippet 1 about {query}")
    assert sorted(body["q"] for _, body, _ in standin.requests) == sorted(queries)
    assert all(body == {"q": body["q"], "num": 4} and key == KEY for _, body, key in standin.requests)

    plain = c.post("/retrieve", json={"queries": ["rare thing"]}).json()["result"]  # default topk 3, no scores
    assert [[set(d) for d in hits] for hits in plain] == [[{"id", "contents"}] * 2]  # the API had only 2
    assert standin.requests[-1][1] == {"q": "rare thing", "num": 3}

    health = c.get("/health").json()
    assert health["status"] == "ok" and health["retriever"] == "web" and health["num_docs"] is None
    assert (health["requests"], health["queries"], health["upstream_requests"]) == (2, 3, 3)


def test_request_limits_apply_as_for_index_retrievers(standin: StandIn, tmp_path: Path, make_client) -> None:
    c = make_client(_cfg(standin, tmp_path))
    assert c.post("/retrieve", json={"queries": ["a"], "topk": 101}).status_code == 422
    assert c.post("/retrieve", json={"queries": []}).status_code == 422
    assert standin.requests == []


@pytest.mark.parametrize("value", [None, "", "   "])
def test_missing_key_fails_at_start_up_naming_the_variable(
    standin: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("SERPER_API_KEY")
    else:
        monkeypatch.setenv("SERPER_API_KEY", value)
    cfg = _cfg(standin, tmp_path)
    with pytest.raises(MissingAPIKeyError, match="SERPER_API_KEY is not set or empty"):
        WebService.load(cfg)
    app = create_app(cfg)
    assert app.state.ready.wait(10)
    with TestClient(app) as c:
        h = c.get("/health")
        assert h.status_code == 503 and h.json()["status"] == "error" and "SERPER_API_KEY" in h.json()["detail"]
    assert standin.requests == []


def test_key_variable_name_comes_from_config(standin: StandIn, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("SERPER_API_KEY")
    cfg = _cfg(standin, tmp_path, api_key_env="MY_SEARCH_KEY")
    with pytest.raises(MissingAPIKeyError, match="MY_SEARCH_KEY"):
        WebService.load(cfg)
    monkeypatch.setenv("MY_SEARCH_KEY", KEY)
    assert WebService.load(cfg).retriever.cfg.api_key_env == "MY_SEARCH_KEY"


def test_429_is_retried_after_retry_after(standin: StandIn, tmp_path: Path, make_client) -> None:
    standin.script = ["429"]
    c = make_client(_cfg(standin, tmp_path))
    r = c.post("/retrieve", json={"queries": ["busy api"], "topk": 2})
    assert r.status_code == 200 and len(r.json()["result"][0]) == 2
    (t0, *_), (t1, *_) = standin.requests
    assert t1 - t0 >= 0.25  # Retry-After: 0.3 was honoured (backoff_s is 0)
    assert c.get("/health").json()["upstream_failures"] == 1


def test_persistent_500_is_a_clear_502_and_server_stays_up(standin: StandIn, tmp_path: Path, make_client) -> None:
    standin.default = "500"
    c = make_client(_cfg(standin, tmp_path))
    r = c.post("/retrieve", json={"queries": ["broken"], "topk": 2})
    assert r.status_code == 502
    assert "failed after 3 attempts: HTTP 500" in r.json()["detail"] and "upstream exploded" in r.json()["detail"]
    assert len(standin.requests) == 3  # max_retries=2: bounded
    standin.default = "ok"
    assert c.get("/health").status_code == 200
    assert c.post("/retrieve", json={"queries": ["broken"], "topk": 2}).status_code == 200  # failures not cached


def test_hanging_api_is_a_bounded_504(standin: StandIn, tmp_path: Path, make_client) -> None:
    standin.default = "hang"
    c = make_client(_cfg(standin, tmp_path, timeout_s=0.3, max_retries=1))
    start = time.monotonic()
    r = c.post("/retrieve", json={"queries": ["slow"], "topk": 2})
    assert time.monotonic() - start < HANG_S - 0.5
    assert r.status_code == 504 and "no answer within timeout_s=0.3" in r.json()["detail"]
    assert len(standin.requests) == 2


def test_unreachable_api_is_retried_then_a_502(standin: StandIn, tmp_path: Path, make_client) -> None:
    cfg = _cfg(standin, tmp_path, endpoint=f"http://127.0.0.1:{_free_port()}/search", max_retries=1)
    r = make_client(cfg).post("/retrieve", json={"queries": ["anyone there"]})
    assert r.status_code == 502 and "failed after 2 attempts: ConnectError" in r.json()["detail"]


def test_malformed_answer_is_a_502(standin: StandIn, tmp_path: Path, make_client) -> None:
    standin.default = "garbage"
    r = make_client(_cfg(standin, tmp_path)).post("/retrieve", json={"queries": ["q"]})
    assert r.status_code == 502 and "without an 'organic' list" in r.json()["detail"]
    assert len(standin.requests) == 1


def test_rejected_key_is_not_retried(standin: StandIn, tmp_path: Path, make_client, monkeypatch) -> None:
    monkeypatch.setenv("SERPER_API_KEY", "sk-wrong-key-0000")
    c = make_client(_cfg(standin, tmp_path))
    r = c.post("/retrieve", json={"queries": ["q1", "q2", "q3"], "topk": 2})
    assert r.status_code == 502 and "HTTP 403" in r.json()["detail"] and "$SERPER_API_KEY" in r.json()["detail"]
    assert "sk-wrong-key-0000" not in r.text and "invalid key ***" in r.text  # the echoed key is scrubbed
    assert 1 <= len(standin.requests) <= 3  # no retries; the first 403 cancels the request's other queries


def test_cache_answers_repeated_queries_without_the_api(standin: StandIn, tmp_path: Path, make_client) -> None:
    cfg = _cfg(standin, tmp_path)
    c = make_client(cfg)
    first = c.post("/retrieve", json={"queries": ["cached query"], "topk": 3, "return_scores": True}).json()
    second = c.post("/retrieve", json={"queries": ["cached query"], "topk": 3, "return_scores": True}).json()
    assert first == second and len(standin.requests) == 1
    health = c.get("/health").json()
    assert (health["cache_hits"], health["upstream_requests"]) == (1, 1)
    c.post("/retrieve", json={"queries": ["cached query"], "topk": 5})  # k is part of the key
    assert len(standin.requests) == 2

    again = make_client(cfg)  # a new server on the same folder: re-running an evaluation costs nothing
    assert again.post("/retrieve", json={"queries": ["cached query"], "topk": 3, "return_scores": True}).json() == first
    assert len(standin.requests) == 2 and again.get("/health").json()["cache_hits"] == 1

    uncached = make_client(_cfg(standin, tmp_path, cache_dir=None))
    uncached.post("/retrieve", json={"queries": ["cached query"], "topk": 3})
    assert len(standin.requests) == 3


def test_rate_limiter_spaces_call_starts() -> None:
    async def run() -> list[float]:
        limiter, starts = RateLimiter(20.0), []

        async def one() -> None:
            await limiter.wait()
            starts.append(time.monotonic())

        await asyncio.gather(*(one() for _ in range(6)))
        return starts

    starts = asyncio.run(run())
    assert len(starts) == 6
    assert starts[-1] - starts[0] >= 5 * 0.05 - 0.01  # never faster than 20/s (sleep may only run late)


def test_cancelled_callers_do_not_delay_the_rate_limiter() -> None:
    async def run() -> float:
        limiter = RateLimiter(2.0)  # 0.5 s apart
        await limiter.wait()
        waiters = [asyncio.ensure_future(limiter.wait()) for _ in range(10)]  # e.g. a request that timed out
        await asyncio.sleep(0.05)
        for w in waiters:
            w.cancel()
        start = time.monotonic()
        await limiter.wait()
        return time.monotonic() - start

    assert asyncio.run(run()) < 1.0  # the next free slot, not 10 slots later


def test_rate_limit_bounds_upstream_requests(standin: StandIn, tmp_path: Path, make_client) -> None:
    c = make_client(_cfg(standin, tmp_path, max_requests_per_second=4.0))
    r = c.post("/retrieve", json={"queries": [f"rated {i}" for i in range(5)], "topk": 1})
    assert r.status_code == 200 and len(standin.requests) == 5
    times = [t for t, _, _ in standin.requests]
    # 5 request starts at <= 4/s span >= 1.0 s. Times are arrivals at the stand-in, and the first request also
    # opens the connection, so allow 0.4 s of jitter; unlimited, the five arrive within a few milliseconds.
    assert times[-1] - times[0] >= 1.0 - 0.4


def test_key_never_in_logs_responses_or_reprs(
    standin: StandIn, tmp_path: Path, make_client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # httpx / httpcore debug logs included
    cfg = _cfg(standin, tmp_path, max_retries=1)
    c = make_client(cfg)
    texts = []
    for default in ("ok", "429", "500", "garbage"):
        standin.default = default
        texts.append(c.post("/retrieve", json={"queries": [f"leak check {default}"], "topk": 2}).text)
    texts.append(c.get("/health").text)
    service = WebService.load(cfg)
    texts += [repr(service), str(service), repr(service.retriever), repr(cfg), cfg.model_dump_json()]
    assert all(KEY not in t for t in texts)
    assert caplog.records and KEY not in caplog.text
    assert any("attempt 1/2 failed: HTTP 500" in m for m in caplog.messages)  # failures are logged, scrubbed


def test_serve_config_needs_an_index_except_for_web() -> None:
    assert ServeConfig(retriever="web").index is None
    with pytest.raises(ValidationError, match="needs an index directory"):
        ServeConfig(retriever="bm25")
    with pytest.raises(ValidationError, match="ray_replicas must be 0"):
        ServeConfig(retriever="web", ray_replicas=2)


def test_retriever_works_across_event_loops(standin: StandIn, tmp_path: Path) -> None:
    retriever = WebSearchRetriever.from_config(_cfg(standin, tmp_path, cache_dir=None).web)

    async def search() -> list:
        try:
            return await retriever.search(["loop a", "loop b", ""], 2)
        finally:
            await retriever.aclose()

    for _ in range(2):  # each asyncio.run is a new loop: the HTTP client must follow it
        hits = asyncio.run(search())
        assert [len(h) for h in hits] == [2, 2, 0]  # an empty query asks nothing upstream
    assert len(standin.requests) == 4


def test_cli_serves_web_without_index(standin: StandIn, tmp_path: Path) -> None:
    """`python -m retrieval_server serve --retriever web` end to end, and its start-up error without a key."""
    cmd = [sys.executable, "-m", "retrieval_server", "--log-level", "DEBUG", "serve", "--retriever", "web",
           "--port", "0", "--web-endpoint", standin.url, "--web-cache-dir", str(tmp_path / "cache")]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "SERPER_API_KEY"}
    failed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1 and "SERPER_API_KEY is not set or empty" in failed.stderr

    proc = subprocess.Popen(
        cmd, env={**env, "SERPER_API_KEY": KEY}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()
        assert "ready at http://127.0.0.1:" in line, proc.stderr.read() if proc.poll() is not None else line
        with RetrievalClient(line.split("ready at ")[1].strip(), timeout=10) as client:
            hits = client.retrieve(["cli query"], topk=2)
        assert [h.title for h in hits[0]] == ["cli query title 1", "cli query title 2"]
        assert standin.queries() == ["cli query"]
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert KEY not in stderr
