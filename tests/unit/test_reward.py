"""The rewards: EM (default) and the LLM judge, fixed keys, the policy's own answer, judge outages bounded."""

import pytest
from judge_server import judge_server, refused_url

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
                     "judge_failed": 0.0, "judge_garbled": 0.0}
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
