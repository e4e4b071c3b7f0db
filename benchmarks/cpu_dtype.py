"""bf16 against fp32 matrix maths on this CPU: why the CPU recipes pick `${sage_rl.cpu_dtype:}`.

Times a SmolLM2-135M-sized MLP matmul (512 tokens x 576 -> 1536) and a Linear forward+backward in both dtypes,
side by side, and prints the slowdown of bf16 with the dtype `sage_rl.serving.cpu_dtype` picks here. On CPUs
with AMX or AVX512-BF16 bf16 is native; on plain AVX2 it is emulated.

    python benchmarks/cpu_dtype.py [--threads 2] [--repeats 20]
"""

from __future__ import annotations

import argparse
import time

import torch

from sage_rl.serving import cpu_dtype


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats


def measure(dtype: torch.dtype, repeats: int) -> tuple[float, float]:
    """Seconds per matmul and per Linear forward+backward in `dtype`."""
    a, b = torch.randn(512, 576, dtype=dtype), torch.randn(576, 1536, dtype=dtype)
    x = torch.randn(512, 576, dtype=dtype, requires_grad=True)
    layer = torch.nn.Linear(576, 1536).to(dtype)
    return timed(lambda: a @ b, repeats), timed(lambda: layer(x).sum().backward(), max(1, repeats // 4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    (mm32, fb32), (mm16, fb16) = (measure(dtype, args.repeats) for dtype in (torch.float32, torch.bfloat16))
    print(f"matmul 512x576x1536: fp32 {mm32 * 1e3:.1f} ms, bf16 {mm16 * 1e3:.1f} ms = bf16 {mm16 / mm32:.2f}x "  # noqa: T201
          f"fp32's time; Linear fwd+bwd: fp32 {fb32 * 1e3:.1f} ms, bf16 {fb16 * 1e3:.1f} ms = {fb16 / fb32:.2f}x")
    print(f"sage_rl.cpu_dtype here: {cpu_dtype()} ({args.threads} threads, torch {torch.__version__})")  # noqa: T201


if __name__ == "__main__":
    main()
