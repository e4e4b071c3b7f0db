"""Rewards for search agents: correctness of the policy's final answer, with the search count logged.

Plain callables in verl's `reward.custom_reward_function` signature, so users swap them for their own
function by config (`reward.custom_reward_function.path=/path/to/file.py name=my_score`):

- `compute_score` (default): exact match against the gold answers, free and deterministic;
- `judge_score`: the paper's reward, an LLM judge (BrowseComp/HLE-style grader) behind any
  OpenAI-compatible endpoint, configured through `reward.custom_reward_function.reward_kwargs`;
- `step_aware_score`: either correctness (EM, F1 or the judge) times a search-step term relative to the
  question's target S and its fewest known correct searches, minus a penalty past the search budget
  (formula and worked numbers in its docstring). Paper recipes keep pure correctness so they reproduce.

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

# The one return schema of every reward here, for every sample and data source (verl logs each key; a key
# missing from some samples would break its aggregation). `step_factor` and `budget_penalty` are the
# step-aware terms (informational for the pure-correctness rewards).
REWARD_KEYS = ("score", "acc", "em", "f1", "format_ok", "num_searches", "target_steps", "invalid_actions",
               "search_errors", "step_factor", "budget_penalty", "judge_failed", "judge_garbled")


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


def step_factor(num_searches: int, target_steps: int | None, fewest_correct: int | None = None) -> float:
    """The search-step term r in [0, 1] of `step_aware_score` (1.0 when the question has no target S).

    Below S (the evidence the question was built to need), credit grows linearly: r = m / S. From S up to
    `enough` = max(S, fewest correct searches known for the question) there is no bonus and no loss: r = 1.
    Past `enough`, credit shrinks as enough / m: searching more than needed is never rewarded.

    >>> [round(step_factor(m, 3, 4), 2) for m in (0, 1, 3, 4, 8)]
    [0.0, 0.33, 1.0, 1.0, 0.5]
    """
    if not target_steps:
        return 1.0
    enough = max(target_steps, fewest_correct or 0)
    if num_searches < target_steps:
        return num_searches / target_steps
    return 1.0 if num_searches <= enough else enough / num_searches


def _scores(answer: str | None, golds: list[str], extra_info: dict, acc: float, **flags: float) -> dict[str, float]:
    em = exact_match(answer, golds) if answer is not None else 0.0
    searches = int(extra_info.get("num_searches", 0) or 0)
    target = int(extra_info.get("target_steps", 0) or 0)
    return {
        "score": acc, "acc": acc, "em": em, "f1": f1(answer, golds) if answer is not None else 0.0,
        "format_ok": float(answer is not None), "num_searches": float(searches), "target_steps": float(target),
        "invalid_actions": float(extra_info.get("invalid_turns", 0) or 0),
        "search_errors": float(extra_info.get("retrieval_errors", 0) or 0),
        "step_factor": step_factor(searches, target, extra_info.get("min_searches")),
        "budget_penalty": float(bool(extra_info.get("budget_exhausted", 0))),
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


async def step_aware_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict | None = None,
    *,
    correctness: str = "em",
    step_weight: float = 0.3,
    **judge_kwargs: Any,
) -> dict[str, float]:
    """Correctness with a search-step term, OTC-style (arXiv 2504.14870), for online and SAGE data.

        score = acc * ((1 - w) + w * r)  -  w * budget_exhausted

    `acc` is EM, F1 or the LLM judge's verdict (`correctness` = em | f1 | judge; the judge's settings are the
    other keyword arguments, as for `judge_score`); `w` = `step_weight`; `r` = `step_factor(m, S, n)` with m
    the trajectory's searches, S the question's `extra_info["target_steps"]` and n its fewest known correct
    searches `extra_info["min_searches"]` (the verifying solver's |S*|, or the policy's best so far);
    `budget_exhausted` = the episode ran out of searches. Without a target S, r = 1 (pure correctness, with
    the budget penalty). A judge failure scores `judge_failure_score` as in `judge_score`, with no step term.

    Worked numbers, w = 0.3, S = 3, n = 3: correct in 3 searches 1.0; correct in 1 search 0.8 (less credit for
    an answer reached with less evidence than the question needs); correct in 0 searches 0.7; correct in 6
    searches 0.85 (no bonus for searching more than needed); wrong 0.0; wrong after exhausting the budget
    -0.3.

    >>> import asyncio
    >>> info = {"policy_answer": "Tulsa", "num_searches": 1, "target_steps": 3, "min_searches": 3}
    >>> round(asyncio.run(step_aware_score("sage", "", ["Tulsa"], info))["score"], 2)
    0.8
    """
    if not 0.0 <= step_weight <= 1.0:
        raise ValueError(f"step_weight must be in [0, 1], got {step_weight}")
    if correctness == "judge":
        base = await judge_score(data_source, solution_str, ground_truth, extra_info, **judge_kwargs)
    elif correctness in ("em", "f1"):
        base = compute_score(data_source, solution_str, ground_truth, extra_info)
    else:
        raise ValueError(f"correctness must be em, f1 or judge, not {correctness!r}")
    if base["judge_failed"]:
        return base
    acc = base["f1"] if correctness == "f1" else base["acc"]
    score = acc * ((1.0 - step_weight) + step_weight * base["step_factor"]) - step_weight * base["budget_penalty"]
    return base | {"score": score, "acc": acc}
