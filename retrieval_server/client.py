"""HTTP client for the `/retrieve` contract (sync and async).

This is the only module of `retrieval_server` that `sage_rl` may import. It depends on httpx alone (no
torch, FAISS or FastAPI), so importing it is cheap. It speaks the Search-R1 contract, so it also works
against Search-R1's own server or any copy of it.

Retries: connection errors, timeouts, HTTP 5xx and 429 are retried up to `max_retries` times with
exponential backoff (`backoff * 2**attempt` seconds). A 4xx other than 429 is the caller's fault and is
raised at once as `RetrievalError` carrying the server's message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

logger = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


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


def _is_retryable_status(status: int) -> bool:
    return status in _RETRY_STATUS or status >= 500


def _retryable_failure(response: httpx.Response, path: str) -> str:
    """'' for a success, the failure for a retryable status; raises at once for any other (4xx) status."""
    if response.is_success:
        return ""
    message = _server_message(response)
    if not _is_retryable_status(response.status_code):
        raise RetrievalError(f"HTTP {response.status_code} from {path}: {message}", response.status_code)
    return f"HTTP {response.status_code}: {message}"


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
        self.max_retries = max_retries
        self.backoff = backoff
        self.batch_size = batch_size
        self._http = httpx.Client(
            base_url=self.url,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport,
        )

    def _request(self, method: str, path: str, json: dict[str, Any] | None = None) -> httpx.Response:
        last: str = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = self._http.request(method, path, json=json)
            except httpx.TransportError as e:  # connect errors, timeouts, broken connections
                last = f"{type(e).__name__}: {e}"
                logger.warning("retrieval %s %s failed (attempt %d): %s", method, path, attempt + 1, last)
                continue
            last = _retryable_failure(response, path)
            if not last:
                return response
            logger.warning("retrieval %s %s failed (attempt %d): %s", method, path, attempt + 1, last)
        raise RetrievalError(f"{method} {self.url}{path} failed after {self.max_retries + 1} attempts: {last}")

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
        self.max_retries = max_retries
        self.backoff = backoff
        self.batch_size = batch_size
        self.max_concurrent_batches = max_concurrent_batches
        self._http = httpx.AsyncClient(
            base_url=self.url,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport,
        )

    async def _request(self, method: str, path: str, json: dict[str, Any] | None = None) -> httpx.Response:
        last: str = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = await self._http.request(method, path, json=json)
            except httpx.TransportError as e:
                last = f"{type(e).__name__}: {e}"
                logger.warning("retrieval %s %s failed (attempt %d): %s", method, path, attempt + 1, last)
                continue
            last = _retryable_failure(response, path)
            if not last:
                return response
            logger.warning("retrieval %s %s failed (attempt %d): %s", method, path, attempt + 1, last)
        raise RetrievalError(f"{method} {self.url}{path} failed after {self.max_retries + 1} attempts: {last}")

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
