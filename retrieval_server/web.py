"""Web search behind `/retrieve`: a Serper-compatible API (Google results) instead of a local index.

The paper trains on a Wikipedia index and tests on Google. This module is the Google side. It answers the
same contract as the index retrievers, so moving an evaluation to the web is one setting: point the
evaluator's retrieval URL at a server started with `--retriever web`.

Upstream: POST `endpoint` with JSON `{"q": query, "num": k}` and header `X-API-KEY`; the answer is JSON
with an `organic` list of `{title, link, snippet, position}`. Each organic hit becomes a document with
id = link, contents = `"title"\\nsnippet` and score = 1 / rank (rank from 1 in the API's order). The score
is a rank, not a relevance: compare scores only within one query.

Design: the index retrievers are CPU-bound, so the server batches their queries into one encode+search
call on a single worker thread (`batching.py`). A web query is one HTTP round trip spent mostly waiting;
batching web queries would only queue the waits one behind the other. So `WebSearchRetriever.search` is a
coroutine that runs on the server's event loop: the queries of a request go upstream concurrently, and the
load is bounded by state shared by all requests:

- an on-disk sqlite cache keyed by (endpoint, query, k): re-running an evaluation costs no API calls;
- a rate limiter that spaces upstream request starts (retries included) 1 / max_requests_per_second apart;
- bounded retries with exponential backoff on connection errors, timeouts, 429 and 5xx, honouring
  Retry-After (capped at max_backoff_s); any other 4xx (401/403: a bad key) fails at once.

Request limits, the per-request timeout and /health are the server's, as for the other retrievers.
Failures raise `WebSearchError`, which the server returns as a 502/503/504 with a message. The API key is
read from the environment when the server loads (a missing key fails start-up), kept in a `SecretStr`,
sent only in the request header, and scrubbed from any upstream text quoted in errors or logs.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from retrieval_server.config import WebSearchConfig

logger = logging.getLogger(__name__)

CACHE_FILE = "web_search.sqlite3"


class MissingAPIKeyError(RuntimeError):
    """Raised when the server loads, so a server without a key fails at start-up, not at its first query."""


class WebSearchError(Exception):
    """The search API could not answer; `status_code` is what `/retrieve` returns (502, 503 or 504)."""

    def __init__(self, message: str, status_code: int = 502) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class WebHit:
    """One web result as a corpus-style document."""

    id: str  # the result's URL
    contents: str  # '"title"\nsnippet', the corpus convention
    score: float  # 1 / rank


def organic_to_hits(organic: list[dict[str, Any]], k: int) -> list[WebHit]:
    """Map the API's organic results to documents, in the API's order, at most `k`.

    >>> hits = organic_to_hits([{"title": "Paris", "link": "https://x.org/Paris", "snippet": "Capital."},
    ...                         {"title": "Lyon", "link": "https://x.org/Lyon", "snippet": "City."}], 5)
    >>> hits[0]
    WebHit(id='https://x.org/Paris', contents='"Paris"\\nCapital.', score=1.0)
    >>> [h.score for h in hits], len(organic_to_hits([{}] * 10, 3))
    ([1.0, 0.5], 3)
    """
    return [
        WebHit(
            id=str(item.get("link", "")),
            contents=f'"{item.get("title", "")}"\n{item.get("snippet", "")}',
            score=1.0 / rank,
        )
        for rank, item in enumerate(organic[:k], 1)
    ]


def read_api_key(cfg: WebSearchConfig) -> SecretStr:
    """The key from the environment variable named by `cfg.api_key_env`; raises if it is unset or empty."""
    value = os.environ.get(cfg.api_key_env, "").strip()
    if not value:
        raise MissingAPIKeyError(
            f"environment variable {cfg.api_key_env} is not set or empty: export the search API key in it "
            f"(or name another variable with web.api_key_env / --web-api-key-env)"
        )
    return SecretStr(value)


def retry_after_seconds(response: httpx.Response) -> float | None:
    """Seconds asked for by a Retry-After header (delta-seconds or HTTP date); None if absent or unreadable.

    >>> retry_after_seconds(httpx.Response(429, headers={"Retry-After": "2"}))
    2.0
    >>> retry_after_seconds(httpx.Response(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}))
    0.0
    >>> retry_after_seconds(httpx.Response(503)) is None
    True
    """
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class RateLimiter:
    """Spaces call starts at least 1 / rate seconds apart across all callers on the event loop (no bursts).

    Callers queue on a lock rather than reserving future slots, so a cancelled caller (a request that timed
    out) gives its turn back instead of delaying everyone behind it.
    """

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self._last = -math.inf
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    async def wait(self) -> None:
        loop = asyncio.get_running_loop()
        if self._lock_loop is not loop:  # an asyncio.Lock serves one loop only
            self._lock, self._lock_loop = asyncio.Lock(), loop
        async with self._lock:
            delay = self._last + self.interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._last = time.monotonic()


class WebCache:
    """(endpoint, query, k) -> the API's organic list, in one sqlite file that outlives runs and processes.

    Entries never expire, so a re-run evaluation sees the same results; delete the file to refresh.
    Only successful answers are stored.
    """

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / CACHE_FILE
        # Opened in the server's loading thread, then used only from the event loop's thread; autocommit, and
        # WAL so that several servers can share the file.
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS results (endpoint TEXT NOT NULL, query TEXT NOT NULL, k INTEGER NOT NULL,"
            " organic TEXT NOT NULL, fetched_at REAL NOT NULL, PRIMARY KEY (endpoint, query, k))"
        )

    def get(self, endpoint: str, query: str, k: int) -> list[dict[str, Any]] | None:
        row = self._db.execute(
            "SELECT organic FROM results WHERE endpoint = ? AND query = ? AND k = ?", (endpoint, query, k)
        ).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, endpoint: str, query: str, k: int, organic: list[dict[str, Any]]) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?)",
            (endpoint, query, k, json.dumps(organic, ensure_ascii=False), time.time()),
        )

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def close(self) -> None:
        self._db.close()


class WebSearchRetriever:
    """Top-k web results per query from a Serper-compatible API, with cache, rate limit and retries.

    Args:
        cfg: Endpoint, key variable name, cache folder, rate and retry settings.
        api_key: The key (see `read_api_key`); `from_config` reads it from the environment.
    """

    name = "web"

    def __init__(self, cfg: WebSearchConfig, api_key: SecretStr) -> None:
        self.cfg = cfg
        self._api_key = api_key
        self.cache = WebCache(cfg.cache_dir) if cfg.cache_dir is not None else None
        self.limiter = RateLimiter(cfg.max_requests_per_second)
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        # Counters for /health.
        self.queries = self.cache_hits = self.upstream_requests = self.upstream_failures = 0

    @classmethod
    def from_config(cls, cfg: WebSearchConfig) -> WebSearchRetriever:
        return cls(cfg, read_api_key(cfg))

    def __repr__(self) -> str:
        cache = self.cache.path if self.cache is not None else None
        return f"WebSearchRetriever(endpoint={self.cfg.endpoint!r}, key_env={self.cfg.api_key_env!r}, cache={cache})"

    def _http(self) -> httpx.AsyncClient:
        # One client per event loop: pooled connections belong to the loop that opened them, and uvicorn,
        # TestClient and asyncio.run each bring their own loop.
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.cfg.timeout_s))
            self._client_loop = loop
        return self._client

    def _scrub(self, text: str) -> str:
        """Upstream text with the key masked: an API may echo the key it refused."""
        return text.replace(self._api_key.get_secret_value(), "***")

    async def search(self, queries: list[str], k: int) -> list[list[WebHit]]:
        """Top-k hits per query, in query order. The first failure cancels the request's other queries."""
        if not queries:
            return []
        tasks = [asyncio.ensure_future(self._search_one(q, k)) for q in queries]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for t in tasks:
                t.cancel()  # no-op for finished tasks; stops the rest on failure or when the request is cancelled
        errors = [t.exception() for t in tasks if t in done and t.exception() is not None]
        if errors:
            raise errors[0]
        return [t.result() for t in tasks]

    async def _search_one(self, query: str, k: int) -> list[WebHit]:
        self.queries += 1
        if not query.strip():
            return []  # the API rejects empty queries with a 400; nothing to find anyway
        if self.cache is not None:
            organic = self.cache.get(self.cfg.endpoint, query, k)
            if organic is not None:
                self.cache_hits += 1
                return organic_to_hits(organic, k)
        organic = await self._fetch(query, k)
        if self.cache is not None:
            self.cache.put(self.cfg.endpoint, query, k, organic)
        return organic_to_hits(organic, k)

    async def _fetch(self, query: str, k: int) -> list[dict[str, Any]]:
        """The organic list for one query, with rate limiting and bounded retries."""
        cfg = self.cfg
        headers = {"X-API-KEY": self._api_key.get_secret_value()}
        attempts = cfg.max_retries + 1
        failure, status, delay = "", 502, 0.0
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(delay)
            await self.limiter.wait()
            self.upstream_requests += 1
            retry_after = None
            try:
                response = await self._http().post(cfg.endpoint, json={"q": query, "num": k}, headers=headers)
            except httpx.TimeoutException:
                failure, status = f"no answer within timeout_s={cfg.timeout_s:g}", 504
            except httpx.TransportError as e:  # connection refused or reset, DNS, protocol errors
                failure, status = self._scrub(f"{type(e).__name__}: {e}"), 502
            else:
                if response.is_success:
                    return self._organic(response)
                failure = f"HTTP {response.status_code}: {self._scrub(response.text[:300])}"
                if response.status_code != 429 and response.status_code < 500:
                    self.upstream_failures += 1
                    hint = f" (check the key in ${cfg.api_key_env})" if response.status_code in (401, 403) else ""
                    logger.warning("search API %s refused a query: %s%s", cfg.endpoint, failure, hint)
                    raise WebSearchError(f"search API {cfg.endpoint} refused the query: {failure}{hint}", 502)
                status = 503 if response.status_code == 429 else 502
                retry_after = retry_after_seconds(response)
            self.upstream_failures += 1
            logger.warning("search API %s attempt %d/%d failed: %s", cfg.endpoint, attempt + 1, attempts, failure)
            delay = min(cfg.max_backoff_s, retry_after if retry_after is not None else cfg.backoff_s * 2**attempt)
        raise WebSearchError(f"search API {cfg.endpoint} failed after {attempts} attempts: {failure}", status)

    def _organic(self, response: httpx.Response) -> list[dict[str, Any]]:
        try:
            organic = response.json().get("organic", [])  # no `organic` key: no results
        except (ValueError, AttributeError):
            organic = None
        if not isinstance(organic, list) or not all(isinstance(item, dict) for item in organic):
            self.upstream_failures += 1
            excerpt = self._scrub(response.text[:300])
            raise WebSearchError(
                f"search API {self.cfg.endpoint} answered without an 'organic' list of results: {excerpt}", 502
            )
        return organic

    async def aclose(self) -> None:
        """Close the pooled connections before their event loop ends; the next search opens a new client.

        The cache stays open: sqlite commits every write, so there is nothing to flush at exit.
        """
        if self._client is not None and self._client_loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = self._client_loop = None
