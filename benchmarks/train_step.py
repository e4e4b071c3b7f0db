"""Wall time of the CPU install and of CPU training steps, measured side by side in one run.

    python benchmarks/train_step.py [--steps 3] [--skip-install]

1. `make install` into a fresh scratch venv (the first-time cost), then again (the no-op re-run).
2. `sage-rl train --config-name grpo_tiny_cpu` for N steps; verl's own `timing_s/step` per step, plus the
   start-up time before the first step. Prints each figure and the ratios between them.
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


def bench_train(steps: int) -> None:
    with tempfile.TemporaryDirectory(prefix="sage-rl-train-") as work:
        cmd = [sys.executable, "-m", "sage_rl.cli", "train", "--config-name", "grpo_tiny_cpu",
               f"trainer.total_training_steps={steps}", "trainer.save_freq=-1"]
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
    print(f"train, whole run ({steps} steps)  : {total:8.1f} s")
    print(f"train, start-up before step 1 : {startup:8.1f} s")
    for step, seconds in sorted(step_times.items()):
        ratio = f"  ratio to step 1 = {seconds / step_times[1]:.3f}" if step > 1 else "  (includes warm-up)"
        print(f"train, step {step} (timing_s/step): {seconds:8.1f} s{ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--skip-install", action="store_true", help="only time training")
    args = parser.parse_args()
    if not args.skip_install:
        bench_install()
    bench_train(args.steps)


if __name__ == "__main__":
    main()
