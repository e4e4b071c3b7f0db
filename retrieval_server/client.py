"""HTTP client for the `/retrieve` contract (sync and async).

This is the only module of `retrieval_server` that `sage_rl` may import. It depends on httpx alone (no
torch, FAISS or FastAPI), so importing it is cheap. It speaks the Search-R1 contract, so it also works
against Search-R1's own server or any copy of it.

Retries: one `RetryPolicy`, shared by the sync and the async client. Connection errors, timeouts, HTTP 5xx
and 429 are retried up to `max_retries` times, waiting `backoff * 2**n` seconds before retry n (0, 1, ...).
A 4xx other than 429 is the caller's fault and is raised at once as `RetrievalError` carrying the server's
message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

logger = logging.getLogger(__name__)

KEEPALIVE_EXPIRY_S = 2.0
"""Seconds a pooled connection may sit idle before the client drops it. uvicorn (the retrieval server's, vLLM's)
closes idle connections after 5 s and httpx keeps them 5 s by default, so a request could go out on a connection
the server is closing at that moment; below the server's keep-alive, it has none to close under a request.
(The few ReadErrors each quickstart evaluation used to retry were another matter: the client, starved of the CPU by
its own model server, read responses seconds late; they went when the server stopped outranking it, see
`sage_rl.serving.lower_priority`.)"""


def pool_limits(max_connections: int) -> httpx.Limits:
    """The connection pool of an httpx client of a uvicorn server: `max_connections` kept, none past
    `KEEPALIVE_EXPIRY_S` idle."""
    return httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections,
                        keepalive_expiry=KEEPALIVE_EXPIRY_S)


@dataclass(frozen=True)
class Hit:
    """One retrieved passage.

    >>> h = Hit(id="7", contents='"Paris"\\nParis is the capital of France.', score=0.5)
    >>> h.title, h.text
    ('Paris', 'Paris is the capital of France.')
    """

    id: str
    contents: str  # '"Title"\ntext', exactly as in the corpus
    score: float | None

    @property
    def title(self) -> str:
        """First line of `contents` with surrounding double quotes stripped (Search-R1 convention)."""
        first = self.contents.split("\n", 1)[0]
        if len(first) >= 2 and first.startswith('"') and first.endswith('"'):
            return first[1:-1]
        return first

    @property
    def text(self) -> str:
        """Everything after the first line of `contents`."""
        parts = self.contents.split("\n", 1)
        return parts[1] if len(parts) == 2 else ""


class RetrievalError(Exception):
    """Raised on a 4xx answer or after retries are exhausted; the message includes the server's."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


def _chunks(queries: Sequence[str], size: int) -> list[list[str]]:
    return [list(queries[i : i + size]) for i in range(0, len(queries), size)]


def _check_queries(queries: Sequence[str]) -> None:
    # A bare string would be split into characters by list(); fail loudly instead.
    if isinstance(queries, str):
        raise TypeError("queries must be a list of strings, not a string")


def _payload(queries: list[str], topk: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"queries": queries, "return_scores": True}
    if topk is not None:
        body["topk"] = topk
    return body


def _server_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return str(body)[:500]


def _parse_hit(item: dict[str, Any]) -> Hit:
    # return_scores=true gives {"document": {...}, "score": s}; false gives the bare row.
    if "document" in item:
        doc, score = item["document"], item.get("score")
    else:
        doc, score = item, None
    return Hit(id=str(doc["id"]), contents=doc["contents"], score=None if score is None else float(score))


def _parse_result(response: httpx.Response, n_queries: int) -> list[list[Hit]]:
    try:
        result = response.json()["result"]
        hits = [[_parse_hit(item) for item in per_query] for per_query in result]
    except (ValueError, KeyError, TypeError) as e:
        raise RetrievalError(f"malformed /retrieve response: {e!r}: {response.text[:300]}") from e
    if len(hits) != n_queries:
        raise RetrievalError(f"server returned {len(hits)} result lists for {n_queries} queries")
    return hits


@dataclass(frozen=True)
class RetryPolicy:
    """When a request is retried and how long to wait first; the one policy of both clients.

    >>> list(RetryPolicy(max_retries=3, backoff=0.5).delays())
    [0.0, 0.5, 1.0, 2.0]
    """

    max_retries: int = 3
    backoff: float = 0.5

    def delays(self) -> Iterator[float]:
        """Seconds to wait before each attempt: none before the first, then `backoff * 2**n` before retry n."""
        yield 0.0
        for n in range(self.max_retries):
            yield self.backoff * 2**n

    def failure(self, outcome: httpx.Response | httpx.TransportError, path: str) -> str | None:
        """None for a success; what went wrong for a retryable failure; raises `RetrievalError` for any other.

        Retryable: transport errors (connect errors, timeouts, broken connections), 429 and 5xx.
        """
        if isinstance(outcome, httpx.TransportError):
            return f"{type(outcome).__name__}: {outcome}"
        if outcome.is_success:
            return None
        message = _server_message(outcome)
        if outcome.status_code != 429 and outcome.status_code < 500:
            raise RetrievalError(f"HTTP {outcome.status_code} from {path}: {message}", outcome.status_code)
        return f"HTTP {outcome.status_code}: {message}"

    def give_up(self, what: str, failure: str | None) -> RetrievalError:
        return RetrievalError(f"{what} failed after {self.max_retries + 1} attempts: {failure}")


class RetrievalClient:
    """Blocking client. Thread-safe (httpx.Client is); reuse one instance for connection pooling.

    Args:
        url: Base URL of the server (no trailing `/retrieve`).
        timeout: Per-request timeout in seconds (connect, read, write, pool).
        max_retries: Extra attempts after the first on connection errors, timeouts, 5xx and 429.
        backoff: Base of the exponential backoff between attempts, in seconds.
        batch_size: Queries per HTTP request; longer lists are split and the results concatenated.
        max_connections: Size of the connection pool.
        transport: Optional httpx transport (tests use `httpx.MockTransport`).
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        batch_size: int = 256,
        max_connections: int = 64,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.retry = RetryPolicy(max_retries, backoff)
        self.batch_size = batch_size
        self._http = httpx.Client(
            base_url=self.url,
            timeout=httpx.Timeout(timeout),
            limits=pool_limits(max_connections),
            transport=transport,
        )

    def _request(self, method: str, path: str, json: dict[str, Any] | None = None) -> httpx.Response:
        failure = None
        for attempt, delay in enumerate(self.retry.delays()):
            if delay:
                time.sleep(delay)
            try:
                response = self._http.request(method, path, json=json)
            except httpx.TransportError as e:
                failure = self.retry.failure(e, path)
            else:
                failure = self.retry.failure(response, path)
                if failure is None:
                    return response
            logger.warning("retrieval %s %s failed (attempt %d): %s", method, path, attempt + 1, failure)
        raise self.retry.give_up(f"{method} {self.url}{path}", failure)

    def retrieve(self, queries: list[str], topk: int | None = None) -> list[list[Hit]]:
        """Top-k hits for each query, one list per query in input order (topk=None: server default)."""
        _check_queries(queries)
        out: list[list[Hit]] = []
        for chunk in _chunks(queries, self.batch_size):
            response = self._request("POST", "/retrieve", _payload(chunk, topk))
            out.extend(_parse_result(response, len(chunk)))
        return out

    def health(self) -> dict:
        """The server's `/health` body; raises RetrievalError if it is not ready after retries."""
        return self._request("GET", "/health").json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RetrievalClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncRetrievalClient:
    """asyncio client with the same arguments and behaviour as `RetrievalClient`.

    Long query lists are split into `batch_size` chunks that are sent concurrently (at most
    `max_concurrent_batches` at once). Create and use it inside one event loop.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        batch_size: int = 256,
        max_connections: int = 256,
        max_concurrent_batches: int = 4,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.retry = RetryPolicy(max_retries, backoff)
        self.batch_size = batch_size
        self.max_concurrent_batches = max_concurrent_batches
        self._http = httpx.AsyncClient(
            base_url=self.url,
            timeout=httpx.Timeout(timeout),
            limits=pool_limits(max_connections),
            transport=transport,
        )

    async def _request(self, method: str, path: str, json: dict[str, Any] | None = None) -> httpx.Response:
        failure = None
        for attempt, delay in enumerate(self.retry.delays()):
            if delay:
                await asyncio.sleep(delay)
            try:
                response = await self._http.request(method, path, json=json)
            except httpx.TransportError as e:
                failure = self.retry.failure(e, path)
            else:
                failure = self.retry.failure(response, path)
                if failure is None:
                    return response
            logger.warning("retrieval %s %s failed (attempt %d): %s", method, path, attempt + 1, failure)
        raise self.retry.give_up(f"{method} {self.url}{path}", failure)

    async def retrieve(self, queries: list[str], topk: int | None = None) -> list[list[Hit]]:
        """Top-k hits for each query, one list per query in input order (topk=None: server default)."""
        _check_queries(queries)
        chunks = _chunks(queries, self.batch_size)
        gate = asyncio.Semaphore(self.max_concurrent_batches)

        async def one(chunk: list[str]) -> list[list[Hit]]:
            async with gate:
                response = await self._request("POST", "/retrieve", _payload(chunk, topk))
            return _parse_result(response, len(chunk))

        parts = await asyncio.gather(*(one(c) for c in chunks))
        return [hits for part in parts for hits in part]

    async def health(self) -> dict:
        """The server's `/health` body; raises RetrievalError if it is not ready after retries."""
        return (await self._request("GET", "/health")).json()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncRetrievalClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
