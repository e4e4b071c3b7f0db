"""End-to-end: the real CLI, real uvicorn / Ray Serve processes, real sockets.

Indexes use the model-free hashing encoder over 300 HotpotQA passages (built in ~1 s), except the
MiniLM test, which checks the shipped default model on 120 passages.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
import requests
from servers import free_port

from retrieval_server.client import AsyncRetrievalClient, RetrievalClient, RetrievalError

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
HOTPOT = REPO / "sage_rl" / "assets" / "hotpotqa"
CLEAN_EXIT = (0, -signal.SIGINT)  # uvicorn re-raises SIGINT after a graceful shutdown
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "retrieval_server", *args], capture_output=True, text=True, timeout=timeout, env=ENV
    )


class Server:
    """A `python -m retrieval_server serve` process; URL parsed from its 'ready at' line."""

    def __init__(self, *args: str, timeout: float = 120) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "retrieval_server", "serve", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=ENV,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        self.url = self._wait_ready(timeout)

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _wait_ready(self, timeout: float) -> str | None:
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                return None
            if line is None:
                return None
            self.log.append(line)
            m = re.search(r"retrieval server ready at (http://[^\s/]+:\d+)", line)
            if m:
                return m.group(1)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "c300.jsonl.gz"
    with gzip.open(HOTPOT / "corpus.jsonl.gz", "rb") as src, gzip.open(path, "wb") as dst:
        dst.writelines(itertools.islice(src, 300))
    return path


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Path:
    out = tmp_path_factory.mktemp("idx") / "hashing"
    cache = out.parent / "cache"
    r = _cli("build", "--corpus", str(corpus), "--out", str(out), "--model", "hashing-256", "--cache-dir", str(cache))
    assert r.returncode == 0, r.stderr
    assert "build: 100%" in r.stderr  # progress bar shown
    return out


@pytest.fixture(scope="module")
def server(index: Path):
    s = Server("--index", str(index), "--port", "0", "--retriever", "hybrid", "--max-topk", "50")
    assert s.url, "".join(s.log)
    yield s
    assert s.stop() in CLEAN_EXIT


def test_help_commands() -> None:
    for sub in ("build", "serve"):
        r = _cli(sub, "--help")
        assert r.returncode == 0 and "--config" in r.stdout


def test_rebuild_is_a_no_op(corpus: Path, index: Path) -> None:
    r = _cli("build", "--corpus", str(corpus), "--out", str(index), "--model", "hashing-256", "--no-cache")
    assert r.returncode == 0 and "up to date" in r.stderr


def test_unmodified_search_r1_client(server: Server, corpus: Path) -> None:
    """The request Search-R1's generation.py sends, parsed the way it parses it."""
    rows = [json.loads(line) for line in itertools.islice(gzip.open(corpus, "rt"), 3)]
    payload = {"queries": [r["contents"].split("\n")[0].strip('"') for r in rows], "topk": 3, "return_scores": True}
    result = requests.post(f"{server.url}/retrieve", json=payload, timeout=30).json()["result"]
    assert [[d["document"]["id"] for d in q][0] for q in result] == [r["id"] for r in rows]
    for q in result:
        content = q[0]["document"]["contents"]
        assert content.split("\n")[0].startswith('"') and isinstance(q[0]["score"], float)
    bare = requests.post(f"{server.url}/retrieve", json={"queries": payload["queries"][:1]}, timeout=30).json()
    assert set(bare["result"][0][0]) == {"id", "contents"} and len(bare["result"][0]) == 3


def test_bad_input_never_500_and_server_survives(server: Server) -> None:
    bad = [
        b'{"queries": ["a"',
        b'{"queries": [1]}',
        b'{"queries": []}',
        b'{"queries": ["a"], "topk": 0}',
        b'{"queries": ["a"], "topk": 51}',
        b'{"queries": ["a"], "extra": 1}',
        b"\xff\xfe garbage",
        b'{"queries": ["' + b"q" * 5_000_000 + b'"]}',
    ]
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for body in bad * 3:
            r = c.post("/retrieve", content=body, headers={"content-type": "application/json"})
            assert 400 <= r.status_code < 500 and r.json()["detail"], (body[:40], r.status_code, r.text[:200])
        with pytest.raises(RetrievalError, match="topk must be between 1 and 50"):
            RetrievalClient(server.url, max_retries=0).retrieve(["x"], topk=500)
        assert c.post("/retrieve", json={"queries": ["still ok"], "topk": 2}).status_code == 200
    assert server.proc.poll() is None


def test_load_2000_requests_at_concurrency_64(server: Server) -> None:
    with gzip.open(HOTPOT / "questions.jsonl.gz", "rt") as f:
        questions = [json.loads(line)["question"] for line in itertools.islice(f, 500)]
    queries = [questions[i % len(questions)] for i in range(2000)]
    with RetrievalClient(server.url) as c:
        sequential = {q: [(h.id, h.score) for h in c.retrieve([q], topk=5)[0]] for q in questions}
        before = c.health()

    async def load() -> list:
        gate = asyncio.Semaphore(64)
        async with AsyncRetrievalClient(server.url, max_retries=0, timeout=60) as ac:

            async def one(q: str):
                async with gate:  # one deeper than the reference, so the first asking of each is searched
                    return (await ac.retrieve([q], topk=6))[0][:5]

            return await asyncio.gather(*(one(q) for q in queries), return_exceptions=True)

    results = asyncio.run(load())
    errors = [r for r in results if isinstance(r, Exception)]
    assert errors == []
    for q, hits in zip(queries, results, strict=True):
        assert [h.id for h in hits] == [i for i, _ in sequential[q]]
        np.testing.assert_allclose([h.score for h in hits], [s for _, s in sequential[q]], rtol=1e-5)
    after = RetrievalClient(server.url).health()
    batches = after["batches"] - before["batches"]
    requests_done = after["requests"] - before["requests"]
    # The hashing encoder searches in microseconds, so HTTP dominates and batches stay small; some still form.
    assert requests_done == 2000 and batches < requests_done
    # Each question is searched once at the new depth; its 3 repeats share that search or hit the cache.
    assert after["searched"] - before["searched"] == len(set(questions))


def test_manifest_mismatch_is_refused(index: Path) -> None:
    s = Server("--index", str(index), "--port", "0", "--model", "hashing-128", timeout=60)
    assert s.url is None
    assert s.proc.wait(30) != 0
    assert "built with model 'hashing-256'" in "".join(s.log) and "dimension 128 != 256" in "".join(s.log)


def test_ray_serve_two_replicas_one_url(index: Path) -> None:
    port = free_port()
    s = Server("--index", str(index), "--port", str(port), "--ray-replicas", "2", timeout=240)
    try:
        assert s.url == f"http://127.0.0.1:{port}", "".join(s.log[-30:])
        with RetrievalClient(s.url, timeout=60) as c:
            pids = {c.health()["pid"] for _ in range(40)}
            hits = c.retrieve(["Depeche Mode concert tour", "American football quarterback"], topk=4)
        assert len(pids) == 2  # both replicas answer behind the one URL
        assert [len(h) for h in hits] == [4, 4]
        bad = httpx.post(f"{s.url}/retrieve", json={"queries": ["a"], "topk": 0}, timeout=30)
        assert bad.status_code == 422 and "topk must be between" in bad.json()["detail"]
    finally:
        assert s.stop(timeout=120) in CLEAN_EXIT


def test_minilm_default_model_round_trip(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    with gzip.open(HOTPOT / "corpus.jsonl.gz", "rb") as src:
        corpus.write_bytes(b"".join(itertools.islice(src, 60)))
    out = tmp_path / "minilm"
    r = _cli("build", "--corpus", str(corpus), "--out", str(out), "--no-cache", "--index-type", "HNSW32", timeout=300)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "manifest.json").read_text())["dense"]
    assert manifest["model"] == "all-MiniLM-L6-v2" and manifest["dim"] == 384
    assert manifest["backend"] == "openvino" and manifest["precision"] in ("bf16", "fp32")  # the CPU default
    s = Server("--index", str(out), "--port", "0", timeout=180)
    try:
        rows = [json.loads(line) for line in corpus.read_text().splitlines()[:5]]
        titles = [row["contents"].split("\n")[0].strip('"') for row in rows]
        with RetrievalClient(s.url, timeout=60) as c:
            health = c.health()
            assert health["model"] == "all-MiniLM-L6-v2" and health["encoder"] == f"openvino {manifest['precision']}"
            hits = c.retrieve(titles, topk=3)
        assert sum(h[0].id == row["id"] for h, row in zip(hits, rows, strict=True)) >= 4
    finally:
        assert s.stop(timeout=120) in CLEAN_EXIT  # a loaded box can take a while to unload the model
