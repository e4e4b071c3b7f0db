"""Every SAGE decision rule, driven by scripted model outputs through the real per-item loop."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

import pytest
from sage_world import FakeRetriever, World, qa, revision

from sage_rl.generate.assemble import assemble, states_answer
from sage_rl.generate.config import GenerateConfig
from sage_rl.generate.feedback import choose_trace
from sage_rl.generate.loop import Pipeline, process_item
from sage_rl.generate.records import Seed
from sage_rl.generate.report import round_label
from sage_rl.judge import Verdict
from sage_rl.llm import ScriptedChatModel
from sage_rl.search_agent import Trajectory

SEED = Seed(item_id=0, doc_id="seed-doc", title="Alpha", text="Alpha is a town. " * 5, target_steps=3,
            answer_type="number")


def make_cfg(rounds: int = 2, k: int = 4, judge: str = "llm", mode: str = "feedback", budget: int = 20
             ) -> GenerateConfig:
    cfg = GenerateConfig()
    cfg.loop.rounds, cfg.loop.mode = rounds, mode
    cfg.solver.num_rollouts = k
    cfg.judge.kind = judge
    cfg.generator.max_searches = budget
    return cfg


def run_item(world: World, cfg: GenerateConfig, seed: Seed = SEED):
    model = ScriptedChatModel(world)
    pipe = Pipeline(model, model, FakeRetriever(), judge_llm=model)
    return asyncio.run(process_item(seed, cfg, pipe)), model


def test_accept_at_round_zero_when_correct_and_difficult():
    world = World(gen_outputs=lambda t, k: qa("Q0", "42"), solver=lambda q, r: (3 + r, "42"))
    (record, traj), _ = run_item(world, make_cfg())
    assert record.status == "accepted" and record.accepted_round == 0
    [rnd] = record.rounds
    v = rnd.verification
    assert (v.correct, v.difficult, v.min_searches, v.num_correct, v.k, v.avg_at_k) == (True, True, 3, 4, 4, 1.0)
    assert v.searches == (3, 4, 5, 6)
    assert "revision" not in world.prompts  # accepted pairs get no feedback
    # the generator's search was executed and its passages are the pair's evidence, after the seed
    assert rnd.candidate.evidence_doc_ids[0] == "seed-doc" and len(rnd.candidate.evidence_doc_ids) == 4
    assert record.usage["solver"]["calls"] == sum(s + 1 for s in v.searches)
    assert record.usage["judge"]["calls"] == 4 and record.usage["generator"]["calls"] == 2
    assert len(traj["rounds"][0]["solver"]) == 4


def test_too_easy_gets_difficulty_feedback_with_fewest_search_correct_trace_then_accepted():
    # round 0: correct with 1 search (< S=3): too easy. Revision Q1 needs 3 searches: accepted in round 1.
    outputs = {0: qa("Q0", "42"), 1: revision("Q1", "7")}
    plan = {"Q0": lambda r: (1 + r, "42"), "Q1": lambda r: (3, "7")}
    world = World(gen_outputs=lambda t, k: outputs[k], solver=lambda q, r: plan[q](r))
    (record, traj), _ = run_item(world, make_cfg())
    assert record.status == "accepted" and record.accepted_round == 1
    r0, r1 = record.rounds
    assert r0.verification.correct and not r0.verification.difficult and r0.verification.min_searches == 1
    assert r1.kind == "difficulty" and r1.candidate.question == "Q1" and r1.candidate.reason == "too easy"
    [prompt] = world.prompts["revision"]
    assert "only 1 search(es)" in prompt and "at least 3 searches" in prompt
    # T_search = the correct rollout with the fewest searches (rollout 0, one search) ...
    assert traj["rounds"][0]["feedback_trace_index"] == 0
    assert "<think>rollout 0</think>" in prompt and "<think>rollout 1</think>" not in prompt
    # ... and T_gen = the generator's full trace with its retrieved documents
    assert "Passage 0 about Alpha fact 0" in prompt


def test_wrong_pair_gets_correctness_feedback_showing_an_answered_rollout():
    outputs = {0: qa("Q0", "42"), 1: revision("Q1", "9"), 2: revision("Q2", "9")}
    # Q0: no rollout correct; rollouts 0 and 2 give no answer, 1 and 3 answer "13".
    plan = {"Q0": lambda r: (2, "13" if r % 2 else None), "Q1": lambda r: (1, "9"), "Q2": lambda r: (4, "9")}
    world = World(gen_outputs=lambda t, k: outputs[k], solver=lambda q, r: plan[q](r))
    (record, traj), _ = run_item(world, make_cfg())
    kinds = [r.kind for r in record.rounds]
    assert kinds == ["initial", "correctness", "difficulty"]
    assert record.rounds[0].verification.correct is False
    first_prompt = world.prompts["revision"][0]
    assert 'attempt shown below answered "13"' in first_prompt
    assert traj["rounds"][0]["feedback_trace_index"] in (1, 3)
    # round 2's T_gen carries the round-0 trace plus the latest revision
    assert "[your latest revision]" in world.prompts["revision"][1] and "Q1" in world.prompts["revision"][1]
    assert record.status == "accepted" and record.accepted_round == 2


def test_garbled_generator_output_is_counted_and_stops_the_item_without_solving():
    world = World(gen_outputs=lambda t, k: "<think>I forgot the tags</think> The answer is 42.",
                  solver=lambda q, r: pytest.fail("solver must not run on a garbled pair"))
    cfg = make_cfg()
    cfg.loop.retry_garbled = False
    (record, traj), model = run_item(world, cfg)
    assert record.status == "garbled"
    [rnd] = record.rounds
    assert rnd.garbled and rnd.candidate is None and rnd.verification is None
    assert traj["rounds"][0]["generator"]["turns"][-1]["text"].endswith("The answer is 42.")


def test_garbled_revision_ends_the_item_as_garbled_after_a_real_round():
    outputs = {0: qa("Q0", "42"), 1: "<reason>hmm</reason> no tags here"}
    world = World(gen_outputs=lambda t, k: outputs[k], solver=lambda q, r: (1, "42"))
    cfg = make_cfg()
    cfg.loop.retry_garbled = False
    (record, _), _ = run_item(world, cfg)
    assert record.status == "garbled" and [r.garbled for r in record.rounds] == [False, True]


def test_garbled_draft_uses_its_round_and_the_next_round_generates_again_from_the_seed():
    drafts = iter(["no tags at all", qa("Q1", "7")])
    world = World(gen_outputs=lambda t, k: next(drafts), solver=lambda q, r: (3, "7"))
    (record, traj), _ = run_item(world, make_cfg())
    assert [(r.round, r.kind, r.garbled) for r in record.rounds] == [(0, "initial", True), (1, "resample", False)]
    assert record.status == "accepted" and record.accepted_round == 1
    assert len(world.prompts["generator"]) == 4  # two search episodes from the seed (a search, then the output each)
    assert "revision" not in world.prompts  # nothing verified yet, so nothing to give feedback on
    assert [i.id for i in assemble([record], last_round=2)] == ["sage-0-r1"]
    assert traj["rounds"][1]["kind"] == "resample" and len(traj["rounds"][1]["solver"]) == 4
    # the generation report's table names round 1 by what it was: a redraft, not the paper's feedback
    labels = [round_label([record], r, "feedback") for r in (1, 2)]
    assert labels == ["+1 feedback (1 redraft)", "+2 feedback"]


def test_garbled_revision_is_asked_again_on_the_latest_verified_pair():
    revisions = iter(["<reason>hmm</reason> no tags here", revision("Q2", "42")])
    world = World(gen_outputs=lambda t, k: qa("Q0", "42") if k == 0 else next(revisions),
                  solver=lambda q, r: {"Q0": (1, "42"), "Q2": (3, "42")}[q])
    (record, _), _ = run_item(world, make_cfg())
    assert [(r.kind, r.garbled) for r in record.rounds] == [("initial", False), ("difficulty", True),
                                                            ("difficulty", False)]
    first, second = world.prompts["revision"]
    assert first == second  # the same feedback on round 0's pair, not on the garbled output
    assert record.status == "accepted" and record.accepted_round == 2


def test_an_item_garbled_in_every_round_is_garbled_and_never_solved():
    world = World(gen_outputs=lambda t, k: "still no tags",
                  solver=lambda q, r: pytest.fail("solver must not run on a garbled pair"))
    (record, _), _ = run_item(world, make_cfg(rounds=2))
    assert record.status == "garbled" and [r.garbled for r in record.rounds] == [True, True, True]
    assert [r.kind for r in record.rounds] == ["initial", "resample", "resample"]
    assert record.usage["generator"]["calls"] == 6


def test_budget_exhausted_generator_is_told_and_called_once_more():
    # The generator keeps searching forever; budget 2: two searches run, the third is refused with the
    # forcing message, and the next (last) call's output is parsed.
    calls = {"n": 0}

    def gen(title: str, k: int) -> str:
        return qa("Q0", "42")

    world = World(gen_outputs=gen, solver=lambda q, r: (3, "42"), gen_searches=99)
    original = world.__call__

    def responder(messages):
        forced = "used up my whole search budget" in messages[-1]["content"]
        if messages[0]["content"].startswith("You write") and forced:
            calls["n"] += 1
            return qa("Q0", "42")
        return original(messages)

    model = ScriptedChatModel(responder)
    retriever = FakeRetriever()
    (record, traj) = asyncio.run(process_item(SEED, make_cfg(budget=2), Pipeline(model, model, retriever, model)))
    assert calls["n"] == 1
    gen_traj = traj["rounds"][0]["generator"]
    assert gen_traj["num_searches"] == 2 and gen_traj["budget_exhausted"] is True
    assert [t["kind"] for t in gen_traj["turns"]] == ["search", "search", "search", "output"]
    assert record.rounds[0].budget_exhausted and record.status == "accepted"


def test_judge_garbled_reply_counts_as_incorrect_and_is_reported():
    world = World(gen_outputs=lambda t, k: qa("Q0", "42"), solver=lambda q, r: (3, "42"),
                  judge_reply=lambda response, gold: "looks fine to me")
    (record, _), _ = run_item(world, make_cfg(rounds=0))
    v = record.rounds[0].verification
    assert v.correct is False and v.judge_garbled == 4 and record.status == "rejected"


def test_resample_mode_regenerates_from_scratch_without_traces():
    outputs = iter([qa("Q0", "42"), qa("Q1", "42")])
    world = World(gen_outputs=lambda t, k: next(outputs), solver=lambda q, r: {"Q0": (1, "42"), "Q1": (3, "42")}[q])
    (record, traj), _ = run_item(world, make_cfg(mode="resample"))
    assert [r.kind for r in record.rounds] == ["initial", "resample"]
    assert "revision" not in world.prompts and len(world.prompts["generator"]) == 4  # 2 generations x 2 calls
    assert traj["rounds"][1]["generator"]["num_searches"] == 1  # same budget, searches again
    assert record.status == "accepted" and record.accepted_round == 1


@pytest.mark.parametrize("reject", [True, False])
def test_a_pair_that_states_its_answer_is_not_difficult_and_gets_difficulty_feedback_with_no_search(reject):
    # round 0 states its answer ("7" in the question) and the solver copies it after the S=3 searches it makes anyway
    outputs = {0: qa("Is the answer 7 or 8?", "7"), 1: revision("Q1", "7"), 2: revision("Q2", "7")}
    world = World(gen_outputs=lambda t, k: outputs[k], solver=lambda q, r: (3, "7"))
    cfg = make_cfg()
    cfg.loop.reject_stated_answers = reject
    (record, _), _ = run_item(world, cfg)
    r0 = record.rounds[0].verification
    if not reject:  # the paper's rules: correct with |S*| = 3 >= S, accepted as it is
        assert record.accepted_round == 0 and not r0.shortcut and r0.difficult
        return
    assert r0.correct and r0.shortcut and not r0.difficult and r0.min_searches == 3  # the rollouts, as they were
    assert record.status == "accepted" and record.accepted_round == 1 and record.rounds[1].kind == "difficulty"
    [prompt] = world.prompts["revision"]
    assert "answered it correctly with only 0 search(es)" in prompt
    # the last round's relaxed filter does not keep it either
    assert [i.question for i in assemble([replace(record, rounds=record.rounds[:1])], last_round=0)] == []


def test_last_round_relaxed_filter_dedupe_and_min_steps_in_assembly():
    # item 0: too easy in every round -> only the last round's correct pair is kept (relaxed filter)
    # item 1: writes the same question as item 0 -> deduped (lower item id wins)
    # item 2: correct but |S*| = 1 in the last round -> dropped by min_searches=2
    # item 3: wrong in every round -> nothing
    def solver(q, r):
        return {"Q0-last": (2, "1"), "Q2-last": (1, "1"), "Q3": (2, "wrong")}.get(q, (2, "1"))

    def outputs_for(i):
        return {0: qa(f"Q{i}", "1"), 1: revision(f"Q{i}", "1"), 2: revision(f"Q{i}-last" if i != 3 else "Q3", "1")}

    records = []
    for i, title in enumerate(["T0", "T1", "T2", "T3"]):
        q = 0 if i == 1 else i
        world = World(gen_outputs=lambda t, k, q=q: outputs_for(q)[k], solver=solver)
        seed = Seed(i, f"doc{i}", title, "text " * 30, target_steps=5, answer_type="entity")
        (record, _), _ = run_item(world, make_cfg(rounds=2, judge="em"), seed)
        records.append(record)
    assert [r.status for r in records] == ["rejected"] * 4
    # strict filter in rounds 0-1 keeps nothing; the relaxed last round keeps correct pairs
    items = assemble(records, last_round=2, min_searches=2)
    assert [(i.item_id, i.question, i.round, i.difficult) for i in items] == [(0, "Q0-last", 2, False)]
    assert len(assemble(records, last_round=2, min_searches=1)) == 2  # item 2 back without the min-steps rule


def test_feedback_trace_choice_prefers_fewest_search_correct_then_answered():
    t = [Trajectory("p", (), a, n) for n, a in [(5, "x"), (2, "y"), (3, None), (1, "z")]]
    v = [Verdict(ok, float(ok), "em") for ok in (True, True, False, False)]
    assert choose_trace(t, v, random.Random(0)) == 1
    wrong = [Verdict(False, 0.0, "em")] * 4
    picks = {choose_trace(t, wrong, random.Random(s)) for s in range(30)}
    assert picks == {0, 1, 3}  # never the rollout without an answer


@pytest.mark.parametrize(("question", "answer", "stated"), [
    ("What ethnic group is Azərbaycanlılar?", "Azərbaycanlılar", True),  # a 135M generator's pair (README)
    ("Mustafa Kemal Atatürk (19 May 1881 – 10 November 1938)", "Mustafa Kemal Atatürk", True),
    ("Which is older, the Tulsa Zoo or the Oklahoma City Zoo?", "The Tulsa Zoo", True),  # comparisons count too
    ("Which city is the zoo in?", "Tulsa", False),
    ("Who founded Tulsa?", "Tulsa, Oklahoma", False),  # the whole answer, not a word of it
    ("How many towns are in Tulsan County?", "Tulsa", False),  # whole words only
])
def test_a_pair_states_its_answer_when_the_answer_is_a_whole_word_span_of_the_question(question, answer, stated):
    assert states_answer(question, answer) is stated
