"""Fault injection for the OpenAI-compatible client against a real local HTTP server: 500s, 429s, timeouts,
malformed JSON, 4xx, concurrency bound, API key handling, token accounting.

The server is the standard library's ThreadingHTTPServer in a thread of the test process (as in
tests/llm_server.py), so the client is tested through sockets and public APIs only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sage_rl.llm import LLMError, MeteredChatModel, OpenAIChatModel, ScriptedChatModel

OK = {"choices": [{"message": {"role": "assistant", "content": "<answer> Paris"}, "finish_reason": "stop"}],
      "usage": {"prompt_tokens": 11, "completion_tokens": 3}}
HANG_S = 10.0  # how long a `hang` request takes: far beyond any client timeout or test bound here


class FakeServer:
    """Serves /v1/chat/completions; each request takes the next scripted behaviour (the last one repeats).

    Behaviours: `ok`, `null` (content null), an HTTP status such as `500`, `hang` (answers only after HANG_S),
    `malformed` (truncated JSON), `badshape` (JSON without `choices`).
    """

    def __init__(self, behaviours: list[str], delay: float = 0.0) -> None:
        self.behaviours = behaviours
        self.delay = delay
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()

    def begin(self, body: dict, headers: dict) -> str:
        with self._lock:
            self.requests.append(body)
            self.headers.append(headers)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return self.behaviours[min(len(self.requests) - 1, len(self.behaviours) - 1)]

    def end(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def respond(self, behaviour: str) -> tuple[int, bytes]:
        time.sleep(self.delay)
        if behaviour == "hang":
            time.sleep(HANG_S)
        if behaviour.isdigit():
            return int(behaviour), f"error {behaviour}".encode()
        if behaviour == "malformed":
            return 200, b'{"choices": ['
        if behaviour == "badshape":
            return 200, b'{"id": "x"}'
        if behaviour == "null":
            return 200, json.dumps({"choices": [{"message": {"content": None}, "finish_reason": "length"}]}).encode()
        return 200, json.dumps(OK).encode()


def _handler(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            return

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            behaviour = server.begin(body, dict(self.headers))
            try:
                status, data = server.respond(behaviour)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                pass
            finally:
                server.end()

    return Handler


@contextmanager
def serving(behaviours: list[str], delay: float = 0.0) -> Iterator[tuple[str, FakeServer]]:
    """(base URL up to /v1, the scripted server) while it runs on a loopback port."""
    fake = FakeServer(behaviours, delay)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    httpd.daemon_threads = True  # a `hang` handler must not hold up the test's exit
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", fake
    finally:
        httpd.shutdown()
        httpd.server_close()


def ask(llm: OpenAIChatModel, **kw):
    """One chat call in a fresh event loop, closing the client afterwards."""

    async def main():
        try:
            return await llm.chat([{"role": "user", "content": "hi"}], **kw)
        finally:
            await llm.aclose()

    return asyncio.run(main())


def client(url: str, **kw) -> OpenAIChatModel:
    # A 2 s timeout is loose enough for a loaded test machine, so that only `hang` ever times out.
    return OpenAIChatModel(url, "m", **({"backoff": 0.01, "timeout": 2.0, "max_retries": 3} | kw))


@pytest.mark.parametrize("faults", [["500"], ["503", "429"], ["hang"], ["malformed"], ["badshape", "502"]])
def test_transient_faults_are_retried_then_succeed(faults):
    with serving([*faults, "ok"]) as (url, server):
        c = ask(client(url, extra_body={"top_k": 5}), stop=["</answer>"], max_tokens=7, extra_body={"seed": 1})
    assert (c.text, c.prompt_tokens, c.completion_tokens, c.finish_reason) == ("<answer> Paris", 11, 3, "stop")
    assert len(server.requests) == len(faults) + 1
    sent = server.requests[-1]
    assert (sent["stop"], sent["max_tokens"], sent["top_k"], sent["seed"]) == (["</answer>"], 7, 5, 1)


@pytest.mark.parametrize("fault", ["500", "malformed"])
def test_persistent_faults_raise_llm_error_after_the_retries(fault):
    with serving([fault]) as (url, server):
        with pytest.raises(LLMError, match="gave up after 3 attempts"):
            ask(client(url, max_retries=2))
    assert len(server.requests) == 3


def test_a_hanging_server_is_bounded_by_the_timeouts():
    # What bounds a hanging judge in the reward: (max_retries + 1) timeouts plus short backoffs (< 0.1 s here).
    # The 3 s slack absorbs a loaded test machine; a request that is not timed out takes HANG_S = 10 s alone.
    timeout, max_retries = 0.3, 2
    with serving(["hang"]) as (url, server):
        start = time.monotonic()
        with pytest.raises(LLMError, match="gave up after 3 attempts"):
            ask(client(url, timeout=timeout, max_retries=max_retries))
        elapsed = time.monotonic() - start
    assert len(server.requests) == max_retries + 1
    assert elapsed < (max_retries + 1) * timeout + 3.0, elapsed


def test_client_errors_are_not_retried():
    with serving(["400"]) as (url, server):
        with pytest.raises(LLMError, match="HTTP 400"):
            ask(client(url))
    assert len(server.requests) == 1


def test_null_content_is_read_as_empty_text():
    with serving(["null"]) as (url, _):
        c = ask(client(url))
    assert (c.text, c.finish_reason, c.prompt_tokens) == ("", "length", 0)


def test_concurrency_is_bounded():
    async def main(url):
        llm = client(url, max_concurrency=3)
        try:
            await asyncio.gather(*(llm.chat([{"role": "user", "content": str(i)}]) for i in range(12)))
        finally:
            await llm.aclose()

    with serving(["ok"], delay=0.3) as (url, server):
        asyncio.run(main(url))
    assert len(server.requests) == 12 and 2 <= server.max_in_flight <= 3  # concurrent, never more than 3


def test_api_key_comes_from_the_named_env_var_and_is_never_shown(monkeypatch, caplog):
    monkeypatch.setenv("SAGE_TEST_KEY", "sk-secret-123")
    caplog.set_level(logging.DEBUG)
    with serving(["500", "ok"]) as (url, server):
        llm = client(url, api_key_env="SAGE_TEST_KEY")
        assert "sk-secret" not in repr(llm) and "sk-secret" not in str(llm)
        ask(llm)
    assert {k.lower(): v for k, v in server.headers[-1].items()}["authorization"] == "Bearer sk-secret-123"
    assert "LLM m attempt 1: HTTP 500" in caplog.text  # the retry was logged ...
    assert "sk-secret" not in caplog.text  # ... without the key
    monkeypatch.delenv("SAGE_TEST_KEY")
    with pytest.raises(LLMError, match="SAGE_TEST_KEY"):
        OpenAIChatModel("http://x/v1", "m", api_key_env="SAGE_TEST_KEY")


def test_scripted_model_applies_stop_strings_and_meter_counts():
    model = MeteredChatModel(ScriptedChatModel(lambda m: "<search> a b </search><information>x</information>"))
    c = asyncio.run(model.chat([{"role": "user", "content": "one two three"}], stop=["</search>"]))
    assert c.text == "<search> a b " and c.finish_reason == "stop"
    assert (model.usage.calls, model.usage.prompt_tokens, model.usage.completion_tokens) == (1, 3, 3)
