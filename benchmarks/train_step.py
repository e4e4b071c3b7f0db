"""Wall time of the CPU install and of CPU training steps, measured side by side in one run.

    python benchmarks/train_step.py [--steps 3] [--skip-install] [--process-baseline]

1. `make install` into a fresh scratch venv (the first-time cost), then again (the no-op re-run).
2. `sage-rl train --config-name grpo_tiny_cpu` for N steps; verl's own `timing_s/step` per step, plus the
   start-up time before the first step. Prints each figure and the ratios between them.
3. With `--process-baseline`, the same run again with the process counts the CPU recipes had before they were
   cut (8 reward-loop actors, 2 agent-loop actors, Ray pre-starting 16 idle workers), and the ratio of the two
   start-ups: on 2 cores every extra process is an import of torch, verl and vLLM competing for them.
Not a test: numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEP = re.compile(r"step:(\d+) - .*?timing_s/step:([0-9.]+)")


def timed(cmd: list[str], **kwargs) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    return time.perf_counter() - start, proc


def bench_install() -> None:
    with tempfile.TemporaryDirectory(prefix="sage-rl-venv-") as venv:
        first, proc = timed(["make", "-C", str(ROOT), "install", f"VENV={venv}"])
        if proc.returncode:
            sys.exit(f"make install failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        second, _ = timed(["make", "-C", str(ROOT), "install", f"VENV={venv}"])
        size = subprocess.run(["du", "-sh", venv], capture_output=True, text=True).stdout.split()[0]
    print(f"install, fresh venv        : {first:8.1f} s  ({size})")
    print(f"install, second run (no-op): {second:8.1f} s  ratio second/first = {second / first:.3f}")


# The CPU recipes' process counts before they were cut (recipes/train/cpu/tiny.yaml): verl's 8 reward-loop actors,
# 2 agent-loop actors, and Ray's pre-start of num_cpus (16) idle workers.
PROCESS_BASELINE = ["reward.num_workers=8", "actor_rollout_ref.rollout.agent.num_workers=2",
                    "ray_kwargs.ray_init._system_config.prestart_worker_first_driver=true"]


def bench_train(steps: int, overrides: list[str] = (), label: str = "train") -> float:
    """Run the CPU recipe for `steps` steps, print its timings, return the start-up before step 1 (s)."""
    with tempfile.TemporaryDirectory(prefix="sage-rl-train-") as work:
        cmd = [sys.executable, "-m", "sage_rl.cli", "train", "--config-name", "grpo_tiny_cpu",
               f"trainer.total_training_steps={steps}", "trainer.save_freq=-1", *overrides]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        step_times: dict[int, float] = {}
        first_step_seen = None
        for line in proc.stdout:
            match = STEP.search(line)
            if match:
                step_times[int(match.group(1))] = float(match.group(2))
                if first_step_seen is None:
                    first_step_seen = time.perf_counter() - start
        proc.wait()
        total = time.perf_counter() - start
    if proc.returncode or not step_times:
        sys.exit(f"training failed (status {proc.returncode}); run the command by hand: {' '.join(cmd)}")
    startup = first_step_seen - step_times[1]
    print(f"{label}, whole run ({steps} steps)  : {total:8.1f} s")
    print(f"{label}, start-up before step 1 : {startup:8.1f} s")
    for step, seconds in sorted(step_times.items()):
        ratio = f"  ratio to step 1 = {seconds / step_times[1]:.3f}" if step > 1 else "  (includes warm-up)"
        print(f"{label}, step {step} (timing_s/step): {seconds:8.1f} s{ratio}")
    return startup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--skip-install", action="store_true", help="only time training")
    parser.add_argument("--process-baseline", action="store_true",
                        help="also run with the recipes' earlier process counts and print the start-up ratio")
    args = parser.parse_args()
    if not args.skip_install:
        bench_install()
    startup = bench_train(args.steps)
    if args.process_baseline:
        before = bench_train(args.steps, PROCESS_BASELINE, label="baseline")
        print(f"start-up, recipe / earlier process counts: {startup:.1f} / {before:.1f} s = {startup / before:.3f}")


if __name__ == "__main__":
    main()
