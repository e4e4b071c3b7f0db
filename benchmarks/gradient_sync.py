"""When verl reduces gradients, and whether it recomputes activations, in the main job's CPU training: side by side.

    python benchmarks/gradient_sync.py [--part torch train sft] [--train-steps 3] [--sft-steps 5]
                                       [--out outputs/bench/gradient_sync] [--tokens 440] [--reps 8]

Both verl trainers run micro-batches of one row on CPU (`packed_sequences.py`) and accumulate their gradients
over a step. verl's FSDP engine reduces the gradients after every micro-batch unless
`use_no_sync_for_gradient_accumulation` is on (off in verl's defaults): on one rank the "reduction" is a cast of
every gradient to fp32 (the reduce dtype) and a copy through gloo, ~135M values for each ~400-token row. With it
on, FSDP2 keeps accumulating (in fp32: the reduce dtype) and reduces once, after the last micro-batch, so the
update is the same up to summation order. `enable_gradient_checkpointing` (verl's default for the actor: on)
recomputes each layer's forward pass in the backward pass, which a 135M model's one-row micro-batches do not
need for memory.

`torch`: the same settings outside verl, each in a process of its own: forward and backward passes of the embedded
SmolLM2-135M on one row of `--tokens` random ids (the GRPO rows' mean length), with the log-softmax loss verl
takes, in plain torch with bf16 weights, then wrapped by FSDP2 as verl wraps it (fp32 weights, bf16 compute, fp32
reduce, one gloo rank) with the gradients reduced per row or not, then with gradient checkpointing; seconds per
1,000 tokens, the floor the verl figures compare to.
`train`: the quickstart's training stage (`grpo_search_smollm2_cpu` on the folder's warm-start and data), redone
for each variant, each adding one setting to the one before; `update_actor` per 1,000 trained tokens, since
sampled trajectories differ in length from run to run. `sft`: the quickstart's warm-start stage for N steps,
redone for each variant (it redoes the folder's warm-start, so `train` runs first); the losses should agree to
rounding. Not a test: numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from cpu_dtype import timed  # noqa: E402
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

TORCH_VARIANTS = {  # name -> (FSDP2 as verl wraps it, gradients reduced every row, gradient checkpointing)
    "plain torch, bf16 weights": (False, False, False),
    "FSDP2, reduced every row (verl's default)": (True, True, False),
    "FSDP2, reduced once": (True, False, False),
    "FSDP2, reduced once, checkpointing on": (True, False, True),
}


def torch_seconds_per_row(variant: str, tokens: int, reps: int) -> float:
    """Mean seconds of one row's forward and backward passes under `variant` (run in a fresh process)."""
    import torch
    from transformers import AutoModelForCausalLM

    from sage_rl.models import smollm2_path

    fsdp, reduce_every_row, checkpointing = TORCH_VARIANTS[variant]
    torch.set_num_threads(os.cpu_count() or 1)
    dtype = torch.float32 if fsdp else torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(smollm2_path(), dtype=dtype, attn_implementation="sdpa")
    model.train()
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if fsdp:
        import torch.distributed as dist
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29531")
        dist.init_process_group("gloo", rank=0, world_size=1)
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32,
                                      cast_forward_inputs=True)
        for layer in model.model.layers:
            fully_shard(layer, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
        model.set_requires_gradient_sync(reduce_every_row)
    ids = torch.randint(0, 40000, (1, tokens))

    def row() -> None:
        logits = model(input_ids=ids, use_cache=False).logits.float()
        (-torch.log_softmax(logits, -1).gather(-1, ids.roll(-1, 1).unsqueeze(-1)).mean()).backward()

    return timed(row, reps)  # after one warm-up row


def torch_part(tokens: int, reps: int) -> None:
    per_k = {}
    for variant in TORCH_VARIANTS:
        out = subprocess.run([sys.executable, __file__, "--torch-variant", variant, "--tokens", str(tokens),
                              "--reps", str(reps)], check=True, capture_output=True, text=True).stdout
        per_k[variant] = 1000 * float(out.split()[-1]) / tokens
        print(f"torch, {variant}: done", file=sys.stderr, flush=True)
    base = next(iter(per_k.values()))
    for variant, value in per_k.items():
        print(f"torch, {variant}: {value:.2f} s per 1k tokens (ratio {value / base:.3f}; {tokens}-token rows)")


def train_line(name: str, r: dict, base: dict, steps: int) -> str:
    per_k, base_per_k = (1000 * x["update_actor"] / x["tokens"] for x in (r, base))
    return (f"GRPO, {name}: stage {r['total_s']:.0f} s; steps 2-{steps}: {r['step']:.1f} s/step "
            f"(ratio {r['step'] / base['step']:.3f}), update_actor {r['update_actor']:.1f} s for "
            f"{r['tokens']:.0f} tokens = {per_k:.2f} s per 1k tokens (ratio {per_k / base_per_k:.3f}); "
            f"ppo_kl {r['ppo_kl']:.2e}, clipped {r['clipfrac']:.4f}; actor memory {r['memory_gb']:.2f} GB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", nargs="+", choices=["torch", "train", "sft"], default=["torch", "train", "sft"])
    parser.add_argument("--tokens", type=int, default=440, help="`torch`: the row's length")
    parser.add_argument("--reps", type=int, default=8, help="`torch`: timed rows per variant")
    parser.add_argument("--torch-variant", help=argparse.SUPPRESS)  # one `torch` measurement, in a child process
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--sft-steps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/gradient_sync"))
    args = parser.parse_args()
    if args.torch_variant:
        print(torch_seconds_per_row(args.torch_variant, args.tokens, args.reps))
        return
    if "torch" in args.part:
        torch_part(args.tokens, args.reps)
    if "train" in args.part:  # first: `sft` redoes the folder's warm-start
        compare("train", TRAIN_VARIANTS, train_run, train_line, args.train_steps, args.out)
    if "sft" in args.part:
        compare("sft", SFT_VARIANTS, sft_run, sft_line, args.sft_steps, args.out)


if __name__ == "__main__":
    main()
