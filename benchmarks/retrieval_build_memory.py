"""Peak build RSS for two corpus sizes side by side: is the builder's memory flat in the corpus size?

    .venv/bin/python benchmarks/retrieval_build_memory.py [--sizes 20000 80000] [--model hashing-64] [--shards 0]

Each build runs in its own subprocess on a synthetic corpus (Zipf-distributed words, ~80 per passage, so
the BM25 vocabulary grows as on real text) and reports its own peak RSS (`ru_maxrss`), the RSS just before
the build (Python + FAISS + bm25s imported, encoder loaded) and the size of the index files it wrote. The
builder's overhead is peak - before - index: the part that must not grow with the corpus. The FAISS
index and the BM25 matrix are the index itself (a Flat index is N x dim x 4 bytes by definition).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

WORDS_PER_PASSAGE = 80
VOCAB = 200_000


def synthetic_corpus(path: Path, n: int, seed: int = 0) -> Path:
    """`n` Search-R1-style rows `{"id", "contents": '"Title"\\ntext'}` with Zipf-distributed words."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for i in range(n):
            ids = np.minimum(rng.zipf(1.2, WORDS_PER_PASSAGE), VOCAB)
            words = " ".join(f"w{j}" for j in ids)
            f.write(json.dumps({"id": str(i), "contents": f'"Title {i}"\n{words}'}) + "\n")
    return path


def _index_bytes(out: Path) -> int:
    """Bytes of the index proper: FAISS file + BM25 folder (the doc store is mmapped, never resident)."""
    files = [out / "dense.faiss", *(out / "bm25").glob("*")]
    return sum(f.stat().st_size for f in files if f.is_file())


def child(corpus: Path, out: Path, model: str, shards: int, bm25: bool) -> None:
    """Build in this process and print its figures as one JSON line."""
    from retrieval_server.build import build_index
    from retrieval_server.config import BuildConfig, EncoderConfig
    from retrieval_server.encoder import load_encoder

    cfg = BuildConfig(corpus=corpus, out=out, encoder=EncoderConfig(model=model, torch_threads=1), bm25=bm25,
                      shards=shards)  # fmt: skip
    encoder = load_encoder(cfg.encoder)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report = build_index(cfg, encoder=encoder, show_progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"before_mb": before, "peak_mb": peak, "index_mb": _index_bytes(out) / 2**20,
                      "seconds": report.seconds}))  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs=2, default=[20_000, 80_000])
    p.add_argument("--model", default="hashing-64", help="'hashing-<dim>' keeps the encoder out of the figure")
    p.add_argument("--shards", type=int, default=0, help="> 0: the sharded (resumable) build, in process")
    p.add_argument("--no-bm25", action="store_true")
    p.add_argument("--child", nargs=2, type=Path, metavar=("CORPUS", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(*args.child, model=args.model, shards=args.shards, bm25=not args.no_bm25)
        return
    tmp = Path(tempfile.mkdtemp(prefix="rs-build-mem-"))
    print(f"model {args.model}, shards {args.shards}, bm25 {not args.no_bm25}; load average {os.getloadavg()[0]:.2f}")
    print(f"{'passages':>9} {'before MB':>10} {'peak MB':>9} {'index MB':>9} {'overhead MB':>12} {'seconds':>8}")
    rows = []
    for n in args.sizes:
        corpus = synthetic_corpus(tmp / f"c{n}.jsonl", n)
        cmd = [sys.executable, __file__, "--child", str(corpus), str(tmp / f"i{n}"), "--model", args.model,
               "--shards", str(args.shards)] + (["--no-bm25"] if args.no_bm25 else [])  # fmt: skip
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        r["overhead_mb"] = r["peak_mb"] - r["before_mb"] - r["index_mb"]
        rows.append(r)
        print(f"{n:>9} {r['before_mb']:>10.0f} {r['peak_mb']:>9.0f} {r['index_mb']:>9.1f} "
              f"{r['overhead_mb']:>12.0f} {r['seconds']:>8.1f}")  # fmt: skip
    (a, b), (na, nb) = rows, args.sizes
    print(f"peak RSS grows {b['peak_mb'] - a['peak_mb']:.0f} MB for {nb - na} more passages; "
          f"overhead beyond the index grows {b['overhead_mb'] - a['overhead_mb']:.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
