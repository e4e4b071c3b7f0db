"""The producer: the SAGE loop (`sage_rl.generate`, its rules unchanged) run continuously into the question pool.

For each seed passage, in the deterministic order `sage-rl generate` would use, the producer asks the pool
for a target S (the difficulty controller's current distribution), runs the item with its retries, and adds
the accepted pair (correct under the verifying solver and needing at least S searches) to the pool. Every
finished item, accepted or not, is also written to the producer's own record store, so a restarted
producer skips what it has done (and a pair whose `add` landed before a crash is not added twice: the pool
knows its id).

Backpressure: while `max_unserved` fresh questions wait in the pool, no new item starts. Faults never stop
it: an item that keeps failing is recorded as `failed` and counted (the pool's metrics show it).

Talks to the pool through `PoolClient` (async `add`, `unserved`, `draw_target`, `note_items`), which a
local `QuestionPool` (`LocalPool`) or a Ray actor handle (`sage_rl.online.service`) provides.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from sage_rl.generate.config import GenerateConfig
from sage_rl.generate.loop import Pipeline, process_with_retries, sample_seeds
from sage_rl.generate.records import ItemRecord
from sage_rl.generate.store import RecordStore
from sage_rl.online.pool import PoolQuestion, QuestionPool

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProducerConfig:
    """The `online.producer` block of an online recipe."""

    name: str = "p0"  # question ids are `<name>-<item id>`; give each producer its own
    max_unserved: int = 32  # pause while this many fresh questions wait to be drawn
    poll_s: float = 1.0  # how often a paused producer checks again


class PoolClient(Protocol):
    """What the producer needs from the pool."""

    async def add(self, question: PoolQuestion) -> bool: ...

    async def unserved(self) -> int: ...

    async def draw_target(self, key: str) -> int: ...

    async def note_items(self, producer: str, counts: dict[str, int]) -> None: ...


class LocalPool:
    """A `QuestionPool` in this process, as a `PoolClient`."""

    def __init__(self, pool: QuestionPool) -> None:
        self.pool = pool

    async def add(self, question: PoolQuestion) -> bool:
        return self.pool.add(question)

    async def unserved(self) -> int:
        return self.pool.unserved()

    async def draw_target(self, key: str) -> int:
        return self.pool.draw_target(key)

    async def note_items(self, producer: str, counts: dict[str, int]) -> None:
        self.pool.note_items(producer, counts)


def pool_question(record: ItemRecord, qid: str, cfg: GenerateConfig, step: int = 0) -> PoolQuestion | None:
    """The pool entry of an accepted item (None for any other status)."""
    if record.status != "accepted" or record.accepted_round is None:
        return None
    accepted = record.rounds[record.accepted_round]
    c, v = accepted.candidate, accepted.verification
    assert c is not None and v is not None and v.min_searches is not None  # accepted implies verified and correct
    judge_model = cfg.judge.llm.model if cfg.judge.kind == "llm" else cfg.judge.kind
    return PoolQuestion(qid=qid, question=c.question, answers=(c.answer,), target_steps=record.seed.target_steps,
                        answer_type=record.seed.answer_type, seed_doc_id=record.seed.doc_id,
                        round=accepted.round, pass_at_k=v.avg_at_k, min_searches=v.min_searches,
                        generator_model=cfg.generator.llm.model, solver_model=cfg.solver.llm.model,
                        judge_model=judge_model, created_at=time.time(), created_step=step)


async def produce(cfg: GenerateConfig, pipe: Pipeline, pool: PoolClient, producer: ProducerConfig,
                  folder: str | Path) -> Counter[str]:
    """Run items until the seeds (`cfg.seeds.num_items` passages) are used up; returns the status counts.

    `folder` holds the producer's record store (resumable). Cancel the task to stop it early."""
    with RecordStore(Path(folder)) as store:
        done = store.open()
        counts: Counter[str] = Counter(r.status for r in done.values())
        await pool.note_items(producer.name, dict(counts))
        todo = [s for s in sample_seeds(cfg) if s.item_id not in done]
        if done:
            logger.info("producer %s resumes: %d items done, %d to go", producer.name, len(done), len(todo))
        slots = asyncio.Semaphore(max(1, cfg.run.max_concurrent_items))
        paused = False

        async def one(seed) -> None:
            qid = f"{producer.name}-{seed.item_id}"
            seed = replace(seed, target_steps=await pool.draw_target(qid))
            try:
                record, trajectories = await process_with_retries(seed, cfg, pipe)
                if (question := pool_question(record, qid, cfg)) is not None:
                    await pool.add(question)  # before the record: a crash in between redoes the item, deduped
                store.append(record, trajectories)
                counts[record.status] += 1
                await pool.note_items(producer.name, dict(counts))
            finally:
                slots.release()

        tasks = []
        try:
            for seed in todo:
                await slots.acquire()
                while (waiting := await pool.unserved()) >= producer.max_unserved:
                    if not paused:
                        logger.info("producer %s paused: %d fresh questions wait in the pool", producer.name,
                                    waiting)
                        paused = True
                    await asyncio.sleep(producer.poll_s)
                paused = False
                tasks.append(asyncio.create_task(one(seed)))
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
        return counts
