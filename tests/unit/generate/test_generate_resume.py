"""Exactly-once resume: a run killed with SIGKILL (or interrupted with Ctrl-C) mid-way and restarted ends
with the same items, each once, as an uninterrupted run; items finished before the kill are kept untouched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sage_world import write_corpus

HERE = Path(__file__).resolve().parents[2]  # tests/, where sage_world.py lives

# The signal line: a child of a background job (e.g. CI started with `&`) inherits SIGINT as ignored, and
# Python then keeps ignoring it; restore what a terminal's Ctrl-C reaches.
DRIVER = """
import asyncio, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, {here!r})
from sage_world import FakeRetriever, standard_cfg, standard_world
from sage_rl.generate.loop import Pipeline, run_generation
from sage_rl.llm import ScriptedChatModel
cfg = standard_cfg(sys.argv[1], sys.argv[2], num_items=int(sys.argv[3]))
model = ScriptedChatModel(standard_world(), delay=float(sys.argv[4]))
asyncio.run(run_generation(cfg, Pipeline(model, model, FakeRetriever(), model)))
"""


def start(tmp_path: Path, out: str, corpus: str, n: int, delay: float) -> subprocess.Popen:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(here=str(HERE)))
    return subprocess.Popen([sys.executable, str(script), out, corpus, str(n), str(delay)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def comparable(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k not in ("elapsed_s",)}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_interrupted_run_then_resume_is_exactly_once(tmp_path, sig):
    n = 24
    corpus = write_corpus(tmp_path / "c.jsonl", n=n)
    out = tmp_path / "killed"
    proc = start(tmp_path, str(out), corpus, n, delay=0.03)
    deadline = time.monotonic() + 120
    while len(lines(out / "records.jsonl")) < 5:
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < deadline, "run made no progress"
        time.sleep(0.05)
    os.kill(proc.pid, sig)
    assert proc.wait(timeout=60) != 0
    before = lines(out / "records.jsonl")
    assert 5 <= len(before) < n, "the kill must land mid-run"

    proc = start(tmp_path, str(out), corpus, n, delay=0.0)
    assert proc.wait(timeout=120) == 0, proc.stdout.read().decode()
    after = lines(out / "records.jsonl")
    ids = [r["item_id"] for r in after]
    assert sorted(ids) == list(range(n)), "every item exactly once"
    assert after[: len(before)] == before, "items finished before the kill are kept as they were"
    traj_ids = [t["item_id"] for t in lines(out / "trajectories.jsonl")]
    assert sorted(traj_ids) == list(range(n))

    clean = tmp_path / "clean"
    proc = start(tmp_path, str(clean), corpus, n, delay=0.0)
    assert proc.wait(timeout=120) == 0
    by_id = {r["item_id"]: comparable(r) for r in lines(clean / "records.jsonl")}
    assert {r["item_id"]: comparable(r) for r in after} == by_id
    assert (out / "qa.jsonl").read_text() == (clean / "qa.jsonl").read_text()
