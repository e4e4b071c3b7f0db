"""Throughput and latency of the retrieval server vs the in-process limit and a naive per-request server.

    .venv/bin/python benchmarks/retrieval_throughput.py [--corpus PATH | --index DIR] [--queries 512]

All three are measured in one run on the same machine, index (MiniLM, FAISS Flat) and HotpotQA questions:
  limit    encoder+FAISS in this process at its best batch size (no HTTP)
  naive    the same server with --max-batch 1: each request encoded and searched alone, one at a time
  sr1      a server built like Search-R1's (benchmarks/_searchr1_style_server.py): a synchronous endpoint,
           each request encoded and searched alone in a thread pool, concurrently with the others
  server   the same server with cross-request micro-batching (defaults)
Load: 1, 16, 64 concurrent clients sending one query per request, and 4 clients sending 32-query batches.
These servers run without the query cache (`--batching.cache-queries 0`), since every load level resends the
same questions. Then GRPO's load: each question sent by `--group` clients at once (a group's rollouts opening
with the same search), 64 in flight, to the default server: exact copies (shared: searched once) against copies
made distinct by trailing spaces (the same encoder work, each searched).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import httpx
import numpy as np
from _retrieval_common import COMBINED_CORPUS, ensure_index, load_questions, start_server

from retrieval_server.config import EncoderConfig
from retrieval_server.encoder import load_encoder
from retrieval_server.index import Manifest, load_faiss_index

TOPK = 3


def in_process_rates(enc, index, queries: list[str]) -> dict[int, float]:
    """Queries/s of encode+search in this process, by batch size."""
    rates = {}
    for bs in (16, 32, 64, 128, 256):
        t = time.perf_counter()
        for i in range(0, len(queries), bs):
            index.search(enc.encode_queries(queries[i : i + bs]), TOPK)
        rates[bs] = len(queries) / (time.perf_counter() - t)
    return rates


async def run_load(url: str, queries: list[str], concurrency: int, per_request: int) -> dict:
    """Send `queries` in requests of `per_request` queries from `concurrency` clients; ids per query."""
    requests = [queries[i : i + per_request] for i in range(0, len(queries), per_request)]
    latencies, ids = [], [None] * len(requests)
    next_req = 0
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def client() -> None:
            nonlocal next_req
            while next_req < len(requests):
                i = next_req
                next_req += 1
                t = time.perf_counter()
                payload = {"queries": requests[i], "topk": TOPK, "return_scores": True}
                async with session.post(f"{url}/retrieve", json=payload) as r:
                    body = await r.json()
                    assert r.status == 200, body
                latencies.append(time.perf_counter() - t)
                ids[i] = [[h["document"]["id"] for h in q] for q in body["result"]]

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    lat = np.asarray(latencies)
    return {
        "qps": len(queries) / wall,
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
        "ids": [q for r in ids for q in r],
    }


def start_searchr1_style(index: Path) -> tuple[subprocess.Popen, str]:
    """The Search-R1-style fixture server on a free port, once its /health answers."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = Path(__file__).with_name("_searchr1_style_server.py")
    proc = subprocess.Popen([sys.executable, str(script), str(index), str(port)])
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError(f"Search-R1-style server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.5)
    raise RuntimeError("Search-R1-style server did not start")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", type=Path, default=COMBINED_CORPUS)
    p.add_argument("--index", type=Path, help="prebuilt index dir (otherwise built+cached from --corpus)")
    p.add_argument("--queries", type=int, default=512, help="queries per load level")
    p.add_argument("--torch-threads", type=int, default=1, help="same for limit, naive and server; 0 = torch default")
    p.add_argument("--max-wait-ms", type=float, help="server batching wait (default: the server's)")
    p.add_argument("--group", type=int, default=4, help="rollouts per question in the GRPO load (verl's rollout.n)")
    p.add_argument(
        "--naive-torch-threads",
        type=int,
        help="torch threads of the naive server (default: same as --torch-threads; 0 = torch's default, "
        "i.e. how Search-R1's server runs)",
    )
    args = p.parse_args()
    index = ensure_index(args.corpus, args.index)
    queries = [q["question"] for q in load_questions()][: args.queries]
    print(f"index {index} ({Manifest.read(index).num_docs} passages), {len(queries)} queries, cpus {os.cpu_count()}")
    print(f"torch threads: limit/server {args.torch_threads}, naive {args.naive_torch_threads or 'default'}")
    print(f"load average before: {os.getloadavg()[0]:.2f} (> 0.5 means another workload shares the cores)")

    m = Manifest.read(index).dense
    enc_cfg = EncoderConfig(model=m.model, max_seq_length=m.max_seq_length, torch_threads=args.torch_threads or None)
    enc, faiss_index = load_encoder(enc_cfg), load_faiss_index(index, 128, 16)
    enc.encode_queries(queries[:64])  # warm up
    rates_before = in_process_rates(enc, faiss_index, queries)
    print("in-process encoder+FAISS q/s by batch size:", {k: round(v, 1) for k, v in rates_before.items()})

    levels = [(1, 1), (16, 1), (64, 1), (4, 32)]
    results: dict[str, dict] = {}
    server_flags = [] if args.max_wait_ms is None else ["--max-wait-ms", str(args.max_wait_ms)]
    no_cache = ["--batching.cache-queries", "0"]
    naive_threads = args.torch_threads if args.naive_torch_threads is None else args.naive_torch_threads
    for name, extra in (("naive", ["--max-batch", "1", "--max-wait-ms", "0", *no_cache]),
                        ("server", [*server_flags, *no_cache])):
        n_threads = naive_threads if name == "naive" else args.torch_threads
        threads = ["--torch-threads", str(n_threads)] if n_threads else []
        proc, url = start_server("--index", str(index), "--max-topk", "100", *threads, *extra)
        try:
            asyncio.run(run_load(url, queries[:32], 4, 1))  # warm up
            for conc, per in levels:
                n = len(queries) if (name == "server" or conc > 1) else len(queries) // 2
                before = httpx.get(f"{url}/health").json()
                results[f"{name}/{conc}x{per}"] = res = asyncio.run(run_load(url, queries[:n], conc, per))
                after = httpx.get(f"{url}/health").json()
                res["batch"] = (after["queries"] - before["queries"]) / max(after["batches"] - before["batches"], 1)
        finally:
            proc.terminate()
            proc.wait()
    # GRPO's load: a question's rollouts are sampled together and open with the same search (the warm-started
    # solver searches the question itself), so each question arrives `--group` times at once. Side by side on
    # one server: the copies made distinct by trailing spaces (the same encoder work, as a server that does not
    # share repeats does it: MiniLM's tokenizer drops the spaces) against exact copies.
    grouped = [q for q in queries for _ in range(args.group)]
    spaced = [q + " " * (j + 1) for q in queries for j in range(args.group)]
    threads = ["--torch-threads", str(args.torch_threads)] if args.torch_threads else []
    proc, url = start_server("--index", str(index), "--max-topk", "100", *threads, *server_flags)
    try:
        asyncio.run(run_load(url, [f"warm-up {q}" for q in queries[:32]], 4, 1))
        for name, load in (("grpo-apart", spaced), ("grpo-shared", grouped)):
            before = httpx.get(f"{url}/health").json()
            results[name] = res = asyncio.run(run_load(url, load, 64, 1))
            after = httpx.get(f"{url}/health").json()
            res["searched"] = (after["searched"] - before["searched"]) / (after["queries"] - before["queries"])
    finally:
        proc.terminate()
        proc.wait()
    proc, url = start_searchr1_style(index)
    try:
        asyncio.run(run_load(url, queries[:32], 4, 1))  # warm up
        for conc, per in levels:
            n = len(queries) if conc > 1 else len(queries) // 2
            results[f"sr1/{conc}x{per}"] = asyncio.run(run_load(url, queries[:n], conc, per))
    finally:
        proc.terminate()
        proc.wait()

    print(
        f"\n{'load':<22}{'naive q/s':>10}{'p50':>8}{'p99':>8}{'sr1 q/s':>9}{'p99':>8}{'server q/s':>12}{'p50':>8}"
        f"{'p99':>8}{'vs naive':>9}{'vs sr1':>8}{'avg batch':>10}"
    )
    for conc, per in levels:
        a, c, b = results[f"naive/{conc}x{per}"], results[f"sr1/{conc}x{per}"], results[f"server/{conc}x{per}"]
        label = f"{conc} clients x {per} q"
        print(
            f"{label:<22}{a['qps']:>10.1f}{a['p50']:>8.3f}{a['p99']:>8.3f}{c['qps']:>9.1f}{c['p99']:>8.3f}"
            f"{b['qps']:>12.1f}{b['p50']:>8.3f}{b['p99']:>8.3f}{b['qps'] / a['qps']:>8.2f}x{b['qps'] / c['qps']:>7.2f}x"
            f"{b['batch']:>10.1f}"
        )
    # Measured again after the servers: on a shared machine the best of both passes is the fairer limit.
    rates_after = in_process_rates(enc, faiss_index, queries)
    print("in-process q/s by batch size, second pass:", {k: round(v, 1) for k, v in rates_after.items()})
    rates = {bs: max(rates_before[bs], rates_after[bs]) for bs in rates_before}
    best_bs = max(rates, key=rates.get)
    limit = rates[best_bs]
    s64, n64, r64 = results["server/64x1"], results["naive/64x1"], results["sr1/64x1"]
    same = np.mean([x == y for x, y in zip(s64["ids"], n64["ids"], strict=True)])
    print(f"\nin-process limit (batch {best_bs}): {limit:.1f} q/s")
    print(f"server @64 single-query clients / limit  = {s64['qps'] / limit:.2f}   (target >= 0.85)")
    print(f"server @64 / in-process at batch 64      = {s64['qps'] / rates[64]:.2f}   (64 clients form batches <= 64)")
    print(f"server @64 / naive @64                    = {s64['qps'] / n64['qps']:.2f}x  (target >= 3.5x)")
    print(f"server @64 / Search-R1-style @64          = {s64['qps'] / r64['qps']:.2f}x  (target >= 3.5x; "
          f"Search-R1-style p99 {r64['p99']:.3f} s)")
    print(f"server @64 p99                            = {s64['p99']:.3f} s (target < 1 s)")
    print(f"identical top-{TOPK} ids, server vs naive   = {same:.4f} of {len(s64['ids'])} queries")
    same_sr1 = np.mean([x == y for x, y in zip(s64["ids"], r64["ids"], strict=True)])
    print(f"identical top-{TOPK} ids, server vs sr1     = {same_sr1:.4f} of {len(s64['ids'])} queries")
    apart, shared = results["grpo-apart"], results["grpo-shared"]
    same_grpo = np.mean([x == y for x, y in zip(apart["ids"], shared["ids"], strict=True)])
    print(f"\nGRPO load ({len(queries)} questions x {args.group} rollouts, 64 in flight, one query per request):")
    for name, r in (("copies kept apart", apart), ("exact copies     ", shared)):
        print(f"  {name}: {r['qps']:.1f} q/s, p50 {r['p50']:.3f} s, p99 {r['p99']:.3f} s, "
              f"searched {r['searched']:.3f} of the queries")
    print(f"  repeats shared / kept apart = {shared['qps'] / apart['qps']:.2f}x q/s; identical top-{TOPK} ids "
          f"{same_grpo:.4f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
