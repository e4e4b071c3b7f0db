"""Shared by the e2e tests: real server processes on free loopback ports, and verl's step-metric lines."""

from __future__ import annotations

import contextlib
import gzip
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from sage_rl.assets import EMBEDDED_CORPUS

PY = sys.executable
STEP_LINE = re.compile(r"step:(\d+) - (.*)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    """Poll `url` until it answers 200; fail early, with the server's log, if the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} not up after {timeout}s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    """Stop a server started in its own session, with everything it spawned (e.g. vLLM's engine)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def serving(cmd: list[str], health_url: str, log: Path, timeout: float, env: dict | None = None) -> Iterator[None]:
    """Run a server process for the duration of the block."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            wait_http(health_url, proc, log, timeout)
            yield
        finally:
            stop(proc)


def embedded_corpus_head(path: Path, lines: int) -> Path:
    """The first `lines` passages of the embedded corpus, so an index builds in seconds."""
    with gzip.open(EMBEDDED_CORPUS, "rb") as src, open(path, "wb") as dst:
        dst.writelines(itertools.islice(src, lines))
    return path


@contextlib.contextmanager
def retrieval_server(tmp: Path, corpus: Path, dense: bool = True) -> Iterator[str]:
    """Build an index of `corpus` (dense MiniLM, or BM25 only) and serve it; yields the server URL."""
    build = [PY, "-m", "retrieval_server", "build", "--corpus", str(corpus), "--out", str(tmp / "idx")]
    done = subprocess.run(build + ([] if dense else ["--no-dense"]), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    port = free_port()
    serve = [PY, "-m", "retrieval_server", "serve", "--index", str(tmp / "idx"), "--port", str(port),
             "--retriever", "dense" if dense else "bm25"]
    url = f"http://127.0.0.1:{port}"
    with serving(serve, f"{url}/health", tmp / "serve.log", timeout=300):
        yield url


def step_metrics(log: str) -> dict[int, dict[str, float]]:
    """verl's console metric lines (`step:N - key:value - ...`), numeric values only, by step."""
    steps = {}
    for match in STEP_LINE.finditer(log):
        metrics = {}
        for item in match.group(2).split(" - "):
            key, _, value = item.partition(":")
            try:
                metrics[key.strip()] = float(value)
            except ValueError:
                continue
        steps[int(match.group(1))] = metrics
    return steps
