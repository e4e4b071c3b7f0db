"""When verl reduces gradients, and whether it recomputes activations, in the main job's CPU training: side by side.

    python benchmarks/gradient_sync.py [--part train sft] [--train-steps 3] [--sft-steps 5]
                                       [--out outputs/bench/gradient_sync]

Both verl trainers run micro-batches of one row on CPU (`packed_sequences.py`) and accumulate their gradients
over a step. verl's FSDP engine reduces the gradients after every micro-batch unless
`use_no_sync_for_gradient_accumulation` is on (off in verl's defaults): on one rank the "reduction" is a cast of
every gradient to fp32 (the reduce dtype) and a copy through gloo, ~135M values for each ~400-token row. With it
on, FSDP2 keeps accumulating (in fp32: the reduce dtype) and reduces once, after the last micro-batch, so the
update is the same up to summation order. `enable_gradient_checkpointing` (verl's default for the actor: on)
recomputes each layer's forward pass in the backward pass, which a 135M model's one-row micro-batches do not
need for memory.

`train`: the quickstart's training stage (`grpo_search_smollm2_cpu` on the folder's warm-start and data), redone
for each variant, each adding one setting to the one before; `update_actor` per 1,000 trained tokens, since
sampled trajectories differ in length from run to run. `sft`: the quickstart's warm-start stage for N steps,
redone for each variant (it redoes the folder's warm-start, so `train` runs first); the losses should agree to
rounding. Not a test: numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from packed_sequences import compare, sft_line, sft_run, train_run  # noqa: E402

ACTOR = "actor_rollout_ref.actor.fsdp_config.use_no_sync_for_gradient_accumulation"
CHECKPOINTING = "actor_rollout_ref.model.enable_gradient_checkpointing"
TRAIN_VARIANTS = {  # name -> the training recipe's overrides; the first is the ratios' baseline
    "reduced every micro-batch, checkpointing on (verl's defaults)": [f"{ACTOR}=false", f"{CHECKPOINTING}=true"],
    "reduced once a step, checkpointing on": [f"{ACTOR}=true", f"{CHECKPOINTING}=true"],
    "reduced once a step, checkpointing off": [f"{ACTOR}=true", f"{CHECKPOINTING}=false"],
}
SFT = "engine.use_no_sync_for_gradient_accumulation"
SFT_VARIANTS = {
    "reduced every micro-batch (verl's default)": [f"{SFT}=false"],
    "reduced once a step": [f"{SFT}=true"],
}


def train_line(name: str, r: dict, base: dict, steps: int) -> str:
    per_k, base_per_k = (1000 * x["update_actor"] / x["tokens"] for x in (r, base))
    return (f"GRPO, {name}: stage {r['total_s']:.0f} s; steps 2-{steps}: {r['step']:.1f} s/step "
            f"(ratio {r['step'] / base['step']:.3f}), update_actor {r['update_actor']:.1f} s for "
            f"{r['tokens']:.0f} tokens = {per_k:.2f} s per 1k tokens (ratio {per_k / base_per_k:.3f}); "
            f"ppo_kl {r['ppo_kl']:.2e}, clipped {r['clipfrac']:.4f}; actor memory {r['memory_gb']:.2f} GB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", nargs="+", choices=["train", "sft"], default=["train", "sft"])
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--sft-steps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/gradient_sync"))
    args = parser.parse_args()
    if "train" in args.part:  # first: `sft` redoes the folder's warm-start
        compare("train", TRAIN_VARIANTS, train_run, train_line, args.train_steps, args.out)
    if "sft" in args.part:
        compare("sft", SFT_VARIANTS, sft_run, sft_line, args.sft_steps, args.out)


if __name__ == "__main__":
    main()
