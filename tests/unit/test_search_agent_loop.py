"""The verl search agent loop, driven by a scripted policy and a scripted retriever (no Ray, no vLLM)."""

import asyncio

import pytest
from omegaconf import OmegaConf
from transformers import AutoTokenizer
from verl.experimental.agent_loop.agent_loop import DictConfigWrap
from verl.utils.dataset.rl_dataset import RLHFDataset
from verl.workers.rollout.replica import TokenOutput

from retrieval_server.client import Hit, RetrievalError
from sage_rl.models import tiny_model_path
from sage_rl.protocol import INVALID_ACTION_MESSAGE
from sage_rl.reward import compute_score
from sage_rl.train.search_agent_loop import SearchAgentConfig, SearchAgentLoop


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(tiny_model_path())


class ScriptedPolicy:
    """Stands in for verl's LLM server client: returns the next scripted turn, records every request."""

    def __init__(self, tokenizer, turns: list[str]):
        self.tokenizer, self.turns, self.requests = tokenizer, list(turns), []

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        self.requests.append({"request_id": request_id, "prompt_ids": list(prompt_ids), **sampling_params})
        ids = self.tokenizer.encode(self.turns.pop(0), add_special_tokens=False)
        step = len(self.requests)  # as if the policy were updated between turns (partial rollouts)
        return TokenOutput(token_ids=ids, log_probs=[-0.5] * len(ids),
                           extra_fields={"min_global_steps": 1, "max_global_steps": step})


class ScriptedRetriever:
    def __init__(self, fail: bool = False):
        self.queries, self.fail = [], fail

    async def retrieve(self, queries, topk=None):
        self.queries.append((list(queries), topk))
        if self.fail:
            raise RetrievalError("server said 503")
        return [[Hit(id="d1", contents='"Paris"\nParis is the capital of France.', score=0.9)] for _ in queries]

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return None


def make_loop(tokenizer, turns, retriever, response_length=200, prompt_length=128, **search):
    """The loop and its scripted policy; `run(loop)` builds the loop inside the event loop, as verl does."""
    cfg = OmegaConf.create({
        "actor_rollout_ref": {"rollout": {"prompt_length": prompt_length, "response_length": response_length}},
        "data": {},
        "search_agent": {"episode": {"topk": 2, "max_searches": 2, **search}},
    })
    policy = ScriptedPolicy(tokenizer, turns)

    def build():
        loop = SearchAgentLoop(trainer_config=DictConfigWrap(cfg), server_manager=policy, tokenizer=tokenizer,
                               processor=None, dataset_cls=RLHFDataset, data_config=DictConfigWrap(cfg.data),
                               hf_model_type="qwen2")
        loop.retrieval_client = lambda: retriever
        return loop

    return build, policy


def run(build):
    async def go():
        prompt = [{"role": "user", "content": "What is the capital of France?"}]
        return await build().run({"temperature": 1.0}, raw_prompt=prompt)

    return asyncio.run(go())


def test_search_then_answer_masks_the_observation(tokenizer):
    retriever = ScriptedRetriever()
    loop, policy = make_loop(tokenizer, ["<think>need it</think><search> capital of France </search>",
                                         "<answer> Paris </answer><|im_end|>"], retriever)
    out = run(loop)
    assert retriever.queries == [(["capital of France"], 2)]
    assert out.extra_fields["num_searches"] == 1 and out.extra_fields["invalid_turns"] == 0
    assert out.extra_fields["generation_s"] > 0 and out.extra_fields["retrieval_s"] > 0  # timed per trajectory
    assert out.extra_fields["policy_answer"] == "Paris" and out.extra_fields["end_reason"] == "answer"
    # verl's trainer needs the policy-version tags of the rollout server: first turn's min, last turn's max.
    assert out.extra_fields["min_global_steps"] == 1 and out.extra_fields["max_global_steps"] == 2
    text = tokenizer.decode(out.response_ids)
    assert '<information>Doc 1(Title: "Paris") Paris is the capital of France.' in text
    assert text.rstrip().endswith("<answer> Paris </answer><|im_end|>")
    # Only what the policy wrote is trained on: decode the mask-1 and mask-0 tokens separately.
    written = tokenizer.decode([t for t, m in zip(out.response_ids, out.response_mask, strict=True) if m])
    observed = tokenizer.decode([t for t, m in zip(out.response_ids, out.response_mask, strict=True) if not m])
    assert "<information>" not in written and "<search> capital of France </search>" in written
    assert observed.strip().startswith("<information>") and observed.strip().endswith("</information>")
    assert len(out.response_logprobs) == len(out.response_ids)
    assert all(lp == 0.0 for lp, m in zip(out.response_logprobs, out.response_mask, strict=True) if not m)
    # Every turn continues the same trajectory on the same server, with the protocol's stop strings.
    assert len({r["request_id"] for r in policy.requests}) == 1
    second = policy.requests[1]["prompt_ids"]
    assert second == out.prompt_ids + out.response_ids[: len(second) - len(out.prompt_ids)]
    assert policy.requests[0]["stop"] == ["</search>", "</answer>"] and policy.requests[0]["include_stop_str_in_output"]


def test_invalid_turn_gets_the_protocol_message(tokenizer):
    loop, _ = make_loop(tokenizer, ["I think it is Paris.", "<answer>Paris</answer>"], ScriptedRetriever())
    out = run(loop)
    assert out.extra_fields["invalid_turns"] == 1 and out.extra_fields["num_searches"] == 0
    assert INVALID_ACTION_MESSAGE.strip() in tokenizer.decode(out.response_ids)


def test_search_budget_ends_the_trajectory(tokenizer):
    retriever = ScriptedRetriever()
    loop, policy = make_loop(tokenizer, ["<search>a</search>", "<search>b</search>", "<search>c</search>"],
                             retriever, max_searches=2)
    out = run(loop)
    assert out.extra_fields["num_searches"] == 2 and len(retriever.queries) == 2 and not policy.turns
    assert out.extra_fields["end_reason"] == "budget" and out.extra_fields["policy_answer"] is None


def test_retrieval_failure_is_counted_not_fatal(tokenizer):
    loop, _ = make_loop(tokenizer, ["<search>q</search>", "<answer>x</answer>"], ScriptedRetriever(fail=True))
    out = run(loop)
    assert out.extra_fields["retrieval_errors"] == 1 and "The search failed" in tokenizer.decode(out.response_ids)
    assert out.extra_fields["policy_answer"] == "x"


def test_an_eos_inside_the_episode_is_dropped(tokenizer):
    # Search-R1 re-tokenises each turn without special tokens; an EOS mid-trajectory would end the
    # assistant message before the episode ends.
    loop, _ = make_loop(tokenizer, ["prose<|im_end|>", "<answer>Paris</answer><|im_end|>"], ScriptedRetriever())
    out = run(loop)
    assert out.response_ids.count(tokenizer.eos_token_id) == 1 and out.response_ids[-1] == tokenizer.eos_token_id
    assert len(out.response_logprobs) == len(out.response_ids)


def test_environment_text_is_never_the_answer(tokenizer):
    # A passage holding an answer tag, and the invalid-action message: neither is the policy's answer.
    class TaggedRetriever(ScriptedRetriever):
        async def retrieve(self, queries, topk=None):
            return [[Hit(id="d1", contents='"X"\nThe quiz says <answer> and </answer>.', score=1.0)]]

    loop, _ = make_loop(tokenizer, ["<search>q</search>", "no action here", "still none"], TaggedRetriever())
    out = run(loop)
    text = tokenizer.decode(out.response_ids, skip_special_tokens=True)
    assert "<answer> and </answer>" in text and INVALID_ACTION_MESSAGE.strip() in text
    assert out.extra_fields["policy_answer"] is None and out.extra_fields["end_reason"] == "budget"
    # ... and the shipped reward, given what verl gives it, scores no answer even when "and" is the gold.
    extra_info = {"question": "q?", **out.extra_fields}
    result = compute_score("hotpotqa", text, {"target": ["and"]}, extra_info)
    assert (result["score"], result["em"], result["format_ok"], result["num_searches"]) == (0.0, 0.0, 0.0, 1.0)


def test_response_is_capped_at_response_length(tokenizer):
    loop, _ = make_loop(tokenizer, ["<search>capital</search>", "<answer>Paris</answer>"], ScriptedRetriever(),
                        response_length=30)
    out = run(loop)
    assert len(out.response_ids) == len(out.response_mask) == len(out.response_logprobs) == 30


def test_unknown_settings_are_rejected():
    with pytest.raises(ValueError, match="unknown search_agent settings"):
        SearchAgentConfig.from_trainer_config(OmegaConf.create({"search_agent": {"top_k": 3}}))
    with pytest.raises(ValueError, match="unknown search_agent.episode settings"):
        SearchAgentConfig.from_trainer_config(OmegaConf.create({"search_agent": {"episode": {"max_turns": 3}}}))
