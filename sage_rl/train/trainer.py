"""verl's synchronous v1 PPO trainer with sage_rl's step metrics and reward guard, and the task runner
that makes it available in verl's Ray driver process.

`SageTrainer` (trainer mode `sage`) is verl's `PPOTrainerSync` plus one thing before each step's
advantages: read the trajectories' `extra_fields` (agent loop fields and the reward's extra keys), log
them as `sage/*` step metrics (`sage_rl.train.guard.rollout_metrics`) and stop the run, before any
update, if the judge failed on too many samples (`reward_guard.max_judge_failure_share`).

verl looks trainers up by name in the process of its `TaskRunnerV1` actor, which imports nothing of
ours; `SageTaskRunner` is that actor with this module imported first. `sage_rl.train.launch` starts it.
"""

from __future__ import annotations

import logging

import ray
import transfer_queue as tq
from verl.trainer.main_ppo import TaskRunnerV1
from verl.trainer.ppo.v1 import PPOTrainerSync, register_trainer

from sage_rl.train.guard import RewardGuard, check_judge_failures, rollout_metrics

logger = logging.getLogger(__name__)


@register_trainer("sage")
class SageTrainer(PPOTrainerSync):
    """`PPOTrainerSync` with `sage/*` step metrics and the reward guard (see the module docstring)."""

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
        return super()._compute_advantage(batch, metrics)


@ray.remote
class SageTaskRunner(TaskRunnerV1.__ray_actor_class__):
    """verl's v1 task runner, in a process where the `sage` trainer mode is registered."""

    def run(self, config):
        # Ray ships this class by value (its verl base is a local class), so import the module for real here:
        # that is what registers `SageTrainer` in the actor's process.
        import sage_rl.train.trainer  # noqa: F401

        return super().run(config)
