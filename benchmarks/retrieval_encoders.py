"""Query/passage encoder backends side by side: speed, agreement with fp32 PyTorch, and retrieval quality.

    .venv/bin/python benchmarks/retrieval_encoders.py [--threads 2] [--questions 512] [--busy 2]

For each backend and precision the server can run (torch fp32; ONNX Runtime fp32 and int8; OpenVINO fp32 and
bf16), in one process on the same texts:
  q/s b64, b1   HotpotQA questions encoded per second at batch 64 (the in-process limit the server's
                micro-batches approach) and one at a time (an idle server); best of two passes
  p/s b64       embedded-corpus passages (256-token cap) per second at batch 64: what an index build runs
  cos min/mean  cosine of each question's embedding to torch fp32's
  top3 same     share of questions whose top-3 passages equal torch fp32's
  recall@10     gold-paragraph recall@10 (all embedded HotpotQA questions) with these query vectors
                against the same Flat index of the embedded corpus (built once, torch fp32)
Targets (issue #10): best backend >= 2x torch fp32 at batch 64; recall@10 within 1 point of fp32.

Then, for torch fp32 and the default backend with all cores and with 1 thread, single-query latency (p50, p95
over 60 questions) alone and beside `--busy` processes that each spin a core: what a retrieval server sees
when it shares a CPU box with vLLM and training (the main job's case; `index.server_threads` follows it).
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
from _retrieval_common import HOTPOT_CORPUS, ensure_index, gold_recall, load_questions

from retrieval_server.config import EncoderConfig
from retrieval_server.corpus import DocStore
from retrieval_server.encoder import load_encoder
from retrieval_server.index import load_faiss_index

RUNTIMES = [("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"), ("openvino", "bf16")]


def rate(encode, texts: list[str], batch: int) -> float:
    """Texts per second, best of two passes (a shared box has noisy neighbours)."""
    best = 0.0
    for _ in range(2):
        start = time.perf_counter()
        for i in range(0, len(texts), batch):
            encode(texts[i:i + batch])
        best = max(best, len(texts) / (time.perf_counter() - start))
    return best


def fp32_index() -> tuple:
    """The embedded corpus in a Flat index built with torch fp32 (cached under the user cache)."""
    out = ensure_index(HOTPOT_CORPUS, None, encoder=EncoderConfig(backend="torch"))
    return load_faiss_index(out, 128, 16), DocStore(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2, help="intra-op threads of every backend")
    p.add_argument("--questions", type=int, default=512, help="questions timed per pass")
    p.add_argument("--busy", type=int, default=2, help="spinning processes for the contention table")
    args = p.parse_args()
    questions = load_questions()
    texts = [q["question"] for q in questions]
    with gzip.open(HOTPOT_CORPUS, "rt") as f:
        passages = [json.loads(line)["contents"] for line in itertools.islice(f, 256)]
    index, store = fp32_index()
    print(f"{len(questions)} questions, {store.__len__()} passages; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cpus, {args.threads} threads; load average {os.getloadavg()[0]:.2f}\n")
    print(f"{'backend':<10}{'precision':<10}{'q/s b64':>9}{'b1':>7}{'p/s b64':>9}{'x torch b64':>12}"
          f"{'cos min':>9}{'mean':>8}{'top3 same':>10}{'recall@10':>10}")
    ref_emb = ref_top = base = None
    for backend, precision in RUNTIMES:
        enc = load_encoder(EncoderConfig(backend=backend, precision=precision, torch_threads=args.threads))
        enc.encode_queries(texts[:64])  # warm up
        q64 = rate(enc.encode_queries, texts[:args.questions], 64)
        q1 = rate(enc.encode_queries, texts[:64], 1)
        p64 = rate(enc.encode_passages, passages, 64)
        emb = np.concatenate([enc.encode_queries(texts[i:i + 64]) for i in range(0, len(texts), 64)])
        _, rows = index.search(emb, 10)
        if ref_emb is None:
            ref_emb, ref_top, base = emb, rows[:, :3], q64
        cos = (emb * ref_emb).sum(axis=1)
        same = float(np.mean([set(a) == set(b) for a, b in zip(rows[:, :3], ref_top, strict=True)]))
        _, r10, _ = gold_recall(questions, [[store.get(int(r)).id for r in row if r >= 0] for row in rows])
        print(f"{backend:<10}{enc.precision:<10}{q64:>9.1f}{q1:>7.1f}{p64:>9.1f}{q64 / base:>11.2f}x"
              f"{cos.min():>9.4f}{cos.mean():>8.4f}{same:>10.3f}{r10:>10.3f}", flush=True)
    contention(texts[:60], args.busy)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


def contention(texts: list[str], busy: int) -> None:
    """Single-query latency per runtime and thread count, with the cores free and with `busy` spinning processes."""
    import torch

    runtimes = {(b, t): load_encoder(EncoderConfig(backend=b, torch_threads=t))
                for b in ("torch", "auto") for t in (None, 1)}
    print(f"\nsingle-query latency, ms (p50 / p95 over {len(texts)} questions); busy = spinning processes")
    print(f"{'runtime':<16}{'threads':<9}{'free cores':>14}{f'{busy} busy':>14}")
    rows: dict = {key: [] for key in runtimes}
    for n in (0, busy):
        spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
        try:
            time.sleep(1)
            for (backend, threads), enc in runtimes.items():
                torch.set_num_threads(threads or os.cpu_count())  # process-wide in torch: set per measurement
                enc.encode_queries(texts[:5])
                times = []
                for text in texts:
                    start = time.perf_counter()
                    enc.encode_queries([text])
                    times.append(1000 * (time.perf_counter() - start))
                rows[(backend, threads)].append(f"{np.median(times):.1f} / {np.percentile(times, 95):.1f}")
        finally:
            for proc in spinners:
                proc.kill()
    for (backend, threads), cells in rows.items():
        enc = runtimes[(backend, threads)]
        print(f"{enc.backend + ' ' + enc.precision:<16}{threads or 'all':<9}{cells[0]:>14}{cells[1]:>14}")


if __name__ == "__main__":
    main()
