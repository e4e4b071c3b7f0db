"""The online data source on Ray: one named pool actor per job, and producer actors feeding it.

    start_online(cfg)  ->  pool actor `sage_pool:<pool folder>` (a `QuestionPool`)  <-  producer actors
                                        ^ draw / report / metrics
                        verl's dataset and trainer (sage_rl.train.online_data, sage_rl.train.trainer)

The pool actor owns the pool folder (its lock) for the job's lifetime; everything that talks to it finds
it by name (`ray.get_actor(name)`), so verl's processes need no handle passed around. A producer that
fails (an endpoint down, the pool briefly unreachable) is logged, counted and restarted after a pause: it
never takes training down. Ray, no verl.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import ray

from sage_rl.online.config import OnlineConfig
from sage_rl.online.pool import PoolQuestion, QuestionPool

logger = logging.getLogger(__name__)

POOL_ACTOR_PREFIX = "sage_pool:"


def pool_actor_name(folder: str | Path) -> str:
    """The pool actor's name: one pool actor per pool folder (resolved against the current directory)."""
    return f"{POOL_ACTOR_PREFIX}{Path(folder).expanduser().resolve()}"


# The pool itself behind a Ray actor: its calls are serialised (one pool, one writer).
PoolActor = ray.remote(num_cpus=0)(QuestionPool)


class RayPool:
    """A pool actor handle as the producer's `PoolClient`."""

    def __init__(self, handle) -> None:
        self.handle = handle

    async def add(self, question: PoolQuestion) -> bool:
        return await self.handle.add.remote(question)

    async def unserved(self) -> int:
        return await self.handle.unserved.remote()

    async def draw_target(self, key: str) -> int:
        return await self.handle.draw_target.remote(key)

    async def note_items(self, producer: str, counts: dict[str, int]) -> None:
        await self.handle.note_items.remote(producer, counts)


@ray.remote(num_cpus=0)
class ProducerActor:
    """Runs `sage_rl.online.producer.produce` against the generate recipe's endpoints, restarting it after
    a failure (`restart_s` later) until its seeds are used up."""

    def __init__(self, cfg: OnlineConfig, pool_name: str, index: int, restart_s: float = 5.0) -> None:
        from dataclasses import replace

        from sage_rl.generate.config import load_generate_config

        self.generate = load_generate_config(cfg.generate_recipe, list(cfg.generate_overrides))
        self.generate.seeds.seed += index  # producers draw different seed passages
        self.generate.run.progress = False
        self.producer = replace(cfg.producer, name=f"{cfg.producer.name}_{index}" if index else cfg.producer.name)
        self.folder = Path(cfg.pool.folder) / "producers" / self.producer.name
        self.pool_name, self.restart_s, self.failures = pool_name, restart_s, 0

    async def run(self) -> dict[str, int]:
        from sage_rl.generate.loop import build_pipeline
        from sage_rl.online.producer import produce

        while True:
            try:
                pool = RayPool(ray.get_actor(self.pool_name))
                async with build_pipeline(self.generate) as pipe:
                    counts = await produce(self.generate, pipe, pool, self.producer, self.folder)
                logger.info("producer %s used up its seeds: %s", self.producer.name, dict(counts))
                return dict(counts)
            except Exception as e:  # intended: a producer failure degrades the data supply, never training
                self.failures += 1
                logger.warning("producer %s failed (%d so far), restarting in %.0f s: %s", self.producer.name,
                               self.failures, self.restart_s, e)
                await asyncio.sleep(self.restart_s)


def start_online(cfg: OnlineConfig) -> tuple[object, list[object]]:
    """Start (or find) the pool actor of `cfg.pool.folder` and start the producers; returns their handles.

    Call from a process connected to the job's Ray cluster (verl's task runner)."""
    from dataclasses import replace

    name = pool_actor_name(cfg.pool.folder)
    cfg = replace(cfg, pool=replace(cfg.pool, folder=str(Path(cfg.pool.folder).expanduser().resolve())))
    pool = PoolActor.options(name=name, get_if_exists=True).remote(cfg.pool)
    ray.get(pool.unserved.remote())  # fail here, clearly, if the pool folder cannot be opened
    producers = [ProducerActor.options(name=f"{name}:producer{i}").remote(cfg, name, i)
                 for i in range(cfg.num_producers)]
    for p in producers:
        p.run.remote()
    logger.info("online data source %s: pool at %s, %d producer(s)", name, cfg.pool.folder, len(producers))
    return pool, producers
