"""Shared by the e2e tests: real server processes on free loopback ports, and verl's step-metric lines."""

from __future__ import annotations

import contextlib
import gzip
import itertools
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from sage_rl.assets import EMBEDDED_CORPUS
from sage_rl.serving import free_port, serving  # noqa: F401 - re-exported for the e2e tests
from sage_rl.serving import retrieval_server as serving_retrieval

PY = sys.executable
STEP_LINE = re.compile(r"step:(\d+) - (.*)")
NUMPY_REPR = re.compile(r"np\.\w+\((.*)\)")


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
    with serving_retrieval(tmp / "idx", tmp / "serve.log", retriever="dense" if dense else "bm25") as url:
        yield url


def step_metrics(log: str) -> dict[int, dict[str, float]]:
    """verl's console metric lines (`step:N - key:value - ...`), numeric values only, by step.

    A step may print several lines (they are merged), and values may be numpy reprs (`np.float64(0.5)`)."""
    steps: dict[int, dict[str, float]] = {}
    for match in STEP_LINE.finditer(log):
        metrics = steps.setdefault(int(match.group(1)), {})
        for item in match.group(2).split(" - "):
            key, _, value = item.partition(":")
            number = NUMPY_REPR.fullmatch(value.strip())
            try:
                metrics[key.strip()] = float(number.group(1) if number else value)
            except ValueError:
                continue
    return steps
