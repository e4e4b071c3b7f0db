"""Cross-request micro-batching.

During RL rollouts hundreds of trajectories each send one query at a time. Encoding those one by one
wastes most of the encoder (MiniLM on 2 cores: ~40 queries/s alone vs ~130 queries/s at batch 64). The
batcher queues concurrent requests and runs them as one encode+search call in a single worker thread:

- a batch starts as soon as the worker is free and at least one request is waiting;
- it takes every waiting request, up to `max_batch_queries` queries; if that is fewer queries than the
  previous batch had, it waits at most `max_wait_ms` for more (steady load keeps batches full, while a
  lone client never waits);
- each caller gets back exactly its own rows, in order, cut to its own topk;
- a query is searched once however often it appears: identical queries in a batch share one search, and
  the hits of the last `cache_queries` distinct queries are kept (the index does not change while it is
  served). GRPO makes this common: a question's n rollouts are sampled together and tend to open with the
  same search (the warm-started solver searches the question itself first).

One worker thread on purpose: the encoder and FAISS already use all cores, so parallel batches would
only contend. Exceptions fail the requests of that batch and never stop the worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from retrieval_server.retrievers import SearchResult

logger = logging.getLogger(__name__)

SearchFn = Callable[[list[str], int], SearchResult]


@dataclass
class _Request:
    queries: list[str]
    topk: int
    future: asyncio.Future = field(repr=False)


@dataclass(frozen=True)
class BatchStats:
    """Counters exposed on /health for monitoring and the benchmark."""

    batches: int
    queries: int  # queries answered
    requests: int
    searched: int  # queries the retriever ran: the rest were repeats in a batch or cache hits


class MicroBatcher:
    """Queue requests from one event loop and answer them in batched `search_fn` calls."""

    def __init__(
        self, search_fn: SearchFn, max_batch_queries: int = 128, max_wait_ms: float = 2.0, cache_queries: int = 0
    ) -> None:
        self.search_fn = search_fn
        self.max_batch_queries = max_batch_queries
        self.max_wait = max_wait_ms / 1000.0
        self.cache_queries = cache_queries
        # query -> (rows, scores) at some depth; only the worker thread touches it, so no lock.
        self._cache: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._searched = 0
        self._queue: asyncio.Queue[_Request] | None = None
        self._task: asyncio.Task | None = None
        self._carry: _Request | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="retrieval-batch")
        self._batches = self._queries = self._requests = 0
        self._last_batch = 1

    def stats(self) -> BatchStats:
        return BatchStats(batches=self._batches, queries=self._queries, requests=self._requests,
                          searched=self._searched)

    def _ensure_started(self) -> asyncio.Queue[_Request]:
        # Started lazily inside the serving loop: uvicorn, TestClient and Ray Serve each own a different one.
        if self._task is None or self._task.done():
            if self._task is not None and self._task.done() and not self._task.cancelled():
                logger.error("batch worker had stopped (%r); restarting", self._task.exception())
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="retrieval-batcher")
        return self._queue

    async def submit(self, queries: list[str], topk: int) -> SearchResult:
        """Search `queries`; returns rows/scores of shape [len(queries), topk] for this request only."""
        queue = self._ensure_started()
        future = asyncio.get_running_loop().create_future()
        queue.put_nowait(_Request(queries, topk, future))
        return await future

    async def _next_batch(self) -> list[_Request]:
        queue = self._queue
        first = self._carry or await queue.get()
        self._carry = None
        batch, n = [first], len(first.queries)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        # Wait (up to max_wait) only until the batch is as big as the previous one: steady concurrent load
        # refills full batches, while a lone client is never held back waiting for company.
        target = min(self.max_batch_queries, self._last_batch)
        while n < self.max_batch_queries:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0 or n >= target:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
            if n + len(item.queries) > self.max_batch_queries:
                self._carry = item  # first in line for the next batch, so order is kept
                break
            batch.append(item)
            n += len(item.queries)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [r for r in await self._next_batch() if not r.future.done()]  # drop cancelled callers
            if not batch:
                continue
            queries = [q for r in batch for q in r.queries]
            k = max(r.topk for r in batch)
            try:
                result = await loop.run_in_executor(self._executor, self._search_distinct, queries, k)
            except Exception:
                # One caller's bad input must not fail everyone batched with it: retry each request alone.
                logger.exception("search failed for a batch of %d queries; retrying requests one by one", len(queries))
                await self._run_one_by_one(batch)
                continue
            self._batches += 1
            self._last_batch = len(queries)
            self._queries += len(queries)
            self._requests += len(batch)
            offset = 0
            for r in batch:
                n = len(r.queries)
                if not r.future.done():
                    r.future.set_result(
                        SearchResult(
                            rows=result.rows[offset : offset + n, : r.topk],
                            scores=result.scores[offset : offset + n, : r.topk],
                        )
                    )
                offset += n

    async def _run_one_by_one(self, batch: list[_Request]) -> None:
        loop = asyncio.get_running_loop()
        for r in batch:
            try:
                result = await loop.run_in_executor(self._executor, self._search_distinct, r.queries, r.topk)
            except Exception as e:
                if not r.future.done():
                    r.future.set_exception(e)
                continue
            if not r.future.done():
                r.future.set_result(result)

    def _search_distinct(self, queries: list[str], k: int) -> SearchResult:
        """`search_fn` over the distinct queries not already held at depth >= k; rows for every query."""
        found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        missing = []
        for q in dict.fromkeys(queries):
            held = self._cache.get(q)
            if held is not None and held[0].shape[0] >= k:
                self._cache.move_to_end(q)
                found[q] = held
            else:
                missing.append(q)
        if missing:
            result = self.search_fn(missing, k)
            self._searched += len(missing)
            for i, q in enumerate(missing):
                found[q] = (result.rows[i].copy(), result.scores[i].copy())
                if self.cache_queries:
                    self._cache[q] = found[q]
                    self._cache.move_to_end(q)
            while len(self._cache) > self.cache_queries:
                self._cache.popitem(last=False)
        return SearchResult(rows=np.stack([found[q][0][:k] for q in queries]),
                            scores=np.stack([found[q][1][:k] for q in queries]))

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
