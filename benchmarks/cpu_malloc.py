"""glibc's malloc in the main job's CPU training: its defaults against a heap that keeps its pages, side by side.

    python benchmarks/cpu_malloc.py [--part torch train sft] [--train-steps 3] [--sft-steps 5]
                                    [--out outputs/bench/cpu_malloc] [--tokens 440] [--reps 8]

By default glibc maps every block over 32 MB fresh from the kernel and unmaps it on free. One row of the
embedded SmolLM2 makes several such blocks (its logits, tokens x 49k vocabulary, in bf16 and fp32, and their
gradients), so every row pays tens of thousands of page faults, each page zeroed by the kernel. With
`MALLOC_MMAP_MAX_=0` and a 64 GB trim threshold (`sage_rl.train.sft.SFT_MALLOC_ENV`) every block comes from the
heap and freed memory stays there for the next row. `sage-rl warmstart` starts verl's SFT trainer with it on
CPU; GRPO's Ray workers run with glibc's defaults (what `train` measured). Baseline: `GLIBC_TUNABLES=` (empty),
which also tells `sage-rl warmstart` to leave malloc alone.

`torch`: `gradient_sync.py`'s rows outside verl (FSDP2 as verl wraps it, gradients reduced once) in a process of
its own under each setting; seconds per 1,000 tokens and the process's peak memory. `train`: the quickstart's
training stage (`grpo_search_smollm2_cpu` on the folder's warm-start and data) under each setting;
`update_actor` per 1,000 trained tokens, since sampled trajectories differ in length from run to run.
`sft`: the quickstart's warm-start stage for N steps under each (it redoes the folder's warm-start, so `train`
runs first); the losses should agree. Not a test: numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from gradient_sync import train_line  # noqa: E402
from packed_sequences import compare, sft_line, sft_run, train_run  # noqa: E402

from sage_rl.train.sft import SFT_MALLOC_ENV  # noqa: E402

SETTINGS = {  # name -> (a tag, the run's environment: None unsets); the first is the ratios' baseline
    "glibc's defaults (GLIBC_TUNABLES=)": ("glibc", {"GLIBC_TUNABLES": "", **dict.fromkeys(SFT_MALLOC_ENV)}),
    "heap only (SFT_MALLOC_ENV)": ("heap", {"GLIBC_TUNABLES": None, **SFT_MALLOC_ENV}),
}
TORCH_VARIANT = "FSDP2, reduced once"  # gradient_sync.TORCH_VARIANTS: verl's wrapping, the CPU recipes' reduction


@contextlib.contextmanager
def environment(env: dict[str, str | None]) -> Iterator[None]:
    """`env` on top of this process's environment (which child processes inherit), restored after."""
    with mock.patch.dict(os.environ, {key: value for key, value in env.items() if value is not None}):
        for key in [key for key, value in env.items() if value is None]:
            os.environ.pop(key, None)
        yield


def torch_part(tokens: int, reps: int) -> None:
    script = ROOT / "benchmarks" / "gradient_sync.py"
    # gradient_sync's one-variant mode prints the seconds per row; then the child's peak memory (KB)
    code = (f"import resource, runpy, sys; sys.argv = {[str(script), '--torch-variant', TORCH_VARIANT]!r} + "
            f"['--tokens', '{tokens}', '--reps', '{reps}']; runpy.run_path(sys.argv[0], run_name='__main__'); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    results = {}
    for name, (_, env) in SETTINGS.items():
        with environment(env):
            out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
        seconds, peak_kb = out.split()[-2:]
        results[name] = (1000 * float(seconds) / tokens, int(peak_kb) / 1e6)
        print(f"torch, {name}: done", file=sys.stderr, flush=True)
    base = next(iter(results.values()))[0]
    for name, (per_k, peak_gb) in results.items():
        print(f"torch, {name}: {per_k:.2f} s per 1k tokens (ratio {per_k / base:.3f}; {tokens}-token rows, "
              f"{TORCH_VARIANT}); peak memory {peak_gb:.2f} GB")


def under(run, sft: bool = False):  # noqa: ANN001, ANN201 - a packed_sequences run function
    """`run` under a setting's environment. The warm-start's cache key covers verl's settings, not the
    environment, so each setting's SFT gets an experiment name of its own (else the second finds the first)."""
    def run_with_env(setting: tuple[str, dict[str, str | None]], steps: int, out: Path) -> dict:
        tag, env = setting
        with environment(env):
            return run([f"trainer.experiment_name=cpu_malloc_{tag}"] if sft else [], steps, out)
    return run_with_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", nargs="+", choices=["torch", "train", "sft"], default=["torch", "train", "sft"])
    parser.add_argument("--tokens", type=int, default=440, help="`torch`: the row's length")
    parser.add_argument("--reps", type=int, default=8, help="`torch`: timed rows per setting")
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--sft-steps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/cpu_malloc"))
    args = parser.parse_args()
    if "torch" in args.part:
        torch_part(args.tokens, args.reps)
    if "train" in args.part:  # first: `sft` redoes the folder's warm-start
        compare("train", SETTINGS, under(train_run), train_line, args.train_steps, args.out)
    if "sft" in args.part:
        compare("sft", SETTINGS, under(sft_run, sft=True), sft_line, args.sft_steps, args.out)


if __name__ == "__main__":
    main()
