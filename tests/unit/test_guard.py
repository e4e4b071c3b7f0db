"""The trainer's step metrics from trajectory fields, and the reward guard's threshold."""

from __future__ import annotations

import pytest

from sage_rl.train.guard import JudgeOutage, RewardGuard, check_judge_failures, rollout_metrics


def _traj(searches: int, answer: str | None, **reward) -> dict:
    return {"num_searches": searches, "policy_answer": answer, "invalid_turns": 0, "retrieval_errors": 0,
            "budget_exhausted": 0, "reward_extra_info": {"format_ok": float(answer is not None), **reward}}


def test_rollout_metrics_histogram_and_reward_components():
    m = rollout_metrics([_traj(0, None, acc=0.0, step_factor=0.0, budget_penalty=0.0, target_steps=3),
                         _traj(2, "x", acc=1.0, step_factor=0.5, budget_penalty=0.0, target_steps=3),
                         _traj(2, "y", acc=0.0, step_factor=0.5, budget_penalty=1.0, target_steps=3),
                         _traj(4, "z", acc=1.0, step_factor=1.0, budget_penalty=0.0, target_steps=4)])
    assert (m["sage/num_searches/share_0"], m["sage/num_searches/share_2"], m["sage/num_searches/share_4"]) == (
        0.25, 0.5, 0.25)
    assert "sage/num_searches/share_1" not in m
    assert m["sage/reward/acc/mean"] == 0.5 and m["sage/reward/step_factor/mean"] == 0.5
    assert m["sage/reward/budget_penalty/mean"] == 0.25 and m["sage/reward/target_steps/mean"] == 3.25
    assert m["sage/answered/share"] == 0.75


def test_guard_stops_only_past_its_threshold():
    guard = RewardGuard(max_judge_failure_share=0.5)
    m = rollout_metrics([_traj(1, "a", judge_failed=1.0), _traj(1, "b", judge_failed=0.0), _traj(0, None)])
    assert m["sage/judge_failed/share"] == 0.5  # of the two answered samples; the unanswered one is not judged
    check_judge_failures(m, guard, step=3)  # at the threshold: trains
    m = rollout_metrics([_traj(1, "a", judge_failed=1.0), _traj(1, "b", judge_failed=1.0), _traj(0, None)])
    with pytest.raises(JudgeOutage, match="step 3: the reward judge failed on 100% of the samples"):
        check_judge_failures(m, guard, step=3)


def test_accuracy_per_data_source_and_zero_variance_groups():
    rows = [dict(_traj(1, "a", acc=1.0, score=1.0), qid="q1", data_source="sage-online"),
            dict(_traj(1, "b", acc=0.0, score=0.0), qid="q1", data_source="sage-online"),
            dict(_traj(0, None, acc=0.0, score=0.0), qid="q2", data_source="hotpotqa"),
            dict(_traj(0, None, acc=0.0, score=0.0), qid="q2", data_source="hotpotqa"),
            dict(_traj(2, "c", acc=1.0, score=1.0), qid="q3", data_source="hotpotqa")]  # a group of one: not counted
    m = rollout_metrics(rows)
    assert m["sage/acc/sage-online"] == 0.5 and m["sage/acc/hotpotqa"] == pytest.approx(1 / 3)
    assert m["sage/zero_variance_groups/share"] == 0.5  # q2 (all 0) of {q1, q2}
