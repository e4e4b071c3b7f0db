"""What a GRPO step of the main job costs on CPU under three settings, measured side by side in one run.

    python benchmarks/grpo_step.py [--steps 3] [--out outputs/bench/grpo_step]

The quickstart's training stage (`grpo_search_smollm2_cpu` on its own warm-start and data, as in
`packed_sequences.py`), redone for each variant, each adding one setting to the one before:
- torch threads of verl's training worker (`SAGE_RL_TRAIN_THREADS`; `sage_rl/train/cpu_platform.py`): Ray
  starts the worker with `OMP_NUM_THREADS=1`, so before the plugin set them its log-prob and update passes ran on
  one core; the first variant pins that old behaviour;
- `actor_rollout_ref.model.enable_gradient_checkpointing` (verl's default: on) recomputes each layer's forward
  pass during the backward pass to save activation memory, of which micro-batches of one ~400-token trajectory of
  a 135M model need little (here, off did not shorten `update_actor` in one run; `gradient_sync.py`, which
  compares `update_actor` per trained token rather than per step, measured 0.854, and the CPU recipes now turn
  it off);
- `algorithm.rollout_correction.bypass_mode` takes vLLM's log-probs of the sampled tokens as PPO's old
  log-probs instead of recomputing them with the actor (`old_log_prob`, a forward pass over the batch). With one
  PPO epoch of one mini-batch (the CPU recipes'), the recomputed old log-probs equal the actor's, so the PPO ratio
  is exactly 1; bypassed, the ratio is actor / vLLM, i.e. a clipped importance weight for the two engines'
  numerical mismatch. `actor/ppo_kl` then measures that mismatch, and `actor/pg_clipfrac` how many tokens it clips.
Per variant: verl's `timing_s/*` over the steps after the first (the first includes warm-up), the stage's wall
time, the actor process's memory, and the agreement figures above. Not a test: numbers depend on the machine and
on what else runs on it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from packed_sequences import compare, train_run  # noqa: E402

THREADS = "SAGE_RL_TRAIN_THREADS"
CHECKPOINTING = "actor_rollout_ref.model.enable_gradient_checkpointing"
BYPASS = "algorithm.rollout_correction.bypass_mode"
VARIANTS = {  # name -> (environment, the training recipe's overrides); the first is the ratios' baseline
    "1 thread, checkpointing on, old log-probs recomputed": ({THREADS: "1"}, [f"{CHECKPOINTING}=true",
                                                                            f"{BYPASS}=false"]),
    "all cores, checkpointing on, old log-probs recomputed": ({}, [f"{CHECKPOINTING}=true", f"{BYPASS}=false"]),
    "all cores, checkpointing off, old log-probs recomputed": ({}, [f"{CHECKPOINTING}=false", f"{BYPASS}=false"]),
    "all cores, checkpointing off, vLLM's log-probs (bypass)": ({}, [f"{CHECKPOINTING}=false", f"{BYPASS}=true"]),
}


def run_with_env(variant: tuple[dict[str, str], list[str]], steps: int, out: Path) -> dict:
    """`train_run` with the variant's environment, which the pipeline's processes (Ray's workers among them)
    inherit."""
    env, overrides = variant
    os.environ.pop(THREADS, None)
    os.environ.update(env)
    return train_run(overrides, steps, out)


def line(name: str, r: dict, base: dict, steps: int) -> str:
    return (f"GRPO, {name}: stage {r['total_s']:.0f} s (ratio {r['total_s'] / base['total_s']:.3f}); steps "
            f"2-{steps}: {r['step']:.1f} s/step (ratio {r['step'] / base['step']:.3f}; gen {r['gen']:.1f}, "
            f"old_log_prob {r['old_log_prob']:.1f}, update_actor {r['update_actor']:.1f}); actor memory "
            f"{r['memory_gb']:.2f} GB; ppo_kl {r['ppo_kl']:.2e}, clipped {r['clipfrac']:.4f}; "
            f"actor vs vLLM pearson {r['corr']:.4f} (recomputed only)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/grpo_step"))
    args = parser.parse_args()
    compare("train", VARIANTS, run_with_env, line, args.steps, args.out)


if __name__ == "__main__":
    main()
