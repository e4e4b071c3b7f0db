"""Judges: the LLM grader's parsing and list variant, and the cheap SQuAD-normalised alternatives."""

from __future__ import annotations

import asyncio

import pytest

from sage_rl.judge import LLMJudge, make_judge, parse_correct
from sage_rl.llm import ScriptedChatModel


@pytest.mark.parametrize("text,expected", [
    ("extracted_final_answer: 5\nreasoning: same\ncorrect: yes\nconfidence: 90%", True),
    ("correct: **no**", False),
    ("Correct: Yes", True),
    ("correct: no ... on reflection correct: yes", True),
    ("the answers match", None),
])
def test_parse_correct(text, expected):
    assert parse_correct(text) is expected


def test_llm_judge_uses_list_prompt_for_several_golds_and_flags_garbled_replies():
    model = ScriptedChatModel(lambda m: "correct: yes")
    judge = LLMJudge(model)
    assert asyncio.run(judge("Q?", "Paris", ["Paris"])).correct
    assert "Correct answer: Paris" in model.calls[0][0]["content"]
    asyncio.run(judge("Q?", "Paris", ["Paris", "City of Light"]))
    assert "Acceptable answers (any one is correct): Paris, City of Light" in model.calls[1][0]["content"]
    garbled = asyncio.run(LLMJudge(ScriptedChatModel(lambda m: "hmm"))("Q?", "x", ["y"]))
    assert (garbled.correct, garbled.garbled) == (False, True)
    assert asyncio.run(judge("Q?", None, ["Paris"])).correct is False and len(model.calls) == 2  # no call


@pytest.mark.parametrize("kind,prediction,correct", [
    ("em", "The Paris!", True), ("em", "Paris France", False),
    ("cover_em", "it is Paris, France", True), ("f1", "Paris France", False), ("f1", "paris", True),
])
def test_cheap_judges(kind, prediction, correct):
    assert asyncio.run(make_judge(kind)("Q?", prediction, ["Paris"])).correct is correct


def test_unknown_or_unconfigured_judge_fails_fast():
    with pytest.raises(ValueError, match="unknown judge"):
        make_judge("bleu")
    with pytest.raises(ValueError, match="needs a judge LLM"):
        make_judge("llm")
