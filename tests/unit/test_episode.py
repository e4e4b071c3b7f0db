"""The episode engine's policies, one test per rule, and Search-R1's observation rendering byte for byte."""

from __future__ import annotations

import asyncio

import pytest

from retrieval_server.client import Hit
from sage_rl import protocol
from sage_rl.assets import EMBEDDED_CORPUS, read_jsonl
from sage_rl.episode import SEARCH_FAILED_OBSERVATION, Episode, EpisodeFailed, EpisodePolicy

HITS = [Hit("d1", '"Paris"\nParis is the capital of France.', 1.0)]


def play(policy: EpisodePolicy, turns: list[str], fail: bool = False) -> Episode:
    """Drive an episode with scripted turns and a scripted search, as an adapter would."""
    episode = Episode(policy)
    for text in turns:
        step = episode.step(text)
        if step.kind == "end":
            break
        if step.kind == "search":
            episode.observe_error("HTTP 503") if fail else episode.observe(HITS)
    return episode


def test_search_r1_defaults():
    p = EpisodePolicy()
    assert (p.max_searches, p.invalid_spends_budget, p.on_budget, p.max_invalid, p.topk, p.max_obs_tokens) == (
        4, True, "end", None, 3, 500)
    assert p.stop == ("</search>", "</answer>")


def test_an_answer_ends_the_episode_with_the_policys_answer():
    ep = play(EpisodePolicy(), ["<search> q </search>", "<think>ok</think><answer> Paris </answer>"])
    assert (ep.answer, ep.end_reason, ep.num_searches, [t.kind for t in ep.turns]) == (
        "Paris", "answer", 1, ["search", "answer"])
    assert ep.turns[0].doc_ids == ("d1",) and ep.turns[0].observation.startswith("\n\n<information>Doc 1(")


def test_budget_end_is_search_r1s_final_turn():
    # max_searches=2: two action turns (a search and an invalid one), then one turn in which only an
    # answer counts; its search is not run.
    ep = play(EpisodePolicy(max_searches=2), ["<search>a</search>", "prose", "<search>b</search>"])
    assert (ep.num_searches, ep.invalid_turns, ep.end_reason, ep.answer) == (1, 1, "budget", None)
    assert ep.budget_exhausted and ep.turns[-1].observation == ""
    ep = play(EpisodePolicy(max_searches=2), ["<search>a</search>", "prose", "<answer>x</answer>"])
    assert (ep.answer, ep.end_reason) == ("x", "answer")


def test_force_answer_tells_the_model_and_gives_one_last_turn():
    policy = EpisodePolicy(max_searches=1, on_budget="force_answer", budget_message="\nNo more searches.\n")
    ep = play(policy, ["<search>a</search>", "<search>b</search>", "<search>c</search>"])
    assert ep.turns[1].observation == "\nNo more searches.\n" and ep.num_searches == 1
    assert (ep.end_reason, ep.answer, len(ep.turns)) == ("budget", None, 3)
    ep = play(policy, ["<search>a</search>", "<search>b</search>", "<answer>y</answer>"])
    assert (ep.end_reason, ep.answer) == ("answer", "y")


def test_invalid_turns_get_the_message_until_max_invalid():
    policy = EpisodePolicy(invalid_spends_budget=False, max_invalid=2)
    ep = play(policy, ["a", "b", "c", "<answer>never read</answer>"])
    assert [t.observation for t in ep.turns[:2]] == [protocol.INVALID_ACTION_MESSAGE] * 2
    assert (ep.invalid_turns, ep.end_reason, ep.answer) == (3, "invalid", None)


def test_an_unbounded_invalid_policy_is_refused():
    with pytest.raises(ValueError, match="max_invalid"):
        EpisodePolicy(invalid_spends_budget=False)


def test_retrieval_errors_are_observed_or_fail():
    ep = play(EpisodePolicy(), ["<search>a</search>", "<answer>z</answer>"], fail=True)
    assert ep.turns[0].observation == SEARCH_FAILED_OBSERVATION and ep.retrieval_errors == 1 and ep.answer == "z"
    with pytest.raises(EpisodeFailed, match="HTTP 503"):
        play(EpisodePolicy(on_retrieval_error="fail"), ["<search>a</search>"], fail=True)


def test_the_search_call_applies_the_policy_to_client_errors():
    class Down:
        async def retrieve(self, queries, topk=None):
            raise ConnectionError("refused")

    ep = Episode(EpisodePolicy())
    step = ep.step("<search>a</search>")
    assert asyncio.run(ep.search(Down(), step.query)) == SEARCH_FAILED_OBSERVATION
    assert ep.turns[0].retrieval_error == "ConnectionError: refused"


def test_the_generators_episode_ends_on_any_turn_that_does_not_search():
    policy = EpisodePolicy(max_searches=3, ends_on="no_search", on_budget="force_answer")
    ep = play(policy, ["<search>a</search>", "<question>Q</question><answer>A</answer><answering steps>s"])
    assert (ep.end_reason, [t.kind for t in ep.turns], ep.answer) == ("output", ["search", "output"], None)
    assert policy.stop == ("</search>",)


def test_a_turn_is_read_up_to_its_first_action():
    ep = play(EpisodePolicy(), ["<search> q </search><information>invented</information><answer>x</answer>"])
    assert ep.turns[0].text == "<search> q </search>" and ep.num_searches == 1 and not ep.done


def test_environment_messages_hold_no_parseable_action():
    for text in (protocol.INVALID_ACTION_MESSAGE, SEARCH_FAILED_OBSERVATION):
        assert protocol.parse_action(text) is None and protocol.extract_answer(text) is None
        assert "<" not in text.replace("<information>", "").replace("</information>", "")


def test_rendering_matches_search_r1_byte_for_byte():
    # Search-R1 (search_r1/llm_agent/generation.py): title = contents.split("\n")[0] (quotes kept),
    # text = "\n".join(rest), each passage f"Doc {i}(Title: {title}) {text}\n", the block .strip()ped and
    # wrapped as f"\n\n<information>{block}</information>\n\n". The expected strings below are written out
    # by hand from that definition for two real corpus rows and one multi-line row.
    rows = [r for r, _ in zip(read_jsonl(EMBEDDED_CORPUS), range(2), strict=False)]
    assert rows[0]["contents"].startswith('"Act of Congress (music group)"\nAct of Congress is a Birmingham')
    hits = [Hit(r["id"], r["contents"], 1.0) for r in rows] + [Hit("m", '"Multi"\nline one\nline two', 0.5)]
    expected = (
        '\n\n<information>Doc 1(Title: "Act of Congress (music group)") Act of Congress is a Birmingham, Alabama '
        "based singer-songwriter group. They play only acoustic instruments in their music, giving them a sound "
        "that is unique, meshing several genres of music together. Their first performance of the debut album "
        '"Declaration" sold out at WorkPlay Theater in Birmingham in 2008.\n'
        'Doc 2(Title: "Extended Play (Pretenders EP)") Extended Play is a 1981 EP released by new wave band '
        + rows[1]["contents"].split("new wave band ", 1)[1]
        + '\nDoc 3(Title: "Multi") line one\nline two</information>\n\n'
    )
    assert protocol.render_information(hits, max_tokens=None) == expected
