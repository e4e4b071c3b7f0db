"""Final dataset assembly (the authors' released code, `process_generated_data.py`) and the output files.

Rules, in order:
1. rounds before the last: keep a pair only if correct AND difficult (strict filter);
2. the last round (round R): keep every correct pair (relaxed filter: too-easy pairs stay);
3. dedupe by question text (SQuAD-normalised; the lowest item id wins, so reruns are stable);
4. drop pairs whose fewest searches among correct rollouts is below `min_searches` (default 2);
and ours: with `loop.reject_stated_answers`, no pair whose question states its answer (`states_answer`).

Outputs: `qa.jsonl` + `qa.parquet` (one row per pair with its metadata) and `verl.parquet` (verl's
RLHFDataset rows: Search-R1-style search prompt as chat messages, `reward_model.ground_truth.target`,
metadata in `extra_info`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from sage_rl.datasets import verl_row, write_verl_parquet
from sage_rl.files import atomic_write, atomic_write_jsonl
from sage_rl.generate.records import ItemRecord
from sage_rl.protocol import SEARCH_PROMPT
from sage_rl.qa_match import cover_exact_match, normalize_answer


@dataclass(frozen=True)
class QAItem:
    """One assembled training pair with its provenance."""

    id: str
    question: str
    answer: str
    golden_answers: tuple[str, ...]
    target_steps: int
    min_searches: int
    pass_at_k: bool
    num_correct: int
    k: int
    avg_at_k: float
    difficult: bool
    round: int
    answer_type: str
    seed_doc_id: str
    evidence_doc_ids: tuple[str, ...]
    steps: tuple[str, ...]
    item_id: int


def states_answer(question: str, answer: str) -> bool:
    """Whether a pair's question states its answer: the answer is a whole-word span of it (SQuAD-normalised), as
    the cover-EM judge would score the question itself. The paper's rules do not check it, and a solver that copies
    the answer from the question is correct: small generators write such pairs ("What ethnic group is
    Azərbaycanlılar?" -> "Azərbaycanlılar"); a comparison question ("A or B?") may do so legitimately. The reports
    count them; `loop.reject_stated_answers` makes them not difficult.

    >>> states_answer("What ethnic group is Azərbaycanlılar?", "Azərbaycanlılar"), states_answer("Who wrote it?", "Ann")
    (True, False)
    """
    return bool(cover_exact_match(question, [answer]))


def assemble(records: Iterable[ItemRecord], last_round: int, min_searches: int = 2) -> list[QAItem]:
    """Apply the assembly rules to finished item records (any order)."""
    kept: list[QAItem] = []
    for rec in sorted(records, key=lambda r: r.item_id):
        for rnd in rec.rounds:
            v, c = rnd.verification, rnd.candidate
            if v is None or c is None or not v.correct or v.shortcut:
                continue
            if rnd.round < last_round and not v.difficult:
                continue
            assert v.min_searches is not None  # correct implies at least one correct rollout
            kept.append(QAItem(
                id=f"sage-{rec.item_id}-r{rnd.round}", question=c.question, answer=c.answer,
                golden_answers=(c.answer,), target_steps=rec.seed.target_steps, min_searches=v.min_searches,
                pass_at_k=v.correct, num_correct=v.num_correct, k=v.k, avg_at_k=v.avg_at_k, difficult=v.difficult,
                round=rnd.round, answer_type=rec.seed.answer_type, seed_doc_id=rec.seed.doc_id,
                evidence_doc_ids=c.evidence_doc_ids, steps=c.steps, item_id=rec.item_id,
            ))
    seen: set[str] = set()
    out = []
    for item in kept:
        key = normalize_answer(item.question)
        if key in seen:
            continue
        seen.add(key)
        if item.min_searches >= min_searches:
            out.append(item)
    return out


def _row(item: QAItem) -> dict:
    d = asdict(item)
    return d | {k: list(v) for k, v in d.items() if isinstance(v, tuple)}


def write_outputs(items: list[QAItem], out_dir: Path, data_source: str = "sage") -> dict[str, Path]:
    """Write qa.jsonl always; qa.parquet and verl.parquet when there is at least one pair (verl rejects empty)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [_row(i) for i in items]
    paths = {"qa_jsonl": out_dir / "qa.jsonl"}
    atomic_write_jsonl(paths["qa_jsonl"], rows)
    if not rows:
        for stale in ("qa.parquet", "verl.parquet"):  # an earlier run's files would contradict qa.jsonl
            (out_dir / stale).unlink(missing_ok=True)
        return paths
    table = pa.Table.from_pylist(rows)
    paths["qa_parquet"] = atomic_write(out_dir / "qa.parquet", lambda tmp: pq.write_table(table, tmp))
    meta_keys = ("target_steps", "min_searches", "pass_at_k", "avg_at_k", "num_correct", "k", "round",
                 "answer_type", "seed_doc_id", "evidence_doc_ids")
    verl_rows = [
        verl_row({"question": r["question"], "golden_answers": r["golden_answers"], "id": r["id"]}, i, data_source,
                 template=SEARCH_PROMPT, extra_info={k: r[k] for k in meta_keys})
        for i, r in enumerate(rows)
    ]
    paths["verl_parquet"] = write_verl_parquet(verl_rows, out_dir / "verl.parquet")
    return paths
