"""The default reward: EM on the last <answer>, fixed keys, search count reported."""

import pytest

from sage_rl.reward import compute_score, gold_answers

KEYS = {"score", "acc", "format_ok", "num_searches"}


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
