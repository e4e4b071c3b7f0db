"""Default reward for search agents: correctness of the last `<answer>`, with the search count logged.

A plain callable in verl's `reward.custom_reward_function` signature, so users swap it for their own
function by config (`reward.custom_reward_function.path=/path/to/file.py name=my_score`). It always
returns the same keys, so verl logs them as per-key metrics without schema drift between batches.
"""

from __future__ import annotations

from typing import Any

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
