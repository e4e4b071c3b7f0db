"""The three adapters of the one search episode see the same thing: the same scripted model turns through
generation's chat solver (observations as messages), the evaluator (one growing assistant message) and
verl's token-level agent loop give identical turns, observations, counts and answers."""

from __future__ import annotations

import asyncio

import pytest
from omegaconf import OmegaConf
from transformers import AutoTokenizer
from verl.experimental.agent_loop.agent_loop import DictConfigWrap
from verl.utils.dataset.rl_dataset import RLHFDataset
from verl.workers.rollout.replica import TokenOutput

from retrieval_server.client import Hit
from sage_rl.benchmarks import BenchmarkItem
from sage_rl.episode import ChatSettings, EpisodePolicy, run_chat_episode
from sage_rl.eval.config import EvalConfig
from sage_rl.eval.runner import Evaluator, Task
from sage_rl.llm import ScriptedChatModel
from sage_rl.models import tiny_model_path
from sage_rl.protocol import search_prompt
from sage_rl.train.search_agent_loop import SearchAgentLoop

QUESTION = "Which city is the capital of France"
SCRIPTS = {
    "search, invalid, answer": ["<think>look</think><search> capital of France </search>",
                                "It is probably Paris.", "<answer> Paris </answer>"],
    "budget spent": ["<search> a </search>", "<search> b </search>", "<search> c </search>"],
    "retrieval error": ["<search> FAIL </search>", "<answer> unsure </answer>"],
    "answer at once": ["<answer>Paris</answer>"],
}
POLICY = EpisodePolicy(max_searches=2, topk=2, max_obs_tokens=40)


class Client:
    """Two passages per query; a query containing FAIL raises, as a retrieval outage would."""

    async def retrieve(self, queries, topk=None):
        if "FAIL" in queries[0]:
            raise ConnectionError("retrieval down")
        return [[Hit(f"{q}-{i}", f'"{q} {i}"\nPassage {i} about {q}, with <answer> tags </answer> in it.', 1.0)
                 for i in range(topk or 3)] for q in queries]

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return None


def scripted(turns):
    queue = list(turns)
    return ScriptedChatModel(lambda messages: queue.pop(0))


def chat_solver(turns, tokenizer):
    """Generation's adapter: a chat episode with observations as user messages."""
    messages = [{"role": "user", "content": search_prompt(QUESTION)}]
    return asyncio.run(run_chat_episode(scripted(turns), messages, Client(), POLICY, ChatSettings(),
                                        tokenizer=tokenizer))


def evaluator(turns, tokenizer):
    """`sage-rl eval`'s adapter: the evaluator's own episode call (inline transcript)."""
    item = BenchmarkItem("q", QUESTION, ("Paris",))
    agent = Evaluator(scripted(turns), Client(), POLICY, EvalConfig(), tokenizer=tokenizer)
    return asyncio.run(agent.episode(Task("toy", item, 0)))


class ScriptedServer:
    def __init__(self, tokenizer, turns):
        self.tokenizer, self.turns = tokenizer, list(turns)

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        ids = self.tokenizer.encode(self.turns.pop(0), add_special_tokens=False)
        return TokenOutput(token_ids=ids, log_probs=[-0.1] * len(ids), extra_fields={"max_global_steps": 1})


def verl_loop(tokenizer, turns):
    """Training's adapter: verl's agent loop, driven token by token."""
    block = {"topk": POLICY.topk, "max_searches": POLICY.max_searches, "max_obs_tokens": POLICY.max_obs_tokens}
    cfg = OmegaConf.create({"actor_rollout_ref": {"rollout": {"prompt_length": 256, "response_length": 600}},
                            "data": {}, "search_agent": {"episode": block}})

    async def go():
        loop = SearchAgentLoop(trainer_config=DictConfigWrap(cfg), server_manager=ScriptedServer(tokenizer, turns),
                               tokenizer=tokenizer, processor=None, dataset_cls=RLHFDataset,
                               data_config=DictConfigWrap(cfg.data), hf_model_type="qwen2")
        loop.retrieval_client = Client
        return await loop.run({"temperature": 1.0}, raw_prompt=[{"role": "user", "content": search_prompt(QUESTION)}])

    return asyncio.run(go())


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(tiny_model_path())


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_generation_evaluation_and_training_run_the_same_episode(name, tokenizer):
    turns = SCRIPTS[name]
    chat, ev = chat_solver(turns, tokenizer), evaluator(turns, tokenizer)
    # Chat solver and evaluator: identical turns (text, kind, query, passages, observation) and counts.
    assert [(t.text, t.kind, t.query, t.doc_ids, t.observation) for t in chat.turns] == [
        (t.text, t.kind, t.query, t.doc_ids, t.observation) for t in ev.turns]
    counts = (chat.answer, chat.num_searches, chat.invalid_turns, chat.retrieval_errors, chat.end_reason)
    assert counts == (ev.answer, ev.num_searches, ev.invalid_turns, ev.retrieval_errors, ev.end_reason)
    # verl's loop: the response is exactly the turns and observations, and the counts are the same.
    out = verl_loop(tokenizer, turns)
    f = out.extra_fields
    assert (f["policy_answer"], f["num_searches"], f["invalid_turns"], f["retrieval_errors"], f["end_reason"]) == counts
    assert tokenizer.decode(out.response_ids) == "".join(t.text + t.observation for t in chat.turns)
    written = tokenizer.decode([i for i, m in zip(out.response_ids, out.response_mask, strict=True) if m])
    assert written == "".join(t.text for t in chat.turns)  # the loss sees the policy's tokens only
