"""The rewards: EM (default), the LLM judge and the step-aware reward; one fixed schema, the policy's own answer,
judge outages bounded."""

import pytest
from llm_server import judge_server, refused_url

from sage_rl.reward import REWARD_KEYS, compute_score, gold_answers

KEYS = set(REWARD_KEYS)


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("<think>x</think><answer>Tulsa</answer>", 1.0),
        ("<answer>Paris</answer> ... <answer> the tulsa </answer>", 1.0),  # the last answer counts
        ("<answer>Tulsa</answer><answer>Paris</answer>", 0.0),
        ("Tulsa", 0.0),  # no tags: no credit
    ],
)
def test_exact_match_on_last_answer(response, expected):
    result = compute_score("hotpotqa", response, {"target": ["Tulsa", "Tulsa, Oklahoma"]})
    assert set(result) == KEYS
    assert result["score"] == expected


def test_format_and_search_count_are_reported():
    result = compute_score("hotpotqa", "no answer", ["x"], extra_info={"num_searches": 3})
    assert result["format_ok"] == 0.0 and result["num_searches"] == 3.0


def test_ground_truth_shapes():
    assert gold_answers({"target": ["a", "b"]}) == ["a", "b"]
    assert gold_answers("a") == ["a"]
    with pytest.raises(ValueError):
        gold_answers({"other": 1})


def _judge(url, response, extra_info=None, **kwargs):
    import asyncio

    from sage_rl.reward import judge_score

    info = {"question": "Where did the band first perform?", "num_searches": 2, **(extra_info or {})}
    return asyncio.run(judge_score("hotpotqa", response, {"target": ["Tulsa"]}, info, judge_url=url,
                                   judge_model="judge", **kwargs))


def test_judge_reward_asks_an_openai_compatible_judge():
    with judge_server() as (url, state):
        right = _judge(url, "<answer>Tulsa</answer>")
        wrong = _judge(url, "<answer>Paris</answer>")
        silent = _judge(url, "no answer")
    assert right == {"score": 1.0, "acc": 1.0, "em": 1.0, "f1": 1.0, "format_ok": 1.0, "num_searches": 2.0,
                     "target_steps": 0.0, "invalid_actions": 0.0, "search_errors": 0.0, "step_factor": 1.0,
                     "budget_penalty": 0.0, "judge_failed": 0.0, "judge_garbled": 0.0}
    assert wrong["score"] == 0.0 and wrong["format_ok"] == 1.0 and set(wrong) == set(REWARD_KEYS)
    assert silent["score"] == 0.0 and silent["format_ok"] == 0.0
    assert state.calls == 2  # no answer, no judge call
    assert "Where did the band first perform?" in state.prompts[0]


def test_the_judge_grades_the_policys_answer_not_environment_text():
    transcript = "<search>q</search>\n\n<information>Doc 1(Title: X) <answer>Tulsa</answer></information>\n\n"
    with judge_server() as (url, state):
        result = _judge(url, transcript + "<answer>Paris</answer>", {"policy_answer": "Paris"})
    assert result["score"] == 0.0 and "Response: Paris" in state.prompts[0]


@pytest.mark.parametrize("fault", ["refused", "error", "hang"])
def test_a_judge_outage_gives_a_flagged_score_and_never_raises(fault):
    kwargs = {"timeout_s": 0.5, "max_retries": 1, "judge_failure_score": 0.0}
    if fault == "refused":
        result = _judge(refused_url(), "<answer>Tulsa</answer>", **kwargs)
    else:
        with judge_server(fault, hang_s=3.0) as (url, state):
            result = _judge(url, "<answer>Tulsa</answer>", **kwargs)
        assert state.calls == 2  # bounded: the first attempt and one retry
    assert result["judge_failed"] == 1.0 and result["score"] == 0.0
    assert result["em"] == 1.0 and result["format_ok"] == 1.0  # what is known without the judge stays known


def _step_aware(info: dict, answer: str | None = "Tulsa", **kwargs) -> dict:
    import asyncio

    from sage_rl.reward import step_aware_score

    info = {"policy_answer": answer, "target_steps": 3, "min_searches": 3, **info}
    return asyncio.run(step_aware_score("sage", "", {"target": ["Tulsa"]}, info, **kwargs))


@pytest.mark.parametrize(
    ("info", "answer", "expected"),
    [
        ({"num_searches": 3}, "Tulsa", 1.0),  # correct with the evidence the question needs
        ({"num_searches": 1}, "Tulsa", 0.7 + 0.3 / 3),  # fewer searches than S: less credit
        ({"num_searches": 0}, "Tulsa", 0.7),
        ({"num_searches": 6}, "Tulsa", 0.7 + 0.3 * 3 / 6),  # past the fewest correct searches: no bonus, less
        ({"num_searches": 5, "min_searches": 5}, "Tulsa", 1.0),  # the question's |S*| is 5: 5 is needed
        ({"num_searches": 3}, "Paris", 0.0),  # wrong: no step credit at all
        ({"num_searches": 10, "budget_exhausted": 1}, "Paris", -0.3),  # penalty past the budget
        ({"num_searches": 10, "budget_exhausted": 1}, "Tulsa", 0.7 + 0.3 * 0.3 - 0.3),
        ({"num_searches": 1, "target_steps": 0}, "Tulsa", 1.0),  # no target S (static data): pure correctness
    ],
)
def test_step_aware_reward_branches(info, answer, expected):
    result = _step_aware(info, answer)
    assert set(result) == KEYS
    assert result["score"] == pytest.approx(expected)
    assert result["acc"] == (1.0 if answer == "Tulsa" else 0.0)


def test_step_aware_reward_weight_zero_is_pure_correctness_and_f1_is_partial():
    assert _step_aware({"num_searches": 0}, step_weight=0.0)["score"] == 1.0
    partial = _step_aware({"num_searches": 3}, "Tulsa Oklahoma", correctness="f1")
    assert 0.0 < partial["score"] == partial["f1"] < 1.0 and partial["em"] == 0.0
    with pytest.raises(ValueError, match="correctness must be"):
        _step_aware({}, correctness="bleu")
    with pytest.raises(ValueError, match="step_weight"):
        _step_aware({}, step_weight=1.5)


def test_every_reward_returns_one_schema_over_mixed_data_sources():
    """SAGE rows (with S), benchmark rows (without), single-turn rows (no agent fields): same keys."""
    import asyncio

    from sage_rl.reward import step_aware_score

    rows = [("sage", "", {"policy_answer": "x", "num_searches": 2, "target_steps": 3, "invalid_turns": 1,
                          "retrieval_errors": 1, "budget_exhausted": 0}),
            ("hotpotqa-dev", "", {"policy_answer": None, "num_searches": 4}),
            ("nq", "<answer>x</answer>", None)]
    for source, text, info in rows:
        assert set(compute_score(source, text, ["x"], info)) == KEYS
        assert set(asyncio.run(step_aware_score(source, text, ["x"], info))) == KEYS
    sage = compute_score(*rows[0][:2], ["x"], rows[0][2])
    assert (sage["target_steps"], sage["invalid_actions"], sage["search_errors"]) == (3.0, 1.0, 1.0)


def test_step_aware_reward_through_a_failing_judge_is_the_flagged_failure_score():
    result = _step_aware({"num_searches": 3, "question": "q"}, correctness="judge", judge_url=refused_url(),
                         judge_model="judge", timeout_s=1, max_retries=0, judge_failure_score=0.0)
    assert result["judge_failed"] == 1.0 and result["score"] == 0.0 and set(result) == KEYS
