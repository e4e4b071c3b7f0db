"""Gold warm-start trajectories on a tiny corpus: the episode engine runs the scripted gold roles."""

import asyncio
import re

import pytest

from retrieval_server.client import Hit
from sage_rl import protocol
from sage_rl.episode import EpisodePolicy
from sage_rl.generate.generator import generator_policy, parse_candidate
from sage_rl.warmstart import GoldQuestion, answer_in_evidence, build_gold, gold_solver_example

CORPUS = {
    "d1": '"Tinted Windows (album)"\nTinted Windows is the debut album by the band Tinted Windows (band).',
    "d2": '"Tinted Windows (band)"\nTinted Windows was an American supergroup. Their first show was in Tulsa.',
    "d3": '"Tulsa"\nTulsa is a city in Oklahoma.',
    "d4": '"GameFan"\nGameFan was a video game magazine that ran from 1992.',
    "d5": '"Red Herring (magazine)"\nRed Herring is a business magazine.',
}

Q_BRIDGE = GoldQuestion("q1", 'Where did the group behind the debut album "Tinted Windows" first perform', "Tulsa",
                        ("Tinted Windows (album)", "Tinted Windows (band)"), ("d1", "d2"))
Q_COMPARE = GoldQuestion("q2", "Which magazine covered video games, Red Herring or GameFan", "GameFan",
                         ("GameFan", "Red Herring (magazine)"), ("d4", "d5"), "comparison")


def overlap(query: str, contents: str) -> int:
    words = set(re.findall(r"\w+", query.lower()))
    title, _, text = contents.partition("\n")
    return 2 * len(words & set(re.findall(r"\w+", title.lower()))) + len(words & set(re.findall(r"\w+", text.lower())))


class WordRetriever:
    """Ranks the tiny corpus by word overlap with the query (title words count double)."""

    def __init__(self, hide: frozenset[str] = frozenset()):
        self.queries: list[str] = []
        self.hide = hide

    async def retrieve(self, queries, topk=None):
        out = []
        for q in queries:
            self.queries.append(q)
            scores = {d: overlap(q, CORPUS[d]) for d in CORPUS if d not in self.hide}
            ranked = sorted(scores, key=scores.__getitem__, reverse=True)
            out.append([Hit(d, CORPUS[d], float(scores[d])) for d in ranked[: topk or 2]])
        return out

    async def health(self):
        return {}


POLICY = EpisodePolicy(max_searches=2, topk=1, max_obs_tokens=None)


def test_gold_solver_searches_the_question_then_the_missing_paragraph():
    retriever = WordRetriever()
    ex = asyncio.run(gold_solver_example(Q_BRIDGE, retriever, POLICY))
    assert ex is not None and ex.role == "solver" and ex.transcript == "inline"
    t = ex.trajectory
    assert [turn.kind for turn in t.turns] == ["search", "search", "answer"]
    assert retriever.queries[0] == protocol.as_question(Q_BRIDGE.question)
    assert t.answer == "Tulsa" and t.num_searches == 2 and t.end_reason == "answer"
    # Observations are the protocol's rendering, quotes kept, and hold the answer.
    assert '<information>Doc 1(Title: "Tinted Windows (band)")' in t.turns[1].observation
    assert answer_in_evidence(ex, "Tulsa")
    assert t.prompt == protocol.search_prompt(Q_BRIDGE.question)
    # Each search turn counts the budget, so the turn after "2 of 2" is visibly the answer.
    budget = POLICY.max_searches
    assert [turn.text.split(":")[0] for turn in t.turns[:2]] == [f"<think> Search {k} of {budget}" for k in (1, 2)]


def test_solver_row_trains_on_turns_not_observations():
    ex = asyncio.run(gold_solver_example(Q_BRIDGE, WordRetriever(), POLICY))
    row = ex.sft_row()
    user, assistant = row["messages"]
    assert user == {"role": "user", "content": protocol.search_prompt(Q_BRIDGE.question)}
    trained = [s["text"] for s in assistant["segments"] if s["train"]]
    observed = [s["text"] for s in assistant["segments"] if not s["train"]]
    assert trained == [turn.text for turn in ex.trajectory.turns]
    assert all(o.strip().startswith("<information>") for o in observed) and len(observed) == 2
    assert assistant["content"] == ex.trajectory.transcript()[len(ex.trajectory.prompt):]


def test_unanswerable_questions_are_dropped():
    # The bridge paragraph is not in the index: the gold solver cannot find it within its budget.
    assert asyncio.run(gold_solver_example(Q_BRIDGE, WordRetriever(hide=frozenset({"d2"})), POLICY)) is None


def test_generator_writes_the_question_in_the_generators_format():
    policy = generator_policy(max_searches=3, topk=1, max_obs_tokens=None)
    examples, stats = asyncio.run(build_gold([Q_BRIDGE, Q_COMPARE], WordRetriever(), POLICY, policy,
                                             {d: CORPUS[d] for d in CORPUS}, generator_share=1.0))
    assert stats.solver_kept == 2 and stats.solver_dropped == 0 and stats.mean_searches == 2.0
    gens = [e for e in examples if e.role == "generator"]
    assert stats.generator_kept == len(gens) == 2
    gen = next(e for e in gens if e.qid == "q1")
    t = gen.trajectory
    # Seeded with the paragraph the question's own search found; searched the other one.
    assert "Doc 0(Title: Tinted Windows (album))" in t.prompt and "a search agent" in t.prompt
    assert [turn.kind for turn in t.turns] == ["search", "output"] and t.turns[0].query == "Tinted Windows (band)"
    candidate = parse_candidate(t.final_text, "answering steps")
    assert candidate is not None and candidate.question == Q_BRIDGE.question and candidate.answer == "Tulsa"
    assert len(candidate.steps) == 2 and candidate.steps[1].startswith("Tinted Windows (band);")
    # The generator is called as `sage-rl generate` calls it: observations come back as user messages.
    roles = [m["role"] for m in gen.sft_row()["messages"]]
    assert roles == ["user", "assistant", "user", "assistant"]


def test_yes_no_answers_make_no_generator_example():
    q = GoldQuestion("q3", "Are GameFan and Red Herring both magazines", "yes", Q_COMPARE.titles, Q_COMPARE.doc_ids)
    examples, stats = asyncio.run(build_gold([q], WordRetriever(), POLICY, generator_policy(3, 1, None), CORPUS,
                                             generator_share=1.0))
    assert [e.role for e in examples] == ["solver"] and stats.generator_dropped == 1


def test_one_search_questions_teach_the_solver_but_not_the_generator():
    wide = EpisodePolicy(max_searches=2, topk=2, max_obs_tokens=None)  # the question's search finds both paragraphs
    examples, stats = asyncio.run(build_gold([Q_BRIDGE], WordRetriever(), wide, generator_policy(3, 1, None), CORPUS,
                                             generator_share=1.0))
    assert [e.role for e in examples] == ["solver"] and examples[0].trajectory.num_searches == 1
    assert stats.generator_dropped == 1


def test_no_retrieval_server_is_a_clear_error_before_any_work():
    from llm_server import refused_url

    from sage_rl.warmstart import GoldConfig, gold_for_config

    cfg = GoldConfig.from_mapping({"retrieval_url": refused_url(), "limit": 2})
    with pytest.raises(ConnectionError, match="no retrieval server answers at .* start one"):
        asyncio.run(gold_for_config(cfg))


def test_gold_config_rejects_typos():
    from sage_rl.warmstart import GoldConfig

    with pytest.raises(ValueError, match="unknown gold.solver settings"):
        GoldConfig.from_mapping({"solver": {"max_search": 2}})
    with pytest.raises(ValueError, match="generator_share"):
        GoldConfig.from_mapping({"generator_share": 2})


def test_revision_rows_correct_a_wrong_draft_in_the_revision_format():
    policy = generator_policy(max_searches=3, topk=1, max_obs_tokens=None)
    examples, stats = asyncio.run(build_gold([Q_BRIDGE, Q_COMPARE], WordRetriever(), POLICY, policy,
                                             {d: CORPUS[d] for d in CORPUS}, generator_share=1.0,
                                             revision_share=0.5))
    revisions = [e for e in examples if e.role == "revision"]
    assert stats.revision_kept == len(revisions) == 1 and revisions[0].qid == "q1"  # the first half of 2
    t = revisions[0].trajectory
    # The correctness prompt of a feedback round: the draft carries another question's answer of the same
    # type; its trace is the gold generator's (both paragraphs) with that answer, the shown attempt the solver's.
    assert t.prompt.startswith("You wrote a question that a search agent failed to answer correctly in 2 attempts")
    assert 'your answer is "GameFan"' in t.prompt and 'answered "Tulsa"' in t.prompt
    draft, solver_trace = t.prompt.split("<search_agent_trace>")
    assert "<answer> GameFan </answer>" in draft and "Their first show was in Tulsa" in draft
    assert "<answer> Tulsa </answer>" in solver_trace
    # The reply is what `Generator.revise` parses: the question kept, the answer corrected, one step per search.
    candidate = parse_candidate(t.final_text, "search steps", (), protocol.extract_tag(t.final_text, "reason"))
    assert candidate.question == Q_BRIDGE.question and candidate.answer == "Tulsa"
    assert candidate.reason and "Tinted Windows (band)" in candidate.reason
    first, second = candidate.steps
    assert first.startswith(protocol.as_question(Q_BRIDGE.question) + " | Tinted Windows (band) |")
    assert second == "Tinted Windows (band) | Tulsa | Tinted Windows (band)"
    assert [m["role"] for m in revisions[0].sft_row()["messages"]] == ["user", "assistant"]
    # A question with no same-type partner (no wrong answer to draft with) gets none.
    examples, stats = asyncio.run(build_gold([Q_BRIDGE], WordRetriever(), POLICY, policy, CORPUS,
                                             generator_share=1.0, revision_share=1.0))
    assert stats.revision_kept == 0 and {e.role for e in examples} == {"solver", "generator"}
