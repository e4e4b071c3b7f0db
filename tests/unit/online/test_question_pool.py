"""The question pool: exactly-once questions and outcomes across restarts, rewind on resume, what is drawn,
retirement, and the controller state rebuilt from the files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from sage_rl.online.controller import ControllerConfig
from sage_rl.online.pool import Outcome, PoolConfig, PoolQuestion, QuestionPool


def _q(i: int, s: int = 3, text: str | None = None) -> PoolQuestion:
    return PoolQuestion(qid=f"p0-{i}", question=text or f"Which river flows past town {i}?", answers=(f"r{i}",),
                        target_steps=s, answer_type="entity", seed_doc_id=f"d{i}", round=0, pass_at_k=0.5,
                        min_searches=s, generator_model="gen", solver_model="sol", judge_model="judge",
                        created_at=1.8e9 + i)


def _o(q: PoolQuestion, step: int, correct: int, rollouts: int = 4, searches: int = 2) -> Outcome:
    return Outcome(q.qid, step, rollouts, correct, (searches,) * rollouts, (searches,) * correct)


def _cfg(tmp_path, **kw) -> PoolConfig:
    return PoolConfig(folder=str(tmp_path / "pool"), **kw)


def test_questions_are_added_exactly_once_and_survive_a_restart(tmp_path):
    with QuestionPool(_cfg(tmp_path)) as pool:
        assert pool.add(_q(1)) and pool.add(_q(2))
        assert not pool.add(_q(1))  # same id (a producer redoing an item after a crash)
        assert not pool.add(_q(3, text="which river flows past town 1"))  # same question, normalised
    with QuestionPool(_cfg(tmp_path)) as pool:
        assert sorted(pool.questions) == ["p0-1", "p0-2"]
        assert pool.questions["p0-1"] == _q(1)  # provenance round-trips (created before training: step 0)
        assert not pool.add(_q(2))
    assert len((tmp_path / "pool" / "questions.jsonl").read_text().splitlines()) == 2


def test_a_torn_last_line_is_dropped_and_appending_continues(tmp_path):
    with QuestionPool(_cfg(tmp_path)) as pool:
        pool.add(_q(1))
    with open(tmp_path / "pool" / "questions.jsonl", "a") as f:
        f.write('{"qid": "p0-2", "quest')  # a crash mid-write
    with QuestionPool(_cfg(tmp_path)) as pool:
        assert list(pool.questions) == ["p0-1"] and pool.add(_q(2))
    with QuestionPool(_cfg(tmp_path)) as pool:
        assert sorted(pool.questions) == ["p0-1", "p0-2"]


def test_a_second_job_on_the_same_pool_is_refused(tmp_path):
    started = time.monotonic()
    with QuestionPool(_cfg(tmp_path)), pytest.raises(RuntimeError, match="another online pool run"):
        QuestionPool(_cfg(tmp_path, lock_wait_s=0.5))
    assert time.monotonic() - started >= 0.5


def test_a_restarted_job_waits_for_its_predecessor_to_let_go_of_the_pool(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from sage_rl.online.pool import PoolConfig, QuestionPool
        pool = QuestionPool(PoolConfig(folder={str(tmp_path / "pool")!r}))
        print("holding", flush=True)
        time.sleep(1.0)
    """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    with QuestionPool(_cfg(tmp_path, lock_wait_s=30)) as pool:  # opens once the holder exits
        assert pool.questions == {} and holder.poll() is not None


def test_killed_mid_run_the_pool_reopens_with_every_durable_event(tmp_path):
    """SIGKILL of a process that adds questions and reports outcomes: what returned is there, once."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from test_question_pool import _cfg, _o, _q
        from pathlib import Path
        from sage_rl.online.pool import QuestionPool
        pool = QuestionPool(_cfg(Path({str(tmp_path)!r})))
        for i in range(5):
            pool.add(_q(i))
        pool.report(1, [_o(_q(0), 1, 2), _o(_q(1), 1, 4)])
        print("durable", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -9 and "durable" in proc.stdout, proc.stderr
    with QuestionPool(_cfg(tmp_path)) as pool:  # the lock died with the process
        assert len(pool.questions) == 5
        assert pool.stats["p0-0"].served == 1 and pool.stats["p0-1"].correct == 4


def test_outcomes_are_recorded_once_per_question_and_step(tmp_path):
    with QuestionPool(_cfg(tmp_path)) as pool:
        q = _q(1)
        pool.add(q)
        assert pool.report(1, [_o(q, 1, 1)]) == 1
        assert pool.report(1, [_o(q, 1, 3)]) == 0  # a retried report of the same step
        assert pool.report(2, [_o(_q(9), 2, 1)]) == 0  # unknown question
        pool.report(2, [_o(q, 2, 3, searches=5)])
        s = pool.stats[q.qid]
        assert (s.served, s.rollouts, s.correct, s.first_step, s.last_step) == (2, 8, 4, 1, 2)
        assert s.pass_rate == 0.5 and s.fewest_correct_searches == 2
    with QuestionPool(_cfg(tmp_path)) as pool:
        assert pool.stats[q.qid].served == 2 and pool.stats[q.qid].correct == 4


def test_rewind_forgets_steps_after_the_checkpoint_and_keeps_questions(tmp_path):
    with QuestionPool(_cfg(tmp_path)) as pool:
        qs = [_q(i) for i in range(3)]
        for q in qs:
            pool.add(q)
        pool.report(1, [_o(qs[0], 1, 4)])
        centre_after_1 = pool.controller.centre
        pool.report(2, [_o(qs[1], 2, 4)])  # fresh and solved: the controller moves again
        pool.report(3, [_o(qs[0], 3, 4)])
        assert pool.controller.centre > centre_after_1
        assert pool.rewind(1) == 2
        assert pool.stats["p0-0"].served == 1 and pool.stats["p0-1"].served == 0
        assert pool.controller.centre == centre_after_1
    with QuestionPool(_cfg(tmp_path)) as pool:  # the rewind is durable
        assert len(pool.questions) == 3 and pool.stats["p0-0"].served == 1 and pool.stats["p0-1"].served == 0
        assert pool.controller.centre == centre_after_1
        assert pool.report(2, [_o(qs[2], 2, 1)]) == 1  # the redone step records afresh


def test_draw_prefers_fresh_then_informative_and_never_retired(tmp_path):
    with QuestionPool(_cfg(tmp_path, retire_after=2)) as pool:
        qs = [_q(i) for i in range(6)]
        for q in qs:
            pool.add(q)
        # q0 always solved, q1 never solved (twice each: retired), q2 half solved (informative).
        for step in (1, 2):
            pool.report(step, [_o(qs[0], step, 4), _o(qs[1], step, 0), _o(qs[2], step, 2)])
        assert [pool.state(q.qid) for q in qs[:4]] == ["solved", "unsolved", "informative", "fresh"]
        batch = pool.draw(4, step=3)
        assert [q.qid for q in batch] == ["p0-3", "p0-4", "p0-5", "p0-2"]  # fresh (oldest first), then informative
        assert pool.draw(4, step=3) == []  # drawn questions wait for their outcome
        assert pool.unserved() == 0
        pool.report(3, [_o(q, 3, 2) for q in batch])
        assert pool.metrics()["pool/served_fresh_share"] == 3 / 4  # p0-3..5 fresh, p0-2 served before
        assert {q.qid for q in pool.draw(10, step=4)} == {"p0-2", "p0-3", "p0-4", "p0-5"}
        m = pool.metrics()
    assert (m["pool/size"], m["pool/solved"], m["pool/unsolved"], m["pool/informative"]) == (6, 1, 1, 4)
    # steps 1-2: q0 4+4, q1 0+0, q2 2+2 of 8 each; step 3: four questions 2 of 4 each
    assert m["pool/pass_rate/s3"] == pytest.approx((8 + 0 + 4 + 4 * 2) / (3 * 8 + 4 * 4))


def test_a_question_records_the_training_step_it_arrived_at(tmp_path):
    with QuestionPool(_cfg(tmp_path)) as pool:
        pool.add(_q(0))
        pool.report(4, [_o(_q(0), 4, 1)])
        pool.add(_q(1))
        assert (pool.questions["p0-0"].created_step, pool.questions["p0-1"].created_step) == (0, 4)
    with QuestionPool(_cfg(tmp_path)) as pool:
        assert pool.questions["p0-1"].created_step == 4 and pool.last_step == 4


def test_a_question_served_once_is_not_retired_yet(tmp_path):
    with QuestionPool(_cfg(tmp_path, retire_after=2)) as pool:
        pool.add(_q(0))
        pool.report(1, [_o(_q(0), 1, 4)])
        assert pool.state("p0-0") == "informative" and [q.qid for q in pool.draw(1, 2)] == ["p0-0"]


def test_the_controller_moves_on_fresh_questions_only_and_is_rebuilt_on_reopen(tmp_path):
    cfg = _cfg(tmp_path, controller=ControllerConfig(min_steps=2, max_steps=5, band=(0.2, 0.8), step_size=0.5))
    with QuestionPool(cfg) as pool:
        qs = [_q(i) for i in range(4)]
        for q in qs:
            pool.add(q)
        assert pool.controller.centre == 3.5
        pool.report(1, [_o(qs[0], 1, 4), _o(qs[1], 1, 4)])  # fresh and all solved: too easy
        assert pool.controller.centre == 4.0
        pool.report(2, [_o(qs[0], 2, 0)])  # not fresh: ignored by the controller even though it failed
        assert pool.controller.centre == 4.0
        pool.report(3, [_o(qs[2], 3, 0), _o(qs[3], 3, 1)])  # fresh, 1/8: too hard
        assert pool.controller.centre == 3.5
        dist = pool.controller.distribution()
    with QuestionPool(cfg) as pool:
        assert pool.controller.centre == 3.5 and pool.controller.distribution() == dist
        targets = [pool.draw_target(f"p0-{i}") for i in range(200)]
        assert set(targets) <= {2, 3, 4, 5} and len(set(targets)) > 1
        assert targets == [pool.draw_target(f"p0-{i}") for i in range(200)]  # a redone item gets the same S
