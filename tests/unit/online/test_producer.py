"""The producer: the SAGE loop's accepted pairs reach the pool with their provenance, exactly once across
restarts, under backpressure, with faults counted and never fatal."""

from __future__ import annotations

import asyncio

from sage_world import FakeRetriever, standard_cfg, standard_world, write_corpus

from sage_rl.generate.loop import Pipeline
from sage_rl.llm import ScriptedChatModel
from sage_rl.online.controller import ControllerConfig
from sage_rl.online.pool import PoolConfig, QuestionPool
from sage_rl.online.producer import LocalPool, ProducerConfig, produce

# S in [2, 3]: the standard world's seeds T0, T3, T6, T9 are answered correctly with 3 searches, so they are
# accepted at any such S; the others are too easy (1 search) or never answered.
CONTROLLER = ControllerConfig(min_steps=2, max_steps=3)


def _setup(tmp_path, num_items: int = 12, retriever: FakeRetriever | None = None):
    cfg = standard_cfg(tmp_path / "unused", write_corpus(tmp_path / "c.jsonl"), num_items=num_items)
    model = ScriptedChatModel(standard_world())
    return cfg, Pipeline(model, model, retriever or FakeRetriever(), model)


def _pool(tmp_path) -> QuestionPool:
    return QuestionPool(PoolConfig(folder=str(tmp_path / "pool"), controller=CONTROLLER))


def test_accepted_pairs_reach_the_pool_with_provenance(tmp_path):
    cfg, pipe = _setup(tmp_path)
    with _pool(tmp_path) as pool:
        counts = asyncio.run(produce(cfg, pipe, LocalPool(pool), ProducerConfig(name="p0"), tmp_path / "prod"))
        assert counts == {"accepted": 4, "rejected": 8}
        assert sorted(pool.questions) == ["p0-0", "p0-3", "p0-6", "p0-9"]
        q = pool.questions["p0-3"]
        assert q.question == "Q about T3" and q.answers == ("AT3",) and q.min_searches == 3 and q.round == 0
        assert q.target_steps in (2, 3) and q.target_steps == pool.draw_target("p0-3")  # the controller's S
        assert q.pass_at_k == 1.0 and q.seed_doc_id == "doc3" and q.judge_model == cfg.judge.llm.model
        m = pool.metrics()
    assert (m["pool/items_done"], m["pool/acceptance_rate"], m["pool/size"]) == (12, 4 / 12, 4)


def test_a_restarted_producer_skips_done_items_and_never_duplicates_a_pair(tmp_path):
    cfg, pipe = _setup(tmp_path)
    with _pool(tmp_path) as pool:
        asyncio.run(produce(cfg, pipe, LocalPool(pool), ProducerConfig(), tmp_path / "prod"))
        calls = len(pipe.generator_llm.calls)
        again = asyncio.run(produce(cfg, pipe, LocalPool(pool), ProducerConfig(), tmp_path / "prod"))
        assert len(pipe.generator_llm.calls) == calls and again == {"accepted": 4, "rejected": 8}  # nothing redone
        # A crash after `add` but before the record: the item is redone and its pair is not added again.
        (tmp_path / "prod" / "records.jsonl").write_text("")
        asyncio.run(produce(cfg, pipe, LocalPool(pool), ProducerConfig(), tmp_path / "prod"))
        assert len(pipe.generator_llm.calls) > calls and len(pool.questions) == 4
    assert len((tmp_path / "pool" / "questions.jsonl").read_text().splitlines()) == 4


def test_the_producer_pauses_while_enough_fresh_questions_wait(tmp_path):
    cfg, pipe = _setup(tmp_path)
    cfg.run.max_concurrent_items = 1

    async def scenario(pool: QuestionPool) -> tuple[int, int]:
        task = asyncio.create_task(produce(cfg, pipe, LocalPool(pool), ProducerConfig(max_unserved=1, poll_s=0.01),
                                           tmp_path / "prod"))
        while not pool.questions:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # ample time to run several more items if nothing held it back
        paused_at = len(pool.questions), len(pipe.generator_llm.calls)
        assert pool.draw(1, step=1)  # the trainer takes it: the producer goes on
        while len(pool.questions) < 2:
            await asyncio.sleep(0.01)
        task.cancel()
        return paused_at

    with _pool(tmp_path) as pool:
        (size, calls_when_paused) = asyncio.run(scenario(pool))
        assert size == 1  # nothing more was produced while one fresh question waited
        assert len(pipe.generator_llm.calls) > calls_when_paused


def test_item_faults_are_counted_and_never_stop_the_producer(tmp_path):
    cfg, pipe = _setup(tmp_path, retriever=FakeRetriever(fail=lambda q: q.startswith("T3 ")))
    with _pool(tmp_path) as pool:
        counts = asyncio.run(produce(cfg, pipe, LocalPool(pool), ProducerConfig(), tmp_path / "prod"))
        assert counts["failed"] == 1 and counts["accepted"] == 3 and "p0-3" not in pool.questions
        assert pool.metrics()["pool/items_failed"] == 1
