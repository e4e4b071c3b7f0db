"""Typed records of the SAGE loop, and their JSON round trip (the on-disk `records.jsonl` schema).

One `ItemRecord` per seed: everything decided about it (each round's QA candidate and verification
summary), its status and its LLM usage. Trajectories are large and live in a side file keyed by item id.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

Status = Literal["accepted", "rejected", "garbled", "failed"]
RoundKind = Literal["initial", "difficulty", "correctness", "resample"]


@dataclass(frozen=True)
class Seed:
    """What round 0 starts from: a corpus passage, a target number of searches S and an answer type."""

    item_id: int
    doc_id: str
    title: str
    text: str
    target_steps: int
    answer_type: str


@dataclass(frozen=True)
class QACandidate:
    """A generated QA pair. `evidence_doc_ids`: the seed plus every passage the agents retrieved for it."""

    question: str
    answer: str
    steps: tuple[str, ...] = ()
    evidence_doc_ids: tuple[str, ...] = ()
    reason: str | None = None


@dataclass(frozen=True)
class Verification:
    """K solver rollouts, judged. `correct` is pass@K; `min_searches` is |S*|, over correct rollouts only.
    `shortcut`: the question states its answer (`loop.reject_stated_answers`), so the pair is not `difficult`
    whatever the rollouts searched."""

    k: int
    num_correct: int
    correct: bool
    difficult: bool
    avg_at_k: float
    min_searches: int | None
    searches: tuple[int, ...]
    answers: tuple[str | None, ...]
    judge_garbled: int = 0
    shortcut: bool = False


@dataclass(frozen=True)
class RoundRecord:
    """One round of one item: how the candidate was made, and its verification (None if garbled)."""

    round: int
    kind: RoundKind
    candidate: QACandidate | None
    verification: Verification | None
    budget_exhausted: bool = False

    @property
    def garbled(self) -> bool:
        return self.candidate is None

    @property
    def passed(self) -> bool:
        v = self.verification
        return v is not None and v.correct and v.difficult


@dataclass(frozen=True)
class ItemRecord:
    """Everything decided about one seed. Written once, when the item finishes."""

    item_id: int
    seed: Seed
    status: Status
    rounds: tuple[RoundRecord, ...] = ()
    accepted_round: int | None = None
    usage: dict[str, dict[str, int]] = field(default_factory=dict)
    error: str | None = None
    attempts: int = 1
    elapsed_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ItemRecord:
        rounds = []
        for r in d.get("rounds", ()):
            c, v = r.get("candidate"), r.get("verification")
            candidate = None
            if c is not None:
                candidate = QACandidate(
                    c["question"], c["answer"], tuple(c.get("steps", ())), tuple(c.get("evidence_doc_ids", ())),
                    c.get("reason"),
                )
            verification = None
            if v is not None:
                verification = Verification(
                    **(v | {"searches": tuple(v["searches"]), "answers": tuple(v["answers"])})
                )
            rounds.append(RoundRecord(r["round"], r["kind"], candidate, verification, r.get("budget_exhausted", False)))
        return cls(
            item_id=d["item_id"],
            seed=Seed(**d["seed"]),
            status=d["status"],
            rounds=tuple(rounds),
            accepted_round=d.get("accepted_round"),
            usage=d.get("usage", {}),
            error=d.get("error"),
            attempts=d.get("attempts", 1),
            elapsed_s=d.get("elapsed_s", 0.0),
        )
