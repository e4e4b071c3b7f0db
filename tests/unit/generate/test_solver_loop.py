"""The solver's multi-turn loop: searches executed and counted, budget forcing, invalid actions, stop strings."""

from __future__ import annotations

import asyncio

import pytest
from sage_world import FakeRetriever

from sage_rl.episode import ChatSettings, EpisodeFailed
from sage_rl.llm import ScriptedChatModel
from sage_rl.protocol import INVALID_ACTION_MESSAGE
from sage_rl.search_agent import SOLVER_BUDGET_MESSAGE, SearchAgent, solver_policy


def solve(replies, max_searches=10, question="Who?", retriever=None):
    replies = iter(replies)
    model = ScriptedChatModel(lambda messages: next(replies))
    retriever = retriever or FakeRetriever()
    agent = SearchAgent(model, retriever, solver_policy(max_searches=max_searches, topk=2), ChatSettings())
    return asyncio.run(agent.solve(question)), model, retriever


def test_searches_are_run_counted_and_observed():
    traj, model, retriever = solve([
        "<think>a</think><search> first </search><information>invented</information>",
        "<search> second </search>",
        "<think>ok</think><answer> Ann </answer> trailing",
    ])
    assert traj.answer == "Ann" and traj.num_searches == 2 and retriever.queries == ["first", "second"]
    assert traj.queries == ["first", "second"] and traj.doc_ids == ["first#0", "first#1", "second#0", "second#1"]
    # the model's invented <information> is cut; the environment's observation is the next user message
    assert model.calls[1][1]["content"] == "<think>a</think><search> first </search>"
    assert model.calls[1][2]["content"].startswith('\n\n<information>Doc 1(Title: "first 0") Passage 0 about first.')
    assert [t.kind for t in traj.turns] == ["search", "search", "answer"] and traj.llm_calls == 3
    assert "Question: Who?" in traj.transcript() and 'Doc 2(Title: "second 1")' in traj.transcript()


def test_search_budget_forces_a_final_answer():
    traj, model, retriever = solve(["<search> q </search>"] * 3 + ["<answer> B </answer>"], max_searches=2)
    assert traj.num_searches == 2 and len(retriever.queries) == 2 and traj.budget_exhausted
    assert model.calls[3][-1]["content"] == SOLVER_BUDGET_MESSAGE and traj.answer == "B"


def test_forced_call_without_answer_gives_none():
    traj, _, _ = solve(["<search> q </search>", "<search> again </search>", "still searching"], max_searches=1)
    assert traj.answer is None and traj.num_searches == 1 and traj.llm_calls == 3


def test_invalid_actions_get_the_invalid_message_then_stop():
    traj, model, _ = solve(["prose", "more prose", "<answer> C </answer>"])
    assert model.calls[1][-1]["content"] == INVALID_ACTION_MESSAGE and traj.answer == "C"
    traj, model, _ = solve(["prose"] * 5)
    assert traj.answer is None and traj.llm_calls == 3 and [t.kind for t in traj.turns] == ["invalid"] * 3
    assert traj.invalid_turns == 3 and traj.end_reason == "invalid"


def test_a_retrieval_error_fails_the_rollout():
    # The verifier must not judge a rollout on a search it never saw: the item is retried instead.
    with pytest.raises(EpisodeFailed, match="retrieval failed"):
        solve(["<search> q </search>"], retriever=FakeRetriever(fail=lambda q: True))
