"""Online mode against static data on the same CPU recipe: step-time overhead, its split, producer supply
against the trainer's demand, and the share of rollout time spent waiting for retrieval.

One command runs the main job's training stage twice on the same index, warm-start and generated set
(`sage-rl pipeline --config-name quickstart_cpu`, whose stages a rerun reuses): first static
(`grpo_search_smollm2_cpu`), then online (`online_smollm2_cpu`: the same settings plus a SAGE producer on the
warm-started model filling the question pool while training runs). Per step it reads verl's own timers
(`timing_s/*`: step, gen = rollouts including the wait for the pool's rows, reward, old_log_prob, ref,
update_actor) and `sage/rollout/retrieval_share` (the agent loop's time waiting for `/retrieve` over its time
waiting for the rollout server plus `/retrieve`).
Targets (issue #8): online step time <= 1.15x static; retrieval < 10% of rollout time.

    python benchmarks/online_overhead.py [--steps 4] [--train-questions 128] [--out outputs/bench/online_overhead]
                                         [--nice N] [--producer-nice N]

`--train-questions` sets the job's static training questions and so the producer's seeds (it makes as many
items): with the default 64 a producer on this box is done before verl's start-up is, so no step runs beside
production; 128 keeps it producing through the steps, which is what the per-step overhead is about.
Steps after the first are compared (step 1 carries vLLM's and the actor's warm-up). The producer's vLLM server
shares the cores with training on a CPU box; `--nice 10 --producer-nice 19` (the pipeline's `run.nice` and
`run.producer_nice`; default: the quickstart's) runs it below training, so that it generates in the time
training leaves (one run on a 2-core AVX2 box: 1.43x, and the producer made no item in the 4 steps). A GPU
deployment puts the producer on its own servers.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from statistics import mean

STEP_RE = re.compile(r"step:(\d+) - (.*)")
SPLIT = ("gen", "reward", "old_log_prob", "ref", "adv", "update_actor", "update_weights", "save_checkpoint")


def step_metrics(log: Path) -> dict[int, dict[str, float]]:
    """Every verl step line of a training log: step -> {metric: value}."""
    steps: dict[int, dict[str, float]] = {}
    for line in log.read_text(errors="replace").splitlines():
        if not (match := STEP_RE.search(line)):
            continue
        values = {}
        for part in match.group(2).split(" - "):
            key, _, value = part.partition(":")
            try:
                values[key.strip()] = float(re.sub(r"np\.\w+\((.*)\)", r"\1", value.strip()))
            except ValueError:
                continue
        steps[int(match.group(1))] = values
    return steps


def run_train_stage(out: Path, recipe: str, steps: int, train_questions: int, run_overrides: list[str],
                    train_overrides: list[str] = ()) -> tuple[dict[int, dict[str, float]], float]:
    """The pipeline up to its train stage with `recipe` (plus `train_overrides`), which always reruns (an earlier
    run's would be skipped; the stages before it are reused); the train stage's step metrics and wall time."""
    from sage_rl.config import hydra_list
    from sage_rl.pipeline import load_pipeline_config

    # The quickstart's own training overrides (its learning rate), with this run's step count.
    shipped = load_pipeline_config("quickstart_cpu").train.overrides
    overrides = [o for o in shipped if not o.startswith(("trainer.total_training_steps=", "trainer.save_freq="))]
    overrides += [f"trainer.total_training_steps={steps}", f"trainer.save_freq={steps}", *train_overrides]
    cmd = [str(Path(sys.executable).parent / "sage-rl"), "pipeline", "--config-name", "quickstart_cpu",
           f"run.output_dir={out}", "run.stages=[index,warmstart,generate,train]", f"train.recipe={recipe}",
           f"index.train_questions={train_questions}",
           f"train.overrides={hydra_list(overrides)}", "run.redo=[train]", *run_overrides]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - started
    print(f"  {recipe}: {wall:.0f} s for the pipeline run (load average {load:.1f} at start, "  # noqa: T201
          f"{os.getloadavg()[0]:.1f} at end)")
    log = out / "logs" / "train.log"
    kept = out / f"train_{recipe}.log"
    shutil.copy(log, kept)
    record = (out / "train" / "done.json").read_text()
    seconds = float(re.search(r'"seconds": ([\d.]+)', record).group(1))
    return step_metrics(kept), seconds


def summarize(name: str, steps: dict[int, dict[str, float]], stage_s: float) -> dict[str, float]:
    later = [v for k, v in sorted(steps.items()) if k > 1] or list(steps.values())
    row = {"stage_s": stage_s, "step_s": mean(v.get("timing_s/step", 0.0) for v in later)}
    for key in SPLIT:
        row[key] = mean(v.get(f"timing_s/{key}", 0.0) for v in later)
    shares = [v["sage/rollout/retrieval_share"] for v in later if "sage/rollout/retrieval_share" in v]
    row["retrieval_share"] = mean(shares) if shares else float("nan")
    print(f"{name}: train stage {stage_s:.0f} s; steps 2+: {row['step_s']:.1f} s/step = "  # noqa: T201
          + ", ".join(f"{k} {row[k]:.1f}" for k in SPLIT if row[k])
          + f"; retrieval {row['retrieval_share']:.3f} of each trajectory's rollout time")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--train-questions", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/online_overhead"))
    parser.add_argument("--nice", type=int, help="the stages' CPU priority (run.nice; default: the quickstart's)")
    parser.add_argument("--producer-nice", type=int, help="the online producer's (run.producer_nice)")
    args = parser.parse_args()
    from sage_rl.pipeline import load_pipeline_config

    priority = [f"run.{key}={value}" for key, value in (("nice", args.nice), ("producer_nice", args.producer_nice))
                if value is not None]
    run = load_pipeline_config("quickstart_cpu", priority).run
    print(f"CPU priority (quickstart_cpu): stages nice {run.nice}, the online producer's model server nice "  # noqa: T201
          f"{run.producer_nice}, the retrieval server 0")
    static_steps, static_s = run_train_stage(args.out, "grpo_search_smollm2_cpu", args.steps, args.train_questions,
                                             priority)
    online_steps, online_s = run_train_stage(args.out, "online_smollm2_cpu", args.steps, args.train_questions,
                                             priority)
    static = summarize("static", static_steps, static_s)
    online = summarize("online", online_steps, online_s)
    from sage_rl.train.launch import load_train_config

    cfg = load_train_config("online_smollm2_cpu", [])
    demand = cfg.data.train_batch_size * cfg.online.mix  # pool rows a batch asks for
    last = online_steps[max(online_steps)] if online_steps else {}
    supply = last.get("pool/size", 0.0) / args.steps
    print(f"producer: {last.get('pool/size', 0.0):.0f} questions accepted into the pool over {args.steps} steps "  # noqa: T201
          f"({last.get('pool/acceptance_rate', float('nan')):.3f} of {last.get('pool/items_done', 0):.0f} items, "
          f"start-up included) = {supply:.2f} per step against a demand of {demand:.1f} per step "
          f"(batch {cfg.data.train_batch_size} x mix {cfg.online.mix}): supply/demand {supply / demand:.2f}")
    ratio = online["step_s"] / static["step_s"]
    print(f"online/static step time (steps 2+) = {ratio:.2f}x "  # noqa: T201
          f"({'PASS' if ratio <= 1.15 else 'FAIL'}: target <= 1.15x); "
          f"train stage {online_s / static_s:.2f}x (start-up included)")
    share = max(static["retrieval_share"], online["retrieval_share"])
    print(f"retrieval share of rollout time: static {static['retrieval_share']:.3f}, "  # noqa: T201
          f"online {online['retrieval_share']:.3f} ({'PASS' if share < 0.10 else 'FAIL'}: target < 0.10)")


if __name__ == "__main__":
    main()
