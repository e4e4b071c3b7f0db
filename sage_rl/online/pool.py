"""The question pool: every accepted SAGE pair of an online run, and how the live policy does on each.

Two append-only files in the pool folder, one JSON line per event, durable before the call returns
(`sage_rl.files`, the same guarantees as `sage-rl generate`'s record store):
- `questions.jsonl`: one `PoolQuestion` per accepted pair, with its provenance;
- `outcomes.jsonl`: one `Outcome` per question per training step that served it (the policy group's
  correctness and search counts).
Everything live (times served, pass rate, fewest correct searches, retirement, the difficulty controller)
is derived from these two files, so reopening the folder after a crash rebuilds it exactly: a torn last
line is dropped, a question id or question text seen before is ignored (exactly once), an outcome for a
(question, step) pair already recorded is ignored, and `rewind(step)` forgets outcomes of steps after the
checkpoint a resumed trainer restarts from, so served counters match the trainer's state.

Drawing prefers what teaches the policy: fresh questions first (oldest first), then questions whose pass
rate is strictly between 0 and 1. A question served `retire_after` times or more that the policy always or
never solved is retired (kept on disk, labelled, never drawn again).

Pure Python, no Ray and no verl: `sage_rl.online.service` runs one per job as a named Ray actor.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

from sage_rl.files import JsonlAppender, atomic_write_jsonl, folder_lock, read_complete_lines
from sage_rl.online.controller import ControllerConfig, TargetController
from sage_rl.qa_match import normalize_answer

State = Literal["fresh", "informative", "solved", "unsolved"]


@dataclass(frozen=True)
class PoolQuestion:
    """An accepted QA pair and where it came from."""

    qid: str
    question: str
    answers: tuple[str, ...]
    target_steps: int  # the S the generator was asked for
    answer_type: str
    seed_doc_id: str
    round: int  # the SAGE round that was accepted
    pass_at_k: float  # share of the verifying solver's K rollouts judged correct (Avg@K)
    min_searches: int  # |S*|: the fewest searches among the verifying solver's correct rollouts
    generator_model: str = ""
    solver_model: str = ""
    judge_model: str = ""
    created_at: float = field(default_factory=time.time)
    created_step: int = 0  # the last training step the pool had heard of when the pair arrived (set by the pool)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PoolQuestion:
        return cls(**(d | {"answers": tuple(d["answers"])}))


@dataclass(frozen=True)
class Outcome:
    """How the policy's rollout group did on one question in one training step."""

    qid: str
    step: int
    rollouts: int
    correct: int
    searches: tuple[int, ...]  # per rollout
    correct_searches: tuple[int, ...] = ()  # of the correct rollouts

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Outcome:
        return cls(**(d | {"searches": tuple(d["searches"]), "correct_searches": tuple(d["correct_searches"])}))


def outcomes_from_trajectories(rows: list[dict], step: int, correct_at: float = 0.5) -> list[Outcome]:
    """Group one training step's trajectories by question into `Outcome`s.

    Each row is a trajectory's fields as the trainer sees them: `qid`, `num_searches` and the reward's
    `reward_extra_info` (`acc` >= `correct_at` counts as correct). Rows without a `qid` are skipped.

    >>> rows = [{"qid": "a", "num_searches": 2, "reward_extra_info": {"acc": 1.0}},
    ...         {"qid": "a", "num_searches": 0, "reward_extra_info": {"acc": 0.0}}]
    >>> outcomes_from_trajectories(rows, step=3)
    [Outcome(qid='a', step=3, rollouts=2, correct=1, searches=(2, 0), correct_searches=(2,))]
    """
    groups: dict[str, list[tuple[int, bool]]] = defaultdict(list)
    for row in rows:
        if row.get("qid") is None:
            continue
        acc = float((row.get("reward_extra_info") or {}).get("acc", 0.0) or 0.0)
        groups[str(row["qid"])].append((int(row.get("num_searches", 0) or 0), acc >= correct_at))
    return [Outcome(qid, step, len(g), sum(ok for _, ok in g), tuple(n for n, _ in g), tuple(n for n, ok in g if ok))
            for qid, g in groups.items()]


@dataclass
class QuestionStats:
    """The live statistics of one question under the policy."""

    served: int = 0
    rollouts: int = 0
    correct: int = 0
    searches: int = 0
    fewest_correct_searches: int | None = None
    first_step: int | None = None
    last_step: int | None = None

    @property
    def pass_rate(self) -> float | None:
        return self.correct / self.rollouts if self.rollouts else None


@dataclass(frozen=True)
class PoolConfig:
    """The `online.pool` block of an online recipe."""

    folder: str = "outputs/online/pool"  # keep it across restarts: it is the run's question bank
    retire_after: int = 2  # servings after which an always- or never-solved question is retired
    lock_wait_s: float = 30.0  # how long opening waits for another process holding the pool folder
    controller: ControllerConfig = field(default_factory=ControllerConfig)

    def __post_init__(self) -> None:
        if self.retire_after < 1:
            raise ValueError("online.pool.retire_after must be >= 1")


class QuestionPool:
    """The pool folder, opened (and locked) for one job. Use as a context manager or call `close()`."""

    def __init__(self, config: PoolConfig) -> None:
        self.config = config
        self.folder = Path(config.folder)
        self._stack = contextlib.ExitStack()
        # A resumed job may start while the killed job's pool actor is still exiting: give it a moment.
        self._stack.enter_context(folder_lock(self.folder, "online pool", wait_s=config.lock_wait_s))
        self.questions: dict[str, PoolQuestion] = {}
        self._texts: set[str] = set()
        self._outcomes: list[Outcome] = []
        self._pending: set[str] = set()  # drawn, outcome not reported yet
        self._produced: dict[str, dict[str, int]] = {}  # producer -> finished items by status
        for row in read_complete_lines(self.folder / "questions.jsonl"):
            self._remember(PoolQuestion.from_dict(row))
        self._questions_file = JsonlAppender(self.folder / "questions.jsonl")
        self._outcomes_file: JsonlAppender | None = None
        self._load_outcomes([Outcome.from_dict(r) for r in read_complete_lines(self.folder / "outcomes.jsonl")])

    def __enter__(self) -> QuestionPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._questions_file.close()
        if self._outcomes_file is not None:
            self._outcomes_file.close()
        self._stack.close()

    # -- questions ---------------------------------------------------------------------------------------
    def _remember(self, q: PoolQuestion) -> bool:
        text = normalize_answer(q.question)
        if q.qid in self.questions or text in self._texts:
            return False
        self.questions[q.qid] = q
        self._texts.add(text)
        return True

    def add(self, question: PoolQuestion) -> bool:
        """Durably add an accepted pair; False (and nothing written) if its id or question text is known.
        Its `created_step` becomes the last training step the pool has heard of (0 before training)."""
        question = replace(question, created_step=self.last_step)
        if not self._remember(question):
            return False
        self._questions_file.append(question.to_dict())
        return True

    # -- outcomes ----------------------------------------------------------------------------------------
    def _load_outcomes(self, outcomes: list[Outcome]) -> None:
        """Rebuild statistics and the controller from the outcome history (first record per (qid, step))."""
        self.stats: dict[str, QuestionStats] = defaultdict(QuestionStats)
        self.controller = TargetController(self.config.controller)
        self._seen: set[tuple[str, int]] = set()
        self._outcomes = []
        self.last_step = 0
        self._last_fresh_share = 0.0  # of the questions the last reported step served, the share served fresh
        by_step: dict[int, list[Outcome]] = defaultdict(list)
        for o in outcomes:
            if (o.qid, o.step) not in self._seen and o.qid in self.questions:
                self._seen.add((o.qid, o.step))
                by_step[o.step].append(o)
        for step in sorted(by_step):
            self._apply(step, by_step[step])
        if self._outcomes_file is not None:
            self._outcomes_file.close()
        self._outcomes_file = JsonlAppender(self.folder / "outcomes.jsonl")

    def _apply(self, step: int, outcomes: list[Outcome]) -> None:
        fresh = [o for o in outcomes if self.stats[o.qid].served == 0]
        for o in outcomes:
            s = self.stats[o.qid]
            s.served += 1
            s.rollouts += o.rollouts
            s.correct += o.correct
            s.searches += sum(o.searches)
            if o.correct_searches:
                best = min(o.correct_searches)
                s.fewest_correct_searches = best if s.fewest_correct_searches is None else min(
                    s.fewest_correct_searches, best)
            s.first_step = step if s.first_step is None else s.first_step
            s.last_step = step
            self._pending.discard(o.qid)
        self._outcomes.extend(outcomes)
        self.last_step = max(self.last_step, step)
        self._last_fresh_share = len(fresh) / len(outcomes) if outcomes else 0.0
        self.controller.update(step, sum(o.correct for o in fresh), sum(o.rollouts for o in fresh), len(fresh))

    def report(self, step: int, outcomes: list[Outcome]) -> int:
        """Durably record one training step's outcomes (call once per step, with all of them); returns how
        many were new. Repeated (qid, step) pairs and unknown question ids are ignored."""
        new = [o for o in outcomes if o.step == step and (o.qid, o.step) not in self._seen and o.qid in self.questions]
        if not new:
            return 0
        assert self._outcomes_file is not None
        for o in new:
            self._outcomes_file.append(o.to_dict())
            self._seen.add((o.qid, o.step))
        self._apply(step, new)
        return len(new)

    def rewind(self, step: int) -> int:
        """Forget the outcomes of training steps after `step` (a resumed trainer redoes them); returns how
        many were dropped. Questions are never dropped."""
        kept = [o for o in self._outcomes if o.step <= step]
        dropped = len(self._outcomes) - len(kept)
        if dropped:
            atomic_write_jsonl(self.folder / "outcomes.jsonl", (o.to_dict() for o in kept))
        self._pending.clear()
        self._load_outcomes(kept)
        return dropped

    # -- drawing -----------------------------------------------------------------------------------------
    def state(self, qid: str) -> State:
        s = self.stats.get(qid)
        if s is None or s.served == 0:
            return "fresh"
        if s.served >= self.config.retire_after and s.pass_rate in (0.0, 1.0):
            return "solved" if s.pass_rate == 1.0 else "unsolved"
        return "informative"

    def draw(self, n: int, step: int) -> list[PoolQuestion]:
        """Up to `n` questions for a training batch: fresh ones first (oldest first), then informative ones
        (random, reproducible per step). Drawn questions are not drawn again until their outcome arrives."""
        available = [q for q in self.questions.values() if q.qid not in self._pending]
        fresh = [q for q in available if self.state(q.qid) == "fresh"]
        informative = [q for q in available if self.state(q.qid) == "informative"]
        random.Random(f"sage-pool-draw:{step}").shuffle(informative)
        chosen = (fresh + informative)[:n]
        self._pending.update(q.qid for q in chosen)
        return chosen

    def unserved(self) -> int:
        """Fresh questions waiting to be drawn (the producer's backpressure signal)."""
        return sum(1 for q in self.questions if q not in self._pending and self.state(q) == "fresh")

    def draw_target(self, key: str) -> int:
        """The target S for the seed named `key`, from the controller's current distribution (the same key
        and distribution give the same S)."""
        return self.controller.draw(random.Random(f"sage-target:{key}"))

    def fewest_correct(self, qid: str) -> int | None:
        """The fewest searches among the policy's correct rollouts on `qid` so far (None: never solved)."""
        stats = self.stats.get(qid)
        return stats.fewest_correct_searches if stats is not None else None

    def note_items(self, producer: str, counts: dict[str, int]) -> None:
        """A producer's finished items by status (accepted, rejected, garbled, failed), for the metrics."""
        self._produced[producer] = dict(counts)

    # -- reporting ---------------------------------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        """Pool and controller metrics for the trainer's step log (`pool/*`)."""
        states = [self.state(q) for q in self.questions]
        out = {"pool/size": float(len(self.questions)), "pool/controller_centre": self.controller.centre,
               "pool/served_fresh_share": self._last_fresh_share}
        for name in ("fresh", "informative", "solved", "unsolved"):
            out[f"pool/{name}"] = float(states.count(name))
        produced: dict[str, int] = defaultdict(int)
        for counts in self._produced.values():
            for status, n in counts.items():
                produced[status] += n
        if total := sum(produced.values()):
            out["pool/items_done"] = float(total)
            out["pool/acceptance_rate"] = produced["accepted"] / total
            out["pool/items_failed"] = float(produced["failed"])
        for s, p in self.controller.distribution().items():
            out[f"pool/target_s/p{s}"] = p
        per_s: dict[int, list[QuestionStats]] = defaultdict(list)
        for qid, q in self.questions.items():
            if self.stats.get(qid) is not None and self.stats[qid].rollouts:
                per_s[q.target_steps].append(self.stats[qid])
        for s, group in sorted(per_s.items()):
            rollouts = sum(g.rollouts for g in group)
            out[f"pool/pass_rate/s{s}"] = sum(g.correct for g in group) / rollouts
            out[f"pool/searches/s{s}"] = sum(g.searches for g in group) / rollouts
        return out
