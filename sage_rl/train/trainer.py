"""verl's synchronous v1 PPO trainer with sage_rl's step metrics and reward guard, and the task runner
that makes it available in verl's Ray driver process.

`SageTrainer` (trainer mode `sage`) is verl's `PPOTrainerSync` plus one thing before each step's
advantages: read the trajectories' `extra_fields` (agent loop fields and the reward's extra keys), log
them as `sage/*` step metrics (`sage_rl.train.guard.rollout_metrics`) and stop the run, before any
update, if the judge failed on too many samples (`reward_guard.max_judge_failure_share`). In an online
run (`online.enable`) it also reports each question's outcome to the question pool (which steers the
producers' target S) and logs the pool's `pool/*` metrics; after loading a checkpoint it rewinds the pool
to that step, so a resumed run's served counters match the steps it keeps.

verl looks trainers up by name in the process of its `TaskRunnerV1` actor, which imports nothing of
ours; `SageTaskRunner` is that actor with this module imported first. `sage_rl.train.launch` starts it.
"""

from __future__ import annotations

import logging

import ray
import transfer_queue as tq
from verl.trainer.main_ppo import TaskRunnerV1
from verl.trainer.ppo.v1 import PPOTrainerSync, register_trainer

from sage_rl.online.config import OnlineConfig
from sage_rl.online.pool import outcomes_from_trajectories
from sage_rl.online.service import pool_actor_name
from sage_rl.train.guard import RewardGuard, check_judge_failures, rollout_metrics

logger = logging.getLogger(__name__)


@register_trainer("sage")
class SageTrainer(PPOTrainerSync):
    """`PPOTrainerSync` with `sage/*` step metrics, the reward guard and, in online runs, the question
    pool's feedback (see the module docstring)."""

    def _online_pool(self):
        """The pool actor of an online run, else None."""
        online = OnlineConfig.from_mapping(self.config.get("online"))
        return ray.get_actor(pool_actor_name(online.pool.folder)) if online.enable else None

    def _load_checkpoint(self):
        super()._load_checkpoint()
        if (pool := self._online_pool()) is not None:  # outcomes of steps the checkpoint does not hold are redone
            dropped = ray.get(pool.rewind.remote(self.global_steps))
            logger.info("online pool rewound to step %d (%d outcomes of later steps dropped)", self.global_steps,
                        dropped)

    def _compute_advantage(self, batch, metrics: dict):
        guard = RewardGuard.from_trainer_config(self.config)
        real = [k for k, tag in zip(batch.keys, batch.tags, strict=True) if not tag.get("is_padding", False)]
        if real:
            data = tq.kv_batch_get(keys=real, partition_id=batch.partition_id, select_fields=["extra_fields"])
            # One dict per trajectory, possibly wrapped as NonTensorData (read as verl's replay buffer does).
            fields = [getattr(value, "data", value) for value in data["extra_fields"]]
            step_metrics = rollout_metrics(fields)
            metrics.update(step_metrics)
            check_judge_failures(step_metrics, guard, self.global_steps)
            if (pool := self._online_pool()) is not None:
                outcomes = outcomes_from_trajectories(fields, self.global_steps)
                ray.get(pool.report.remote(self.global_steps, outcomes))
                metrics.update(ray.get(pool.metrics.remote()))
        return super()._compute_advantage(batch, metrics)


@ray.remote
class SageTaskRunner(TaskRunnerV1.__ray_actor_class__):
    """verl's v1 task runner, in a process where the `sage` trainer mode is registered."""

    def run(self, config):
        # Ray ships this class by value (its verl base is a local class), so import the module for real here:
        # that is what registers `SageTrainer` in the actor's process.
        import sage_rl.train.trainer  # noqa: F401
        from sage_rl.online.config import OnlineConfig
        from sage_rl.online.service import start_online

        online = OnlineConfig.from_mapping(config.get("online"))
        if online.enable:  # held here: the pool actor and its producers live as long as this runner
            self.online_actors = start_online(online)
        return super().run(config)
