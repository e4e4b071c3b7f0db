"""Index build speed vs the encoder's raw throughput, and peak memory.

    .venv/bin/python benchmarks/retrieval_build.py [--corpus PATH] [--passages 1000]

Both are measured in this process on the same first N passages with the same loaded model:
  raw    the encoder (--backend/--precision, default the server's) over the whole list (sorted by length, batch 64)
  build  retrieval_server's streaming build (doc store + FAISS Flat + BM25 + manifest, no cache)
Peak memory is this process's max RSS (model included), printed before and after the build.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import os
import resource
import tempfile
import time
from pathlib import Path

from _retrieval_common import HOTPOT_CORPUS

from retrieval_server.build import build_index
from retrieval_server.config import BuildConfig, EncoderConfig
from retrieval_server.corpus import iter_corpus
from retrieval_server.encoder import load_encoder


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", type=Path, default=HOTPOT_CORPUS)
    p.add_argument("--passages", type=int, default=1000)
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--backend", default="auto", help="encoder backend (torch, onnx, openvino; auto = the default)")
    p.add_argument("--precision", default="auto", help="encoder precision (fp32, int8, bf16; auto = the backend's)")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rs-build-bench-"))
    corpus = tmp / "corpus.jsonl.gz"
    with gzip.open(args.corpus, "rb") as src, gzip.open(corpus, "wb") as dst:
        dst.writelines(itertools.islice(src, args.passages))
    enc_cfg = EncoderConfig(torch_threads=args.torch_threads, backend=args.backend, precision=args.precision)
    enc = load_encoder(enc_cfg)
    print(f"encoder: {enc.backend} {enc.precision}, {args.torch_threads} threads")
    texts = [p.contents for p in iter_corpus(corpus)]
    enc.encode_passages(texts[:64])  # warm up
    print(f"{len(texts)} passages from {args.corpus}; load average {os.getloadavg()[0]:.2f}; rss {max_rss_mb():.0f} MB")

    def raw_rate() -> float:
        t = time.perf_counter()
        enc.encode_passages(texts)
        return len(texts) / (time.perf_counter() - t)

    # raw, build, raw: a shared machine drifts, so the build is compared with the mean of both raw runs.
    raw_before = raw_rate()
    rss_before = max_rss_mb()
    report = build_index(BuildConfig(corpus=corpus, out=tmp / "index", encoder=enc_cfg), encoder=enc)
    built = len(texts) / report.seconds
    raw_after = raw_rate()
    raw = (raw_before + raw_after) / 2
    print(f"raw encoder        {raw:8.1f} passages/s (before {raw_before:.1f}, after {raw_after:.1f})")
    print(f"build (end to end) {built:8.1f} passages/s  = {built / raw:.2f} of raw (target >= 0.90)")
    print(f"peak RSS           {max_rss_mb():8.0f} MB (before build {rss_before:.0f} MB; model + torch included)")
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
