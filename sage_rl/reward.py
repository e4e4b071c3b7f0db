"""Rewards for search agents: correctness of the last `<answer>`, with the search count logged.

Plain callables in verl's `reward.custom_reward_function` signature, so users swap them for their own
function by config (`reward.custom_reward_function.path=/path/to/file.py name=my_score`):

- `compute_score` (default): exact match against the gold answers, free and deterministic;
- `judge_score`: the paper's reward, an LLM judge (BrowseComp/HLE-style grader) behind any
  OpenAI-compatible endpoint, configured through `reward.custom_reward_function.reward_kwargs`.

Each returns the same keys on every call, so verl logs them as per-key metrics without schema drift.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sage_rl.judge import LLMJudge
from sage_rl.llm import OpenAIChatModel
from sage_rl.protocol import extract_answer
from sage_rl.qa_match import exact_match


def gold_answers(ground_truth: Any) -> list[str]:
    """Gold answers from a verl `reward_model.ground_truth`: `{"target": [...]}`, a list, or a string."""
    if isinstance(ground_truth, dict):
        ground_truth = ground_truth.get("target", ground_truth.get("answers"))
    if isinstance(ground_truth, str):
        return [ground_truth]
    if ground_truth is None:
        raise ValueError("ground_truth has no answers: expected {'target': [...]}, a list or a string")
    return [str(a) for a in ground_truth]


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict | None = None,
    **kwargs: Any,
) -> dict[str, float]:
    """Exact match of the response's last `<answer>` against the gold answers.

    `extra_info["num_searches"]` is filled in by the search agent loop; it is reported, not rewarded.

    >>> compute_score("hotpotqa", "<answer>Tulsa</answer>", {"target": ["Tulsa"]})["score"]
    1.0
    """
    answer = extract_answer(solution_str)
    acc = exact_match(answer, gold_answers(ground_truth)) if answer is not None else 0.0
    return {
        "score": acc,
        "acc": acc,
        "format_ok": float(answer is not None),
        "num_searches": float((extra_info or {}).get("num_searches", 0)),
    }


_JUDGE_CLIENTS: dict[tuple, OpenAIChatModel] = {}


def _judge_client(url: str, model: str, api_key_env: str | None, max_concurrency: int) -> OpenAIChatModel:
    """One client per endpoint and event loop, so a reward worker reuses its connections across calls."""
    key = (url, model, api_key_env, max_concurrency, id(asyncio.get_running_loop()))
    if key not in _JUDGE_CLIENTS:
        _JUDGE_CLIENTS[key] = OpenAIChatModel(url, model, api_key_env=api_key_env, max_concurrency=max_concurrency,
                                              temperature=0.0)
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
    **kwargs: Any,
) -> dict[str, float]:
    """An LLM judge grades the response's last `<answer>` against the gold answers (the paper's reward).

    The question comes from `extra_info["question"]` (set by sage_rl's datasets). The API key is read
    from the environment variable named by `api_key_env`, never from config.
    """
    extra_info = extra_info or {}
    answer = extract_answer(solution_str)
    judge = LLMJudge(_judge_client(judge_url, judge_model, api_key_env, max_concurrency), max_tokens=max_tokens)
    verdict = await judge(str(extra_info.get("question", "")), answer, gold_answers(ground_truth))
    return {
        "score": verdict.score,
        "acc": verdict.score,
        "format_ok": float(answer is not None),
        "num_searches": float(extra_info.get("num_searches", 0)),
        "judge_garbled": float(verdict.garbled),
    }
