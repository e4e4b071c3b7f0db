"""Padded against packed sequences in the main job's CPU training, measured side by side in one run.

    python benchmarks/packed_sequences.py [--part sft train] [--sft-steps 5] [--train-steps 3]
                                          [--out outputs/bench/packed_sequences]

With `model.use_remove_padding` off, verl's FSDP engine pads each micro-batch's rows to its longest
(`transformer_impl.prepare_model_inputs`): in the warm-start's SFT, gold rows run from ~400-token solver
trajectories to ~1,200-token revision prompts; in PPO, trajectories of ~440 tokens (the CPU search recipes) vary
less, and at micro-batch 1 (the CPU recipes') nothing is padded. With it on, a micro-batch's rows are packed
into one sequence with no pad tokens and told apart by their position ids, which transformers' SDPA attention
turns into a block-diagonal mask (no flash-attention needed; `tests/unit/test_packed_attention.py`). The loss
sums over the batch's real tokens either way, so these settings change the time, not the update.

`train` runs first (on the quickstart's own warm-start), then `sft`, which redoes the folder's warm-start stage.
`sft`: the quickstart's warm-start stage (its index, gold rows and settings) with
`trainer.total_training_steps=N`, redone in one folder for each variant; per-step times from the SFT log's tqdm
bar (step 1, which includes warm-up, apart) and the losses, which should agree up to rounding (step 1's loss is
computed on the same weights and rows).
`train`: the quickstart's training stage (`grpo_search_smollm2_cpu` on its warm-start and data) for N steps, redone
for each variant; verl's `timing_s/*` per step (steps after the first) and, as the correctness check, how well the
actor's log-probs agree with vLLM's on the sampled tokens (`training/rollout_actor_probs_pearson_corr`, about
0.999 when both compute the same model).
Not a test: numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from statistics import mean

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from online_overhead import run_train_stage  # noqa: E402

ELAPSED = re.compile(r"Epoch \d+/\d+:\s*\d+%\|[^|]*\|\s*(\d+)/\d+ \[(?:(\d+):)?(\d+):(\d+)<")  # the SFT's tqdm bar
SFT_VARIANTS = {  # name -> the warm-start recipe's overrides; the first is the ratios' baseline
    "padded, micro-batch 2": ["model.use_remove_padding=false", "data.micro_batch_size_per_gpu=2"],
    "padded, micro-batch 1": ["model.use_remove_padding=false", "data.micro_batch_size_per_gpu=1"],
    "packed, micro-batch 2": ["model.use_remove_padding=true", "data.micro_batch_size_per_gpu=2"],
    "packed, micro-batch 8": ["model.use_remove_padding=true", "data.micro_batch_size_per_gpu=8"],
}
TRAIN_VARIANTS = {
    "padded, micro-batch 1": ["actor_rollout_ref.model.use_remove_padding=false"] + [
        f"actor_rollout_ref.{k}_micro_batch_size_per_gpu=1" for k in ("actor.ppo", "rollout.log_prob")],
    "packed, micro-batch 1": ["actor_rollout_ref.model.use_remove_padding=true"] + [
        f"actor_rollout_ref.{k}_micro_batch_size_per_gpu=1" for k in ("actor.ppo", "rollout.log_prob")],
    "packed, micro-batch 4": ["actor_rollout_ref.model.use_remove_padding=true"] + [
        f"actor_rollout_ref.{k}_micro_batch_size_per_gpu=4" for k in ("actor.ppo", "rollout.log_prob")],
}


def sft_run(variant: list[str], steps: int, out: Path) -> dict:
    """The quickstart's warm-start stage for `steps` SFT steps with the recipe overrides `variant`."""
    from sage_rl.config import hydra_list
    from sage_rl.pipeline import load_pipeline_config

    shipped = list(load_pipeline_config("quickstart_cpu").warmstart.overrides)
    overrides = [*shipped, f"trainer.total_training_steps={steps}", *variant]
    cmd = [sys.executable, "-m", "sage_rl.cli", "pipeline", "--config-name", "quickstart_cpu", f"run.output_dir={out}",
           "run.stages=[index,warmstart]", "run.redo=[warmstart]",
           f"warmstart.overrides={hydra_list(overrides)}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"warm-start failed (status {proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-3000:]}"
                 f"{proc.stderr[-3000:]}")
    report = json.loads((out / "warmstart" / "warmstart.json").read_text())
    if report["cached"]:  # an earlier run's times, not this one's
        sys.exit(f"the warm-start came from the model cache ({report['model']}): remove that folder to measure")
    elapsed = {}
    for match in ELAPSED.finditer((out / "warmstart" / "sft.log").read_text()):
        step, hours, minutes, seconds = match.groups()
        # setdefault: the bar is redrawn with its last count when the trainer stops at total_training_steps
        elapsed.setdefault(int(step), int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds))
    later = [elapsed[s] - elapsed[s - 1] for s in sorted(elapsed) if s > 1 and s - 1 in elapsed]
    return {"total_s": report["training"]["seconds"], "step1_s": elapsed.get(1, float("nan")),
            "step_s": mean(later) if later else float("nan"), "losses": report["training"]["losses"],
            "rows": report["training"]["rows"]}


def train_run(variant: list[str], steps: int, out: Path) -> dict:
    """The quickstart's training stage for `steps` GRPO steps with the recipe overrides `variant`: verl's
    `timing_s/*` (mean over the steps after the first), the stage's wall time, and per-step means of the
    actor-vs-vLLM agreement, the PPO ratio's statistics and the actor process's memory."""
    from sage_rl.pipeline import load_pipeline_config

    questions = load_pipeline_config("quickstart_cpu").index.train_questions
    metrics, seconds = run_train_stage(out, "grpo_search_smollm2_cpu", steps, questions, [], variant)
    later = [v for k, v in sorted(metrics.items()) if k > 1] or list(metrics.values())
    row = {key: mean(v.get(f"timing_s/{key}", float("nan")) for v in later)
           for key in ("step", "gen", "old_log_prob", "update_actor")}
    row["tokens"] = mean(v.get("perf/total_num_tokens", float("nan")) for v in later)
    row["total_s"] = seconds
    for key, metric in (("corr", "training/rollout_actor_probs_pearson_corr"),
                        ("diff", "training/rollout_probs_diff_mean"), ("ppo_kl", "actor/ppo_kl"),
                        ("clipfrac", "actor/pg_clipfrac"), ("memory_gb", "actor/perf/cpu_memory_used_gb")):
        row[key] = mean(v.get(metric, float("nan")) for v in metrics.values())
    return row


def train_line(variant: str, r: dict, base: dict, steps: int) -> str:
    return (f"GRPO, {variant}: stage {r['total_s']:.0f} s; steps 2-{steps}: {r['step']:.1f} s/step "
            f"(ratio {r['step'] / base['step']:.3f}; gen {r['gen']:.1f}, old_log_prob {r['old_log_prob']:.1f}, "
            f"update_actor {r['update_actor']:.1f} = ratio {r['update_actor'] / base['update_actor']:.3f}); "
            f"actor vs vLLM probs: pearson {r['corr']:.4f}, mean |diff| {r['diff']:.4f}")


def sft_line(variant: str, r: dict, base: dict, steps: int) -> str:
    return (f"warm-start SFT, {variant}: {r['rows']} rows, {steps} steps in {r['total_s']:.0f} s "
            f"(ratio {r['total_s'] / base['total_s']:.3f}); step 1 {r['step1_s']:.0f} s; later steps "
            f"{r['step_s']:.1f} s/step (ratio {r['step_s'] / base['step_s']:.3f}); losses "
            + " ".join(f"{x:.3f}" for x in r["losses"]))


def compare(part: str, variants: dict, run, line, steps: int, out: Path) -> None:
    """Run each variant (`run(variants[name], steps, out)`) in turn, then print one `line` per variant against the
    first (the baseline)."""
    results = {}
    for variant, setting in variants.items():
        results[variant] = run(setting, steps, out)
        print(f"{part}, {variant}: done", file=sys.stderr, flush=True)
    base = next(iter(results.values()))
    for variant, r in results.items():
        print(line(variant, r, base, steps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", nargs="+", choices=["sft", "train"], default=["sft", "train"])
    parser.add_argument("--sft-steps", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/packed_sequences"))
    args = parser.parse_args()
    parts = [("train", TRAIN_VARIANTS, train_run, train_line, args.train_steps),  # train first: see the docstring
             ("sft", SFT_VARIANTS, sft_run, sft_line, args.sft_steps)]
    for part, variants, run, line, steps in parts:
        if part in args.part:
            compare(part, variants, run, line, steps, args.out)


if __name__ == "__main__":
    main()
