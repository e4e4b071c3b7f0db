"""Memory-lean FAISS index types side by side: RAM, build time, recall@10 against Flat, latency (#9, #10).

    .venv/bin/python benchmarks/index_types.py                          # 100k synthetic x 384, ~2-3 min on 2 cores
    .venv/bin/python benchmarks/index_types.py --vectors 1000000        # the documented 1M run
    .venv/bin/python benchmarks/index_types.py --corpus embedded        # MiniLM on the 10,787 HotpotQA passages
    .venv/bin/python benchmarks/index_types.py --types Flat HNSW32 IVF1024,PQ48 --ef-search 64 --nprobe 8 32

Every index is made the way `python -m retrieval_server build --index-type T` makes it: `new_faiss_index`
on the factory string after `fit_ivf_nlist`, trained on the first `--ivf-train-size` vectors (the build's
`ivf_train_size`), then every vector added; search parameters are set with the same
`faiss.ParameterSpace().set_index_parameter` call as `load_faiss_index`. The server sets efSearch
(`--hnsw-ef-search`, default 128) and nprobe (`--ivf-nprobe`, default 16); each knob is measured at the
FAISS default (efSearch 16, nprobe 1), the server default and the values given. FAISS' factory turns on
polysemous training for PQ (~1-2 s per sub-quantizer on this box, whatever n); search never uses it, so
`new_faiss_index` switches it off, and PQ train times here are the build's.

Per row: bytes of `faiss.serialize_index` (what `dense.faiss` holds and what FAISS keeps in RAM; the server
memory-maps Flat, so there it sits in the page cache), bytes per vector, build seconds (train + add),
recall@10 = share of Flat's top 10 found in the type's top 10 over held-out queries, p50 latency of single
queries and time per query at batch 64, on `--threads` OpenMP threads. With `--corpus embedded` the
queries are the 1,100 HotpotQA questions and gold-paragraph recall@10 is reported as retrieval_quality.py
computes it. Then RAM projected to wiki-18 with e5-base-v2 (21M x 768) from each type's storage formula,
next to Search-R1's reported figures.

Synthetic vectors: a Gaussian mixture of unit centres; each point is its centre plus noise whose variance
falls as 1/j over a random rotation of the dimensions (participation ratio ~26 at dim 384: text
embeddings are not isotropic), unit-normalised; queries are fresh draws from the same mixture. Seeded.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import faiss
import numpy as np

from retrieval_server.config import BuildConfig, ServeConfig
from retrieval_server.index import fit_ivf_nlist, new_faiss_index

WIKI18_PASSAGES = 21_015_324  # rows of Search-R1's wiki-18.jsonl
WIKI18_DIM = 768  # intfloat/e5-base-v2
FAISS_DEFAULT_EF_SEARCH = 16  # IndexHNSW's efSearch until set
FAISS_DEFAULT_NPROBE = 1  # IndexIVF's nprobe until set
SERVER_EF_SEARCH = ServeConfig.model_fields["hnsw_ef_search"].default
SERVER_NPROBE = ServeConfig.model_fields["ivf_nprobe"].default
TRAIN_SIZE = BuildConfig.model_fields["ivf_train_size"].default
SEARCH_R1_FLAT = "Search-R1: host RAM +62 GB loading it, 80 GB GPU enough to serve it (#54); OOM on GPU load (#57)"


@dataclass(frozen=True)
class Row:
    """One index type at one search setting."""

    index_type: str  # factory string as built (IVF list count after fit_ivf_nlist)
    setting: str  # e.g. "nprobe=16 (server)"; "" for types without a search knob
    nbytes: int  # len(faiss.serialize_index(index))
    n: int
    train_s: float
    build_s: float  # train + add
    recall10: float  # vs Flat's top 10
    p50_batch1_ms: float
    batch64_ms_per_query: float
    top10: np.ndarray = field(repr=False, compare=False)  # (queries, 10) row ids, -1 = none


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered_vectors(n: int, dim: int, clusters: int, seed: int, stream: int, spread: float = 1.0) -> np.ndarray:
    """`n` unit vectors from a seeded Gaussian mixture; `stream` picks an independent draw (corpus vs queries)."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((clusters, dim), dtype=np.float32))
    rotation = np.linalg.qr(rng.standard_normal((dim, dim)))[0].astype(np.float32)
    scale = 1 / np.sqrt(np.arange(1, dim + 1, dtype=np.float32))  # variance ~ 1/j: a decaying spectrum
    scale *= spread / np.linalg.norm(scale)  # noise norm ~ spread: cos(point, centre) ~ 0.7 at spread 1
    rng = np.random.default_rng([seed, stream])
    out = np.empty((n, dim), np.float32)
    for i in range(0, n, 65_536):  # chunks keep float temporaries small at 1M x 768
        m = min(65_536, n - i)
        noise = (rng.standard_normal((m, dim), dtype=np.float32) * scale) @ rotation
        out[i : i + m] = _unit(centres[rng.integers(clusters, size=m)] + noise)
    return out


def default_types(n: int, dim: int, train_size: int = TRAIN_SIZE) -> list[str]:
    """Flat, HNSW32, IVF-PQ (8 dims per code byte), IVF-SQ8 and SQ8, IVF lists ~4 sqrt(n) as the build fits them."""
    nlist = 2 ** round(np.log2(4 * np.sqrt(n)))
    ivf = fit_ivf_nlist(f"IVF{nlist},Flat", min(n, train_size)).split(",")[0]
    return ["Flat", "HNSW32", f"{ivf},PQ{max(dim // 8, 1)}", f"{ivf},SQ8", "SQ8"]


def _settings(index: faiss.Index, ef_search: list[int], nprobe: list[int]) -> list[tuple[str, int]]:
    name = type(index).__name__  # the same test load_faiss_index makes
    if "HNSW" in name:
        return [("efSearch", v) for v in sorted({FAISS_DEFAULT_EF_SEARCH, SERVER_EF_SEARCH, *ef_search})]
    if "IVF" in name:
        return [("nprobe", v) for v in sorted({FAISS_DEFAULT_NPROBE, SERVER_NPROBE, *nprobe})]
    return [("", 0)]


def _label(knob: str, value: int) -> str:
    if not knob:
        return ""
    notes = []
    if value == {"efSearch": FAISS_DEFAULT_EF_SEARCH, "nprobe": FAISS_DEFAULT_NPROBE}[knob]:
        notes.append("FAISS default")
    if value == {"efSearch": SERVER_EF_SEARCH, "nprobe": SERVER_NPROBE}[knob]:
        notes.append("server")
    return f"{knob}={value}" + (f" ({', '.join(notes)})" if notes else "")


def _search(index: faiss.Index, xq: np.ndarray, k: int, latency_queries: int) -> tuple[np.ndarray, float, float]:
    """(top-k ids, p50 ms of single queries, ms per query at batch 64)."""
    index.search(xq[:1], k)  # warm-up
    t = time.perf_counter()
    ids = np.vstack([index.search(xq[i : i + 64], k)[1] for i in range(0, len(xq), 64)])
    batch64 = (time.perf_counter() - t) / len(xq) * 1e3
    single = []
    for q in xq[:latency_queries]:
        t = time.perf_counter()
        index.search(q[None], k)
        single.append(time.perf_counter() - t)
    return ids, float(np.median(single)) * 1e3, batch64


def recall_at_k(ids: np.ndarray, ref: np.ndarray) -> float:
    """Mean share of each reference row's ids found in the same row of `ids` (-1 never matches)."""
    k = ref.shape[1]
    return float(np.mean([len(set(a[a >= 0]) & set(b)) / k for a, b in zip(ids, ref, strict=True)]))


def measure(
    xb: np.ndarray,
    xq: np.ndarray,
    index_types: list[str],
    ef_search: Sequence[int] = (),
    nprobe: Sequence[int] = (),
    train_size: int = TRAIN_SIZE,
    latency_queries: int = 200,
    k: int = 10,
) -> list[Row]:
    """Build each index type over `xb` as the server's build does, then search `xq` at each knob setting.

    Flat is measured first (added if missing) and its top k is the reference for every recall.
    """
    xb, xq = np.ascontiguousarray(xb, np.float32), np.ascontiguousarray(xq, np.float32)
    n, dim = xb.shape
    rows: list[Row] = []
    ref = None
    for requested in ["Flat", *[t for t in index_types if t != "Flat"]]:
        index_type = fit_ivf_nlist(requested, min(n, train_size))
        t = time.perf_counter()
        index = new_faiss_index(dim, index_type)
        if not index.is_trained:
            index.train(xb[:train_size])
        train_s = time.perf_counter() - t
        index.add(xb)
        build_s = time.perf_counter() - t
        nbytes = int(faiss.serialize_index(index).nbytes)
        print(f"[{index_type}] built in {build_s:.0f} s, searching ...", file=sys.stderr, flush=True)  # progress
        for knob, value in _settings(index, list(ef_search), list(nprobe)):
            if knob:
                faiss.ParameterSpace().set_index_parameter(index, knob, value)
            ids, p50, batch64 = _search(index, xq, k, latency_queries)
            ref = ids if ref is None else ref
            recall = recall_at_k(ids, ref)
            rows.append(Row(index_type, _label(knob, value), nbytes, n, train_s, build_s, recall, p50, batch64, ids))
        del index
    return rows


def projected_bytes(index_type: str, n: int, dim: int) -> tuple[int, str] | None:
    """(bytes FAISS stores for `index_type` holding n vectors of `dim` floats, the formula), or None if unknown.

    >>> projected_bytes("Flat", 21_000_000, 768)[0] / 1e9
    64.512
    """
    if index_type == "Flat":
        return 4 * dim * n, "n*4*d"
    if m := re.fullmatch(r"HNSW(\d+)", index_type):
        links = int(m[1])
        # level 0 holds 2M int32 neighbours; upper levels add ~M/(M-1) slots; int32 level + int64 offset
        return n * (4 * dim + 8 * links + 16), f"n*(4*d + 2*{links}*4 links + 16 levels/offsets/upper links)"
    if m := re.fullmatch(r"(?:IVF(\d+),)?(?:PQ(\d+)(?:x(\d+))?|SQ8)", index_type):
        if m[2]:  # PQ{m}[x{nbits}]: ceil(m * nbits / 8) code bytes, one 2^nbits-centroid codebook per sub-vector
            pq_m, nbits = int(m[2]), int(m[3] or 8)
            code, formula = -(-pq_m * nbits // 8), f"{-(-pq_m * nbits // 8)}"
            extra, extra_f = 2**nbits * dim * 4, f"{2**nbits}*d*4 codebooks"
        else:  # SQ8: one byte a dimension, a trained min and range per dimension
            code, formula = dim, "d"
            extra, extra_f = 2 * dim * 4, "2*d*4 ranges"
        if m[1] is None:
            return n * code + extra, f"n*{formula} + {extra_f}"
        return (n * (code + 8) + int(m[1]) * dim * 4 + extra,
                f"n*({formula} + 8 id) + nlist*d*4 centroids + {extra_f}")  # fmt: skip
    return None


def wiki18_type(index_type: str, dim: int, nlist: int) -> str:
    """The same type at e5-base-v2's 768 dims: PQ keeps its dims per code byte, IVF gets `nlist` lists."""
    t = re.sub(r"PQ(\d+)", lambda m: f"PQ{int(m[1]) * WIKI18_DIM // dim}", index_type)
    return re.sub(r"^IVF\d+", f"IVF{nlist}", t)


def _host_gb(nbytes: float) -> str:
    """Smallest common host RAM with 25% headroom for the OS, the encoder and the doc store's page cache."""
    need = nbytes * 1.25 / 1e9
    return next((f"{gb} GB" for gb in (8, 16, 32, 64, 128, 256, 512, 1024) if gb >= need), "> 1 TB")


def print_rows(rows: list[Row], gold: list[float] | None = None) -> None:
    head = f"{'type':<16}{'search':<30}{'MB':>9}{'B/vec':>8}{'train s':>9}{'build s':>9}{'r@10 vs Flat':>13}"
    head += f"{'gold r@10':>10}" if gold else ""
    print(head + f"{'p50 b=1 ms':>11}{'b=64 ms/q':>10}")
    for i, r in enumerate(rows):
        line = f"{r.index_type:<16}{r.setting:<30}{r.nbytes / 1e6:>9.1f}{r.nbytes / r.n:>8.1f}{r.train_s:>9.1f}"
        line += f"{r.build_s:>9.1f}"
        line += f"{r.recall10:>13.3f}" + (f"{gold[i]:>10.3f}" if gold else "")
        print(line + f"{r.p50_batch1_ms:>11.3f}{r.batch64_ms_per_query:>10.3f}")


def print_projection(rows: list[Row], dim: int, nlist: int) -> None:
    """RAM at wiki-18 scale per type, from its storage formula; the formula is checked against this run first."""
    print(f"\nProjected to wiki-18 with e5-base-v2: {WIKI18_PASSAGES:,} x {WIKI18_DIM} (IVF with {nlist} lists, "
          "PQ at the same dims per code byte).\n"
          "formula/meas = the formula at this run's n, d / the serialized bytes.")  # fmt: skip
    print(f"{'measured':<16}{'wiki-18 type':<18}{'formula':<62}{'formula/meas':>13}{'GB':>8}{'host':>8}{'r@10*':>7}")
    seen = set()
    for r in rows:
        if r.index_type in seen:
            continue
        seen.add(r.index_type)
        best = [x for x in rows if x.index_type == r.index_type and ("server" in x.setting or not x.setting)]
        here = projected_bytes(r.index_type, r.n, dim)
        target = wiki18_type(r.index_type, dim, nlist)
        proj = projected_bytes(target, WIKI18_PASSAGES, WIKI18_DIM)
        if here is None or proj is None:
            print(f"{r.index_type:<16}{target:<18}{'(no formula for this type)':<62}")
            continue
        ratio = f"{here[0] / r.nbytes:.3f}x"
        recall = f"{best[0].recall10:.3f}" if best else ""
        print(f"{r.index_type:<16}{target:<18}{proj[1]:<62}{ratio:>13}{proj[0] / 1e9:>8.1f}{_host_gb(proj[0]):>8}"
              f"{recall:>7}")  # fmt: skip
        if r.index_type == "Flat":
            scale = WIKI18_PASSAGES * WIKI18_DIM / (r.n * dim)
            print(f"{'':<16}{SEARCH_R1_FLAT}")
            threads = faiss.omp_get_max_threads()
            print(f"{'':<16}exact search scans all of it: batch-64 time per query x {scale:,.0f} (n*d ratio) = "
                  f"~{r.batch64_ms_per_query * scale / 1e3:.1f} s per query, {threads} thread(s) here")  # fmt: skip
    print(
        "* r@10 vs Flat measured in this run at the server's search setting; recall at 21M is not projected "
        "(IVF/HNSW recall at fixed nprobe/efSearch falls as n grows). host = smallest RAM size with 25% headroom."
    )


def embedded_vectors(corpus: str, torch_threads: int) -> tuple[np.ndarray, np.ndarray, list[str], list[dict] | None]:
    """(passage vectors, query vectors, row ids, HotpotQA questions or None) for a real corpus with MiniLM.

    The passages come out of the cached Flat index `ensure_index` builds (the one retrieval_quality.py uses;
    embeddings cached under the user cache, so the encoder runs once per corpus); the queries are the 1,100
    embedded HotpotQA questions, encoded here. Gold paragraphs exist only in the embedded corpus's ids.
    """
    from _retrieval_common import COMBINED_CORPUS, HOTPOT_CORPUS, ensure_index, load_questions

    from retrieval_server.config import EncoderConfig
    from retrieval_server.corpus import DocStore
    from retrieval_server.encoder import load_encoder
    from retrieval_server.index import FAISS_FILE, Manifest

    index_dir = ensure_index({"embedded": HOTPOT_CORPUS, "combined": COMBINED_CORPUS}[corpus], None)
    m = Manifest.read(index_dir).dense
    flat = faiss.read_index(str(index_dir / FAISS_FILE))
    xb = flat.reconstruct_n(0, flat.ntotal)
    enc = load_encoder(EncoderConfig(model=m.model, max_seq_length=m.max_seq_length, torch_threads=torch_threads))
    questions = load_questions()
    xq = enc.encode_queries([q["question"] for q in questions])
    store = DocStore(index_dir)
    ids = [store.get(i).id for i in range(len(store))]
    return xb, xq, ids, questions if corpus == "embedded" else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vectors", type=int, default=100_000, help="synthetic corpus size")
    p.add_argument("--dim", type=int, default=384, help="synthetic dimension (MiniLM: 384, e5-base-v2: 768)")
    p.add_argument("--clusters", type=int, help="mixture components (default: vectors / 100)")
    p.add_argument("--queries", type=int, default=1000, help="held-out synthetic queries")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--corpus", choices=["embedded", "combined"], help="real passages with MiniLM instead")
    p.add_argument("--types", nargs="+", help="FAISS factory strings (default: Flat HNSW32 IVF-PQ IVF-SQ8 SQ8)")
    p.add_argument("--ef-search", type=int, nargs="*", default=[], help="extra HNSW efSearch values")
    p.add_argument("--nprobe", type=int, nargs="*", default=[64], help="extra IVF nprobe values")
    p.add_argument("--ivf-train-size", type=int, default=TRAIN_SIZE, help="as `build --ivf-train-size`")
    p.add_argument("--latency-queries", type=int, default=200, help="single queries timed for the p50")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="FAISS OpenMP threads")
    p.add_argument("--torch-threads", type=int, default=1, help="query encoder threads (--corpus)")
    p.add_argument("--project-nlist", type=int, default=65_536, help="IVF lists assumed at wiki-18 scale")
    args = p.parse_args()

    faiss.omp_set_num_threads(args.threads)
    questions = None
    if args.corpus:
        xb, xq, doc_ids, questions = embedded_vectors(args.corpus, args.torch_threads)
        data = f"{args.corpus} corpus, MiniLM, {len(xb):,} x {xb.shape[1]}, {len(xq):,} HotpotQA questions as queries"
    else:
        clusters = args.clusters or max(args.vectors // 100, 1)
        xb = clustered_vectors(args.vectors, args.dim, clusters, args.seed, stream=1)
        xq = clustered_vectors(args.queries, args.dim, clusters, args.seed, stream=2)
        data = (f"synthetic {len(xb):,} x {args.dim}, {clusters:,}-component mixture, seed {args.seed}, "
                f"{len(xq):,} held-out queries")  # fmt: skip
    types = args.types or default_types(len(xb), xb.shape[1], args.ivf_train_size)
    print("command:", shlex.join(sys.orig_argv))
    print(f"data: {data}")
    print(f"types: {' '.join(types)}; efSearch {sorted({FAISS_DEFAULT_EF_SEARCH, SERVER_EF_SEARCH, *args.ef_search})}"
          f", nprobe {sorted({FAISS_DEFAULT_NPROBE, SERVER_NPROBE, *args.nprobe})} (server: efSearch "
          f"{SERVER_EF_SEARCH}, nprobe {SERVER_NPROBE}); IVF/PQ/SQ trained on the first "
          f"{min(len(xb), args.ivf_train_size):,} vectors")  # fmt: skip
    print(
        f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} OpenMP threads of {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}; top 10; p50 over {args.latency_queries} single queries\n"
    )
    rows = measure(xb, xq, types, args.ef_search, args.nprobe, args.ivf_train_size, args.latency_queries)
    gold = None
    if questions is not None:
        from _retrieval_common import gold_recall

        gold = [gold_recall(questions, [[doc_ids[i] for i in row if i >= 0] for row in r.top10])[1] for r in rows]
    print_rows(rows, gold)
    print_projection(rows, xb.shape[1], args.project_nlist)


if __name__ == "__main__":
    main()
