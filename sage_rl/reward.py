"""Rewards for search agents: correctness of the policy's final answer, with the search count logged.

Plain callables in verl's `reward.custom_reward_function` signature, so users swap them for their own
function by config (`reward.custom_reward_function.path=/path/to/file.py name=my_score`):

- `compute_score` (default): exact match against the gold answers, free and deterministic;
- `judge_score`: the paper's reward, an LLM judge (BrowseComp/HLE-style grader) behind any
  OpenAI-compatible endpoint, configured through `reward.custom_reward_function.reward_kwargs`.

Both read the answer with `policy_answer`: the answer the search agent loop recorded from the policy's
own final turn (`extra_info["policy_answer"]`), never a tag parsed out of the transcript, which holds
retrieved passages and the environment's messages. Single-turn rollouts (no agent loop) have no such key
and are parsed from the response, which is then all the policy's own text.

Each returns the same keys on every call (`REWARD_KEYS`), so verl logs them without schema drift. A
judge that cannot be reached after its retries never raises (verl would silently drop the prompt's
trajectories, which are exactly the answered ones): the sample gets `judge_failure_score` and
`judge_failed = 1`, and the trainer guard (`sage_rl.train.guard`) logs the share per step and stops a
run whose share passes its threshold.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sage_rl.judge import LLMJudge
from sage_rl.llm import LLMError, OpenAIChatModel
from sage_rl.protocol import extract_answer
from sage_rl.qa_match import exact_match, f1

logger = logging.getLogger(__name__)

REWARD_KEYS = ("score", "acc", "em", "f1", "format_ok", "num_searches", "judge_failed", "judge_garbled")


def gold_answers(ground_truth: Any) -> list[str]:
    """Gold answers from a verl `reward_model.ground_truth`: `{"target": [...]}`, a list, or a string."""
    if isinstance(ground_truth, dict):
        ground_truth = ground_truth.get("target", ground_truth.get("answers"))
    if isinstance(ground_truth, str):
        return [ground_truth]
    if ground_truth is None:
        raise ValueError("ground_truth has no answers: expected {'target': [...]}, a list or a string")
    return [str(a) for a in ground_truth]


def policy_answer(solution_str: str, extra_info: dict | None) -> str | None:
    """The policy's final answer: the episode's record if the rollout was an episode, else the response's
    last `<answer>` block.

    >>> policy_answer("<information><answer>x</answer></information>", {"policy_answer": None}) is None
    True
    >>> policy_answer("<answer> Paris </answer>", {})
    'Paris'
    """
    if extra_info is not None and "policy_answer" in extra_info:
        return extra_info["policy_answer"]
    return extract_answer(solution_str)


def _scores(answer: str | None, golds: list[str], extra_info: dict, acc: float, **flags: float) -> dict[str, float]:
    em = exact_match(answer, golds) if answer is not None else 0.0
    return {
        "score": acc, "acc": acc, "em": em, "f1": f1(answer, golds) if answer is not None else 0.0,
        "format_ok": float(answer is not None), "num_searches": float(extra_info.get("num_searches", 0)),
        "judge_failed": 0.0, "judge_garbled": 0.0, **flags,
    }


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict | None = None,
    **kwargs: Any,
) -> dict[str, float]:
    """Exact match of the policy's final answer against the gold answers.

    `extra_info["num_searches"]` is filled in by the search agent loop; it is reported, not rewarded.

    >>> compute_score("hotpotqa", "<answer>Tulsa</answer>", {"target": ["Tulsa"]})["score"]
    1.0
    """
    extra_info = extra_info or {}
    answer = policy_answer(solution_str, extra_info)
    golds = gold_answers(ground_truth)
    return _scores(answer, golds, extra_info, exact_match(answer, golds) if answer is not None else 0.0)


_JUDGE_CLIENTS: dict[tuple, OpenAIChatModel] = {}


def _judge_client(url: str, model: str, api_key_env: str | None, max_concurrency: int, timeout_s: float,
                  max_retries: int) -> OpenAIChatModel:
    """One client per endpoint and event loop, so a reward worker reuses its connections across calls."""
    key = (url, model, api_key_env, max_concurrency, timeout_s, max_retries, id(asyncio.get_running_loop()))
    if key not in _JUDGE_CLIENTS:
        _JUDGE_CLIENTS[key] = OpenAIChatModel(url, model, api_key_env=api_key_env, max_concurrency=max_concurrency,
                                              timeout=timeout_s, max_retries=max_retries, temperature=0.0)
    return _JUDGE_CLIENTS[key]


async def judge_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict | None = None,
    *,
    judge_url: str,
    judge_model: str,
    api_key_env: str | None = None,
    max_concurrency: int = 32,
    max_tokens: int = 512,
    timeout_s: float = 60.0,
    max_retries: int = 2,
    judge_failure_score: float = 0.0,
    **kwargs: Any,
) -> dict[str, float]:
    """An LLM judge grades the policy's final answer against the gold answers (the paper's reward).

    The question comes from `extra_info["question"]` (set by sage_rl's datasets). The API key is read
    from the environment variable named by `api_key_env`, never from config. A judge unreachable after
    `max_retries` retries of `timeout_s` each gives `judge_failure_score` with `judge_failed = 1`.
    """
    extra_info = extra_info or {}
    answer = policy_answer(solution_str, extra_info)
    golds = gold_answers(ground_truth)
    client = _judge_client(judge_url, judge_model, api_key_env, max_concurrency, timeout_s, max_retries)
    judge = LLMJudge(client, max_tokens=max_tokens)
    try:
        verdict = await judge(str(extra_info.get("question", "")), answer, golds)
    except LLMError as e:  # intended: an outage is a flagged, bounded score, not a dropped trajectory
        logger.warning("judge %s unavailable, scoring %s: %s", judge_model, judge_failure_score, e)
        return _scores(answer, golds, extra_info, judge_failure_score, judge_failed=1.0)
    return _scores(answer, golds, extra_info, verdict.score, judge_garbled=float(verdict.garbled))
