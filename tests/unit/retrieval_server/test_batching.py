from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from retrieval_server.batching import MicroBatcher
from retrieval_server.retrievers import SearchResult


class _RecordingSearch:
    """search_fn whose row ids encode (query number, rank): easy to check each caller got its own rows."""

    def __init__(self, delay: float = 0.01, fail_on: str | None = None) -> None:
        self.batch_sizes: list[int] = []
        self.delay, self.fail_on = delay, fail_on
        self.threads: set[str] = set()

    def __call__(self, queries: list[str], k: int) -> SearchResult:
        self.threads.add(threading.current_thread().name)
        self.batch_sizes.append(len(queries))
        if self.fail_on is not None and self.fail_on in queries:
            raise RuntimeError("boom")
        threading.Event().wait(self.delay)  # pretend to encode; lets the queue fill up
        qn = np.array([int(q.split("-")[1]) for q in queries], dtype=np.int64)
        rows = qn[:, None] * 1000 + np.arange(k)[None, :]
        return SearchResult(rows=rows, scores=-rows.astype(np.float32))


def test_concurrent_requests_are_batched_and_answered_in_order() -> None:
    search = _RecordingSearch()
    batcher = MicroBatcher(search, max_batch_queries=16, max_wait_ms=5)

    async def main():
        reqs = [[f"q-{i}"] if i % 3 else [f"q-{i}", f"q-{i + 10_000}"] for i in range(200)]
        topks = [1 + i % 4 for i in range(200)]
        results = await asyncio.gather(*(batcher.submit(q, k) for q, k in zip(reqs, topks, strict=True)))
        return reqs, topks, results

    reqs, topks, results = asyncio.run(main())
    for q, k, res in zip(reqs, topks, results, strict=True):
        expected = np.array([[int(x.split("-")[1]) * 1000 + j for j in range(k)] for x in q])
        assert res.rows.tolist() == expected.tolist()
        assert res.scores.tolist() == (-expected).tolist()
    assert max(search.batch_sizes) <= 16 and sum(search.batch_sizes) == 267
    assert len(search.batch_sizes) < 40  # 267 queries in batches of <= 16: close to the 17 minimum
    assert search.threads == {next(iter(search.threads))} and batcher.stats().requests == 200


@pytest.mark.parametrize("max_batch", [1, 8])
def test_failing_request_fails_alone_and_worker_keeps_serving(max_batch: int) -> None:
    search = _RecordingSearch(fail_on="q-666")
    batcher = MicroBatcher(search, max_batch_queries=max_batch, max_wait_ms=5)

    async def main():
        bad = batcher.submit(["q-666"], 2)
        good = batcher.submit(["q-5"], 2)
        out = await asyncio.gather(bad, good, return_exceptions=True)
        later = await batcher.submit(["q-6"], 1)
        return out, later

    (bad, good), later = asyncio.run(main())
    assert isinstance(bad, RuntimeError) and good.rows.tolist() == [[5000, 5001]] and later.rows.tolist() == [[6000]]


def test_oversized_request_runs_alone() -> None:
    search = _RecordingSearch(delay=0)
    batcher = MicroBatcher(search, max_batch_queries=4, max_wait_ms=1)

    async def main():
        return await asyncio.gather(batcher.submit([f"q-{i}" for i in range(10)], 1), batcher.submit(["q-99"], 1))

    big, small = asyncio.run(main())
    assert big.rows[:, 0].tolist() == [i * 1000 for i in range(10)] and small.rows.tolist() == [[99000]]
    assert search.batch_sizes == [10, 1]


def test_lone_request_never_waits_for_company() -> None:
    # max_wait is 5 s, so a lone request held for company even once takes >= 5 s; answered at once it takes
    # milliseconds. The 0.5 s bound sits an order of magnitude from both, so a busy machine does not flake it.
    batcher = MicroBatcher(_RecordingSearch(delay=0), max_batch_queries=64, max_wait_ms=5000)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        t = loop.time()
        await batcher.submit(["q-1"], 1)
        return loop.time() - t

    assert asyncio.run(main()) < 0.5


def test_sequential_lone_requests_do_not_wait_for_company() -> None:
    batcher = MicroBatcher(_RecordingSearch(delay=0), max_batch_queries=64, max_wait_ms=500)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        t = loop.time()
        for i in range(5):
            await batcher.submit([f"q-{i}"], 1)
        return loop.time() - t

    assert asyncio.run(main()) < 0.5  # 5 requests; waiting for a fuller batch would take >= 2.5 s


def test_a_query_is_searched_once_per_batch_and_reused_from_the_cache() -> None:
    # A GRPO group: 4 rollouts of one question open with the same search, in one batch.
    search = _RecordingSearch(delay=0)
    batcher = MicroBatcher(search, max_batch_queries=64, max_wait_ms=50, cache_queries=2)

    async def main():
        group = await asyncio.gather(*(batcher.submit(["q-7"], 2) for _ in range(4)))
        again = await batcher.submit(["q-7", "q-8"], 1)  # q-7 from the cache (shallower), q-8 searched
        deeper = await batcher.submit(["q-7"], 3)  # the cache holds q-7 at depth 2: searched again
        await batcher.submit(["q-9"], 1)
        await batcher.submit(["q-10"], 1)  # evicts the least recently used (q-8): the cache holds 2
        evicted = await batcher.submit(["q-8"], 1)
        return group, again, deeper, evicted

    group, again, deeper, evicted = asyncio.run(main())
    assert [g.rows.tolist() for g in group] == [[[7000, 7001]]] * 4
    assert again.rows.tolist() == [[7000], [8000]] and again.scores.tolist() == [[-7000.0], [-8000.0]]
    assert deeper.rows.tolist() == [[7000, 7001, 7002]] and evicted.rows.tolist() == [[8000]]
    assert search.batch_sizes == [1, 1, 1, 1, 1, 1]  # q-7, q-8, q-7 deeper, q-9, q-10, q-8 again
    stats = batcher.stats()
    assert (stats.queries, stats.searched) == (10, 6)


def test_without_a_cache_only_repeats_within_a_batch_are_shared() -> None:
    search = _RecordingSearch(delay=0)
    batcher = MicroBatcher(search, max_batch_queries=64, max_wait_ms=1)

    async def main():
        first = await batcher.submit(["q-1", "q-1", "q-2"], 1)
        second = await batcher.submit(["q-1"], 1)
        return first, second

    first, second = asyncio.run(main())
    assert first.rows.tolist() == [[1000], [1000], [2000]] and second.rows.tolist() == [[1000]]
    assert search.batch_sizes == [2, 1]
