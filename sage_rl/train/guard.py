"""Per-step rollout statistics and the reward guard, from the fields verl stores for each trajectory.

verl 0.9.1's v1 trainer logs neither the agent loop's `extra_fields` nor the reward's extra keys during
training (only in validation). `rollout_metrics` turns them into step metrics under `sage/`: searches
(mean, range and histogram), invalid turns, retrieval errors, answered share, budget exhaustion, the
reward's components (`sage/reward/*`), accuracy per data source (`sage/acc/<source>`), the share of
question groups whose rollouts all scored the same (no GRPO signal), and the judge's failure and garbled
shares.
`check_judge_failures` stops a run whose step has more judge failures than the recipe allows: a judge
outage otherwise trains on a batch whose answered trajectories all scored the failure score.

Pure Python: `sage_rl.train.trainer` calls these on the step's data; tests call them directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RewardGuard:
    """The `reward_guard:` block of a training recipe."""

    # A step in which the judge failed on more than this share of the samples it had to grade (those with an
    # answer) stops the run; 1.0 never stops.
    max_judge_failure_share: float = 0.2

    @classmethod
    def from_trainer_config(cls, config: Any) -> RewardGuard:
        from sage_rl.config import reject_unknown

        block = dict(config.get("reward_guard") or {})
        reject_unknown("reward_guard", block, cls.__dataclass_fields__)
        guard = cls(**block)
        if not 0.0 <= guard.max_judge_failure_share <= 1.0:
            raise ValueError("reward_guard.max_judge_failure_share must be in [0, 1]")
        return guard


class JudgeOutage(RuntimeError):
    """Too many judge failures in one training step."""


def _values(rows: Sequence[dict], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key) is not None]


def rollout_metrics(extra_fields: Sequence[dict]) -> dict[str, float]:
    """Step metrics from each trajectory's `extra_fields` (agent loop fields + `reward_extra_info`).

    `sage/judge_failed/share` is over the samples the judge had to grade (`format_ok`: they hold an answer).

    >>> judged = {"judge_failed": 1.0, "format_ok": 1.0}
    >>> m = rollout_metrics([{"num_searches": 2, "policy_answer": "x", "reward_extra_info": judged},
    ...                      {"num_searches": 0, "policy_answer": None, "reward_extra_info": {"format_ok": 0.0}}])
    >>> m["sage/num_searches/mean"], m["sage/answered/share"], m["sage/judge_failed/share"]
    (1.0, 0.5, 1.0)
    >>> rollout_metrics([{"generation_s": 3.0, "retrieval_s": 1.0}, {"generation_s": 5.0, "retrieval_s": 1.0}])
    {'sage/rollout/retrieval_share': 0.2}
    """
    rows = [dict(f or {}) for f in extra_fields]
    rewards = [dict(r.get("reward_extra_info") or {}) for r in rows]
    out: dict[str, float] = {}
    searches = _values(rows, "num_searches")
    if searches:
        out["sage/num_searches/mean"] = sum(searches) / len(searches)
        out["sage/num_searches/max"] = max(searches)
        out["sage/num_searches/min"] = min(searches)
        for n in sorted(set(searches)):  # the histogram, as shares of the step's trajectories
            out[f"sage/num_searches/share_{int(n)}"] = searches.count(n) / len(searches)
    for key in ("invalid_turns", "retrieval_errors", "budget_exhausted"):
        values = _values(rows, key)
        if values:
            out[f"sage/{key}/mean"] = sum(values) / len(values)
    waits = [(float(r["generation_s"]), float(r["retrieval_s"])) for r in rows
             if r.get("generation_s") is not None and r.get("retrieval_s") is not None]
    if waits and (total := sum(g + t for g, t in waits)) > 0:  # share of rollout time spent waiting for /retrieve
        out["sage/rollout/retrieval_share"] = sum(t for _, t in waits) / total
    if any("policy_answer" in r for r in rows):
        out["sage/answered/share"] = sum(r.get("policy_answer") is not None for r in rows) / len(rows)
    for key in ("acc", "step_factor", "budget_penalty", "target_steps"):  # the reward's components
        values = _values(rewards, key)
        if values:
            out[f"sage/reward/{key}/mean"] = sum(values) / len(values)
    by_source: dict[str, list[float]] = {}
    for row, reward in zip(rows, rewards, strict=True):
        if row.get("data_source") is not None and reward.get("acc") is not None:
            by_source.setdefault(str(row["data_source"]), []).append(float(reward["acc"]))
    for source, values in sorted(by_source.items()):
        out[f"sage/acc/{source}"] = sum(values) / len(values)
    groups: dict[str, list[float]] = {}
    for row, reward in zip(rows, rewards, strict=True):  # a question's rollouts are its GRPO group
        if row.get("qid") is not None and reward.get("score") is not None:
            groups.setdefault(str(row["qid"]), []).append(float(reward["score"]))
    multi = [scores for scores in groups.values() if len(scores) > 1]
    if multi:  # all-equal scores give GRPO no signal (DAPO's dynamic sampling drops such groups)
        out["sage/zero_variance_groups/share"] = sum(len(set(scores)) == 1 for scores in multi) / len(multi)
    judged = [r for r in rewards if r.get("format_ok")]
    for key in ("judge_failed", "judge_garbled"):
        if any(key in r for r in rewards):
            out[f"sage/{key}/share"] = sum(float(r.get(key) or 0.0) for r in judged) / len(judged) if judged else 0.0
    return out


def check_judge_failures(metrics: dict[str, float], guard: RewardGuard, step: int) -> None:
    """Raise `JudgeOutage` when the step's judge failure share passes the guard's threshold."""
    share = metrics.get("sage/judge_failed/share", 0.0)
    if share > guard.max_judge_failure_share:
        raise JudgeOutage(
            f"step {step}: the reward judge failed on {share:.0%} of the samples, above "
            f"reward_guard.max_judge_failure_share={guard.max_judge_failure_share:.0%}. Training on this batch would "
            "learn from the failure score instead of the judge's verdicts; the run stops before the update. "
            "Check the judge endpoint (reward.custom_reward_function.reward_kwargs.judge_url) and resume from the "
            "last checkpoint."
        )
