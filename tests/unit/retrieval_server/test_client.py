"""Client behaviour against a mocked transport: parsing, batching, retries, 4xx handling."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from retrieval_server.client import AsyncRetrievalClient, Hit, RetrievalClient, RetrievalError


def _fake_handler(calls: list[dict], fail_first: int = 0, status: int = 503):
    """A /retrieve that echoes each query as a hit id; the first `fail_first` calls answer `status`."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(200, json={"status": "ok"})
        body = json.loads(request.content)
        calls.append(body)
        if len(calls) <= fail_first:
            return httpx.Response(status, json={"detail": f"boom {status}"})
        k = body.get("topk", 2)
        result = [
            [{"document": {"id": f"{q}-{i}", "contents": f'"T {q}"\nbody {i}'}, "score": 1.0 - i} for i in range(k)]
            for q in body["queries"]
        ]
        return httpx.Response(200, json={"result": result})

    return handler


def test_hit_title_and_text() -> None:
    h = Hit(id="1", contents='"Some Title"\nline one\nline two', score=None)
    assert h.title == "Some Title"
    assert h.text == "line one\nline two"
    assert Hit(id="2", contents="no newline", score=1.0).text == ""


def test_retrieve_batches_and_keeps_order() -> None:
    calls: list[dict] = []
    with RetrievalClient(transport=httpx.MockTransport(_fake_handler(calls)), batch_size=2, backoff=0) as c:
        out = c.retrieve(["a", "b", "c"], topk=3)
    assert [len(c["queries"]) for c in calls] == [2, 1]
    assert all(c["return_scores"] is True for c in calls)
    assert [[h.id for h in hits] for hits in out] == [[f"{q}-{i}" for i in range(3)] for q in "abc"]
    assert out[1][0].title == "T b" and out[1][2].score == pytest.approx(-1.0)


def test_retrieve_parses_scoreless_rows() -> None:
    handler = lambda r: httpx.Response(200, json={"result": [[{"id": "x", "contents": '"A"\nb'}]]})  # noqa: E731
    with RetrievalClient(transport=httpx.MockTransport(handler)) as c:
        assert c.retrieve(["q"]) == [[Hit(id="x", contents='"A"\nb', score=None)]]


def test_retries_5xx_then_succeeds() -> None:
    calls: list[dict] = []
    with RetrievalClient(transport=httpx.MockTransport(_fake_handler(calls, fail_first=2)), backoff=0) as c:
        out = c.retrieve(["q"], topk=1)
    assert len(calls) == 3 and out[0][0].id == "q-0"


def test_gives_up_after_max_retries() -> None:
    calls: list[dict] = []
    client = RetrievalClient(transport=httpx.MockTransport(_fake_handler(calls, 99)), max_retries=2, backoff=0)
    with pytest.raises(RetrievalError, match="after 3 attempts.*boom 503"):
        client.retrieve(["q"])
    assert len(calls) == 3


def test_4xx_is_not_retried_and_carries_message() -> None:
    calls: list[dict] = []
    client = RetrievalClient(transport=httpx.MockTransport(_fake_handler(calls, 99, status=422)), backoff=0)
    with pytest.raises(RetrievalError, match="boom 422") as info:
        client.retrieve(["q"])
    assert info.value.status_code == 422 and len(calls) == 1


def test_connection_error_is_retried() -> None:
    attempts = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        raise httpx.ConnectError("refused", request=request)

    client = RetrievalClient(transport=httpx.MockTransport(handler), max_retries=1, backoff=0)
    with pytest.raises(RetrievalError, match="ConnectError"):
        client.health()
    assert len(attempts) == 2


def test_string_instead_of_list_is_rejected() -> None:
    with pytest.raises(TypeError):
        RetrievalClient().retrieve("a query")  # type: ignore[arg-type]


def test_async_client_batches_retries_and_orders() -> None:
    calls: list[dict] = []

    async def main() -> list[list[Hit]]:
        transport = httpx.MockTransport(_fake_handler(calls, fail_first=1, status=429))
        async with AsyncRetrievalClient(transport=transport, batch_size=2, backoff=0) as c:
            assert (await c.health()) == {"status": "ok"}
            return await c.retrieve(["a", "b", "c", "d", "e"], topk=1)

    out = asyncio.run(main())
    assert [hits[0].id for hits in out] == ["a-0", "b-0", "c-0", "d-0", "e-0"]
    assert len(calls) == 4  # 3 chunks + 1 retried 429


@pytest.mark.parametrize(("status", "retried"), [(429, True), (500, True), (503, True), (400, False), (422, False)])
def test_sync_and_async_clients_retry_the_same_failures(status: int, retried: bool) -> None:
    sync_calls: list[dict] = []
    async_calls: list[dict] = []

    def attempt_sync() -> None:
        with RetrievalClient(transport=httpx.MockTransport(_fake_handler(sync_calls, 1, status)), backoff=0) as c:
            c.retrieve(["q"])

    async def attempt_async() -> None:
        transport = httpx.MockTransport(_fake_handler(async_calls, 1, status))
        async with AsyncRetrievalClient(transport=transport, backoff=0) as c:
            await c.retrieve(["q"])

    if retried:
        attempt_sync()
        asyncio.run(attempt_async())
    else:
        with pytest.raises(RetrievalError, match=f"boom {status}"):
            attempt_sync()
        with pytest.raises(RetrievalError, match=f"boom {status}"):
            asyncio.run(attempt_async())
    assert len(sync_calls) == len(async_calls) == (2 if retried else 1)


# A bare ASGI app on uvicorn's defaults (its 5 s keep-alive) that answers each request with the client port it
# came from; argv[1] is the port to serve on.
PORT_ECHO_SERVER = """
import json, sys, uvicorn
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    port = scope["client"][1]
    body = {"status": "ok", "port": port} if scope["path"] == "/health" else {
        "choices": [{"message": {"content": str(port)}, "finish_reason": "stop"}], "usage": {}}
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def test_clients_drop_idle_connections_before_uvicorn_closes_them(tmp_path) -> None:
    """Against a real uvicorn server (its default 5 s keep-alive, as the retrieval server and vLLM run), both
    HTTP clients reuse a connection right away but open a fresh one after `KEEPALIVE_EXPIRY_S` idle, so they
    never send on a connection the server may be closing."""
    import sys

    import uvicorn

    from retrieval_server.client import KEEPALIVE_EXPIRY_S
    from sage_rl.llm import OpenAIChatModel
    from sage_rl.serving import free_port, serving

    assert KEEPALIVE_EXPIRY_S < uvicorn.Config(app=None).timeout_keep_alive
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    health, chat = [], []

    async def requests(client: RetrievalClient) -> None:
        llm = OpenAIChatModel(f"{url}/v1", "m", max_retries=0)
        for pause in (0.0, 0.0, KEEPALIVE_EXPIRY_S + 0.5):
            await asyncio.sleep(pause)
            health.append(client.health()["port"])
            chat.append((await llm.chat([{"role": "user", "content": "x"}])).text)
        await llm.aclose()

    with serving([sys.executable, "-c", PORT_ECHO_SERVER, str(port)], f"{url}/health", tmp_path / "server.log",
                 timeout=60), RetrievalClient(url, max_retries=0) as client:
        asyncio.run(requests(client))
    assert health[0] == health[1] != health[2]  # reused at once, fresh after the idle pause
    assert chat[0] == chat[1] != chat[2]
