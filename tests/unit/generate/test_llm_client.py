"""Fault injection for the OpenAI-compatible client against a fake HTTP server: 500s, 429s, timeouts,
malformed JSON, 4xx, concurrency bound, API key handling, token accounting."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web

from sage_rl.llm import LLMError, MeteredChatModel, OpenAIChatModel, ScriptedChatModel

OK = {"choices": [{"message": {"role": "assistant", "content": "<answer> Paris"}, "finish_reason": "stop"}],
      "usage": {"prompt_tokens": 11, "completion_tokens": 3}}


class FakeServer:
    """Serves /v1/chat/completions; each request takes the next scripted behaviour (the last one repeats)."""

    def __init__(self, behaviours: list[str], delay: float = 0.0) -> None:
        self.behaviours = behaviours
        self.delay = delay
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.in_flight = self.max_in_flight = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(await request.json())
        self.headers.append(dict(request.headers))
        behaviour = self.behaviours[min(len(self.requests) - 1, len(self.behaviours) - 1)]
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            if behaviour == "slow":
                await asyncio.sleep(1.0)
            if behaviour.isdigit():
                return web.Response(status=int(behaviour), text=f"error {behaviour}")
            if behaviour == "malformed":
                return web.Response(status=200, text='{"choices": [', content_type="application/json")
            if behaviour == "badshape":
                return web.json_response({"id": "x"})
            return web.json_response(OK)
        finally:
            self.in_flight -= 1


def with_server(server: FakeServer, body: Callable[[str], Awaitable[None]]) -> None:
    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", server.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            await body(f"http://127.0.0.1:{port}/v1")
        finally:
            await runner.cleanup()

    asyncio.run(main())


def client(url: str, **kw) -> OpenAIChatModel:
    return OpenAIChatModel(url, "m", **({"backoff": 0.01, "timeout": 0.3, "max_retries": 3} | kw))


@pytest.mark.parametrize("faults", [["500"], ["503", "429"], ["slow"], ["malformed"], ["badshape", "502"]])
def test_transient_faults_are_retried_then_succeed(faults):
    server = FakeServer([*faults, "ok"])

    async def body(url):
        llm = client(url)
        c = await llm.chat([{"role": "user", "content": "hi"}], stop=["</answer>"], max_tokens=7)
        await llm.aclose()
        assert (c.text, c.prompt_tokens, c.completion_tokens, c.finish_reason) == ("<answer> Paris", 11, 3, "stop")

    with_server(server, body)
    assert len(server.requests) == len(faults) + 1
    assert server.requests[-1]["stop"] == ["</answer>"] and server.requests[-1]["max_tokens"] == 7


@pytest.mark.parametrize("fault", ["500", "slow", "malformed"])
def test_persistent_faults_raise_llm_error_after_the_retries(fault):
    server = FakeServer([fault])

    async def body(url):
        llm = client(url, max_retries=2)
        with pytest.raises(LLMError, match="gave up after 3 attempts"):
            await llm.chat([{"role": "user", "content": "hi"}])
        await llm.aclose()

    with_server(server, body)
    assert len(server.requests) == 3


def test_client_errors_are_not_retried():
    server = FakeServer(["400"])

    async def body(url):
        llm = client(url)
        with pytest.raises(LLMError, match="HTTP 400"):
            await llm.chat([{"role": "user", "content": "hi"}])
        await llm.aclose()

    with_server(server, body)
    assert len(server.requests) == 1


def test_concurrency_is_bounded(monkeypatch):
    server = FakeServer(["ok"], delay=0.05)

    async def body(url):
        llm = client(url, max_concurrency=3)
        await asyncio.gather(*(llm.chat([{"role": "user", "content": str(i)}]) for i in range(12)))
        await llm.aclose()

    with_server(server, body)
    assert len(server.requests) == 12 and server.max_in_flight == 3


def test_api_key_comes_from_the_named_env_var_and_is_never_shown(monkeypatch):
    monkeypatch.setenv("SAGE_TEST_KEY", "sk-secret-123")
    server = FakeServer(["ok"])

    async def body(url):
        llm = client(url, api_key_env="SAGE_TEST_KEY")
        assert "sk-secret" not in repr(llm) and "sk-secret" not in str(llm)
        await llm.chat([{"role": "user", "content": "hi"}])
        await llm.aclose()

    with_server(server, body)
    assert server.headers[0]["Authorization"] == "Bearer sk-secret-123"
    monkeypatch.delenv("SAGE_TEST_KEY")
    with pytest.raises(LLMError, match="SAGE_TEST_KEY"):
        OpenAIChatModel("http://x/v1", "m", api_key_env="SAGE_TEST_KEY")


def test_scripted_model_applies_stop_strings_and_meter_counts():
    model = MeteredChatModel(ScriptedChatModel(lambda m: "<search> a b </search><information>x</information>"))
    c = asyncio.run(model.chat([{"role": "user", "content": "one two three"}], stop=["</search>"]))
    assert c.text == "<search> a b " and c.finish_reason == "stop"
    assert (model.usage.calls, model.usage.prompt_tokens, model.usage.completion_tokens) == (1, 3, 3)
