"""Streaming index build: corpus -> docs store + FAISS index + BM25 index + manifest.

Memory stays flat in the corpus size apart from the indexes themselves: the corpus is read `chunk_size`
rows at a time, each chunk is written to the doc store, encoded and added to FAISS, then dropped. What used
to grow with the corpus now goes to scratch files: doc-store offsets, BM25 token ids (bm25s reads them back
one document at a time), and a `Flat` index, which is streamed into `dense.faiss` (`FlatIndexWriter`)
instead of being held in RAM. What must stay proportional: other FAISS types (HNSW, IVF-PQ) live in memory
until written, IVF/PQ buffer at most `ivf_train_size` vectors for training, and bm25s builds its sparse
matrix (8 bytes per distinct term per passage, ~3x that at its peak) and vocabulary in memory.

Encoding dominates (MiniLM on 2 CPU cores: ~23 HotpotQA paragraphs/s), so passage embeddings are cached
on disk keyed by (model probe, prefix, max length, corpus checksum): rebuilding with another FAISS type,
or into another directory, skips the encoder entirely. A build whose manifest already matches is a no-op.

Sharded build (`shards > 0`, for Wikipedia-scale corpora): the corpus is cut into `shards` row ranges, each
encoded as one unit, on Ray actors (`ray_encoders > 0`, one model each, a GPU each when the device is
CUDA) or in this process, into `shards/NNNNN.f32` with a `NNNNN.json` record (cache key, rows, sha256).
A killed build restarts where it stopped: shards whose record and checksum match are not encoded again.
The shards are then merged in row order into the same index files and manifest as a single-process build.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from retrieval_server.config import BuildConfig, EncoderConfig
from retrieval_server.corpus import DocStoreWriter, Passage, corpus_stats, iter_corpus
from retrieval_server.encoder import Encoder, load_encoder, probe_vector
from retrieval_server.index import (
    BM25_DIR,
    FAISS_FILE,
    MANIFEST_FILE,
    Bm25Manifest,
    DenseManifest,
    FlatIndexWriter,
    Manifest,
    fit_ivf_nlist,
    new_faiss_index,
)

logger = logging.getLogger(__name__)

BM25_STOPWORDS = "en"
SHARDS_DIR = "shards"
TOKENS_FILE = "bm25_token_ids.tmp"


@dataclass(frozen=True)
class BuildReport:
    """What a build did, for the CLI and the benchmark."""

    manifest: Manifest
    skipped: bool  # the directory already held a matching index
    encoded: int  # passages run through the encoder (0 when embeddings came from the cache)
    seconds: float
    encode_seconds: float


def _chunks(it: Iterator[Passage], size: int) -> Iterator[list[Passage]]:
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _cache_key(dense: DenseManifest, corpus_sha: str) -> str:
    ident = f"{dense.model}|{dense.probe[:8]}|{dense.passage_prefix}|{dense.max_seq_length}|{corpus_sha}"
    return hashlib.sha256(ident.encode()).hexdigest()[:24]


def _dense_manifest(encoder: Encoder, index_type: str) -> DenseManifest:
    import faiss

    return DenseManifest(
        model=encoder.name,
        dim=encoder.dim,
        index_type=index_type,
        query_prefix=encoder.query_prefix,
        passage_prefix=encoder.passage_prefix,
        max_seq_length=getattr(encoder, "max_seq_length", None),
        probe=probe_vector(encoder),
        faiss_version=faiss.__version__,
        backend=encoder.backend,
        precision=encoder.precision,
    )


def _existing_matches(out: Path, wanted: Manifest) -> bool:
    try:
        have = Manifest.read(out)
    except Exception:  # missing or unreadable manifest: rebuild
        return False
    return have.model_dump(exclude={"corpus_path"}) == wanted.model_dump(exclude={"corpus_path"})


class _TokenIdSpill:
    """BM25 token ids on disk as int32, read back as one list per document (what bm25s iterates over).

    Held in RAM as lists of Python ints they cost ~8 bytes a token plus ~56 a document (wiki-18: ~20 GB);
    here they cost nothing resident, and bm25s sees the same ints in the same order, so the same index.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f = open(path, "wb")  # noqa: SIM115
        self._ends: list[np.ndarray] = []  # int64 per chunk: 8 bytes a document, a fraction of bm25s' own arrays
        self._n = 0

    def add(self, docs: list[list[int]]) -> None:
        lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
        self._f.write(np.fromiter(itertools.chain.from_iterable(docs), dtype=np.int32, count=int(lengths.sum())))
        self._ends.append(self._n + np.cumsum(lengths))
        self._n += int(lengths.sum())

    def close(self) -> _SpilledDocs:
        self._f.close()
        ends = np.concatenate([np.zeros(1, np.int64), *self._ends])
        ids = np.memmap(self.path, dtype=np.int32, mode="r") if self._n else np.zeros(0, np.int32)
        return _SpilledDocs(ids, ends)


class _SpilledDocs(Sequence):
    def __init__(self, ids: np.ndarray, ends: np.ndarray) -> None:
        self.ids, self.ends = ids, ends

    def __len__(self) -> int:
        return len(self.ends) - 1

    def __getitem__(self, i: int) -> list[int]:  # type: ignore[override]
        return self.ids[self.ends[i] : self.ends[i + 1]].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        return (self[i] for i in range(len(self)))


def _shard_bounds(n_docs: int, shards: int) -> list[tuple[int, int]]:
    """Row ranges [start, stop) of near-equal size; empty ranges (more shards than rows) are dropped."""
    cuts = [i * n_docs // shards for i in range(shards + 1)]
    return [(a, b) for a, b in itertools.pairwise(cuts) if b > a]


class _ShardStore:
    """Per-shard embedding files `shards/NNNNN.f32` and their records `NNNNN.json` (written last)."""

    def __init__(self, out: Path, key: str, dim: int) -> None:
        self.dir = out / SHARDS_DIR
        self.dir.mkdir(exist_ok=True)
        self.key, self.dim = key, dim

    def _paths(self, shard: int) -> tuple[Path, Path]:
        return self.dir / f"{shard:05d}.f32", self.dir / f"{shard:05d}.json"

    def is_done(self, shard: int, start: int, stop: int) -> bool:
        """True when the shard's record matches this build and its file's checksum matches the record."""
        data, record = self._paths(shard)
        try:
            rec = json.loads(record.read_text())
        except (OSError, ValueError):
            return False
        wanted = {"key": self.key, "start": start, "stop": stop, "dim": self.dim}
        if {k: rec.get(k) for k in wanted} != wanted or not data.exists():
            return False
        if data.stat().st_size != (stop - start) * self.dim * 4 or _file_sha256(data) != rec.get("sha256"):
            logger.warning("shard %d: file does not match its record; encoding it again", shard)
            return False
        return True

    def write(self, shard: int, start: int, stop: int, emb: np.ndarray) -> None:
        data, record = self._paths(shard)
        raw = np.ascontiguousarray(emb, dtype=np.float32).tobytes()
        if len(raw) != (stop - start) * self.dim * 4:
            raise ValueError(f"shard {shard}: expected {stop - start} x {self.dim} embeddings, got {emb.shape}")
        _atomic_write(data, raw)
        rec = {
            "key": self.key,
            "start": start,
            "stop": stop,
            "dim": self.dim,
            "sha256": hashlib.sha256(raw).hexdigest(),
        }
        _atomic_write(record, json.dumps(rec).encode())

    def read(self, shard: int, start: int, stop: int) -> np.ndarray:
        return np.memmap(self._paths(shard)[0], dtype=np.float32, mode="r", shape=(stop - start, self.dim))


def _atomic_write(path: Path, raw: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(raw)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def _encode_chunked(encoder: Encoder, texts: list[str], chunk_size: int) -> np.ndarray:
    return np.concatenate(
        [encoder.encode_passages(texts[i : i + chunk_size]) for i in range(0, len(texts), chunk_size)]
    )


class _LocalShardEncoder:
    """Encodes each submitted shard at once, in this process (resumable builds on one machine, and tests)."""

    def __init__(self, encoder: Encoder, chunk_size: int) -> None:
        self.encoder, self.chunk_size = encoder, chunk_size
        self._done: list[tuple[int, np.ndarray]] = []

    def submit(self, shard: int, texts: list[str]) -> None:
        self._done.append((shard, _encode_chunked(self.encoder, texts, self.chunk_size)))

    def results(self, wait_all: bool) -> Iterator[tuple[int, np.ndarray]]:
        done, self._done = self._done, []
        yield from done

    def close(self) -> None:
        pass


class _RayShardEncoder:
    """Shards go to `n` Ray actors (one encoder model each); at most two shards per actor are in flight.

    The driver keeps the files: actors return embeddings through the object store, so the output folder
    needs to exist on the driver's machine only.
    """

    def __init__(self, enc_cfg: EncoderConfig, n: int, chunk_size: int) -> None:
        import ray

        from retrieval_server.serve_ray import connect_ray

        self._started_ray = not ray.is_initialized()
        connect_ray()
        gpu = enc_cfg.device.startswith("cuda")
        resources = {"num_gpus": 1} if gpu else {"num_cpus": enc_cfg.torch_threads or 1}
        actor_cls = ray.remote(**resources)(_EncoderActor)
        self._actors = [actor_cls.remote(enc_cfg.model_dump_json(), chunk_size) for _ in range(n)]
        self._idle = list(self._actors) * 2  # the second shard queues on the actor: no idle gap
        self._pending: dict = {}  # ObjectRef -> actor

    def submit(self, shard: int, texts: list[str]) -> None:
        actor = self._idle.pop()
        self._pending[actor.encode.remote(shard, texts)] = actor

    def results(self, wait_all: bool) -> Iterator[tuple[int, np.ndarray]]:
        """Finished shards; blocks until an actor is free (or, with `wait_all`, until all are done)."""
        import ray

        while self._pending and (wait_all or not self._idle):
            ready, _ = ray.wait(list(self._pending), num_returns=1)
            self._idle.append(self._pending.pop(ready[0]))
            yield ray.get(ready[0])

    def close(self) -> None:
        import ray

        for actor in self._actors:
            ray.kill(actor)
        if self._started_ray:
            ray.shutdown()


class _EncoderActor:
    """One Ray actor: loads the encoder once, then encodes whole shards."""

    def __init__(self, enc_cfg_json: str, chunk_size: int) -> None:
        self.encoder = load_encoder(EncoderConfig.model_validate_json(enc_cfg_json))
        self.chunk_size = chunk_size

    def encode(self, shard: int, texts: list[str]) -> tuple[int, np.ndarray]:
        return shard, _encode_chunked(self.encoder, texts, self.chunk_size)


class _DenseSink:
    """Adds embedding chunks to a FAISS index, buffering for training when the index type needs it."""

    def __init__(self, dim: int, index_type: str, n_total: int, train_size: int) -> None:
        self.index = new_faiss_index(dim, fit_ivf_nlist(index_type, min(n_total, train_size)))
        self.train_size = min(train_size, n_total)
        self.pending: list[np.ndarray] = []
        self.n_pending = 0

    def add(self, emb: np.ndarray) -> None:
        if self.index.is_trained:
            self.index.add(emb)
            return
        self.pending.append(emb)
        self.n_pending += len(emb)
        if self.n_pending >= self.train_size:
            self._train_and_flush()

    def _train_and_flush(self) -> None:
        data = np.concatenate(self.pending) if self.pending else np.zeros((0, self.index.d), np.float32)
        if len(data):
            logger.info("training %s on %d vectors", type(self.index).__name__, len(data))
            self.index.train(data[: self.train_size])
            self.index.add(data)
        self.pending, self.n_pending = [], 0

    def finish(self):
        if not self.index.is_trained:
            self._train_and_flush()
        return self.index


def build_index(cfg: BuildConfig, encoder: Encoder | None = None, show_progress: bool = True) -> BuildReport:
    """Build (or confirm up to date) the index directory described by `cfg`."""
    import bm25s

    t0 = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    logger.info("checksumming %s", cfg.corpus)
    corpus_sha, n_docs = corpus_stats(cfg.corpus)

    if cfg.dense and encoder is None:
        encoder = load_encoder(cfg.encoder)
    dense_m = _dense_manifest(encoder, cfg.index_type) if cfg.dense else None
    bm25_m = Bm25Manifest(stopwords=BM25_STOPWORDS, lower=True, bm25s_version=bm25s.__version__) if cfg.bm25 else None
    wanted = Manifest(
        corpus_path=str(cfg.corpus), corpus_sha256=corpus_sha, num_docs=n_docs, dense=dense_m, bm25=bm25_m
    )
    if _existing_matches(out, wanted):
        logger.info("%s already holds a matching index; nothing to do", out)
        return BuildReport(wanted, skipped=True, encoded=0, seconds=time.perf_counter() - t0, encode_seconds=0.0)
    (out / MANIFEST_FILE).unlink(missing_ok=True)  # a half-rebuilt directory must not look complete

    # Embedding cache: read from a finished file, or write a new one chunk by chunk.
    cache_read = cache_write = None
    cache_path = None
    if dense_m is not None and cfg.embeddings_cache is not None:
        cfg.embeddings_cache.mkdir(parents=True, exist_ok=True)
        cache_path = cfg.embeddings_cache / f"{_cache_key(dense_m, corpus_sha)}.f32"
        if cache_path.exists() and cache_path.stat().st_size == n_docs * dense_m.dim * 4:
            logger.info("reusing cached passage embeddings %s", cache_path)
            cache_read = np.memmap(cache_path, dtype=np.float32, mode="r", shape=(n_docs, dense_m.dim))
        else:
            cache_write = open(cache_path.with_suffix(".tmp"), "wb")  # noqa: SIM115

    sharded = dense_m is not None and cache_read is None and cfg.shards > 0
    docs = DocStoreWriter(out)
    sink = None
    if dense_m is not None and not sharded:
        sink = _new_sink(out, dense_m.dim, cfg, n_docs)
    tokenizer = bm25s.tokenization.Tokenizer(lower=True, stopwords=BM25_STOPWORDS) if cfg.bm25 else None
    tokens = _TokenIdSpill(out / TOKENS_FILE) if tokenizer is not None else None
    encoded, encode_s, row = 0, 0.0, 0
    shards = _ShardedEncoding(cfg, out, encoder, dense_m, corpus_sha, n_docs, show_progress) if sharded else None
    bar = tqdm(total=n_docs, unit="psg", desc="build", disable=not show_progress or sharded, smoothing=0.1)
    for chunk in _chunks(iter_corpus(cfg.corpus), cfg.chunk_size):
        for p in chunk:
            docs.add(p)
        texts = [p.contents for p in chunk]
        if shards is not None:
            shards.add(texts)
        elif sink is not None:
            if cache_read is not None:
                emb = np.asarray(cache_read[row : row + len(chunk)])
            else:
                t = time.perf_counter()
                emb = encoder.encode_passages(texts)
                encode_s += time.perf_counter() - t
                encoded += len(chunk)
                if cache_write is not None:
                    cache_write.write(emb.tobytes())
            sink.add(emb)
        if tokenizer is not None:
            tokens.add(list(tokenizer.streaming_tokenize(texts, update_vocab=True)))
        row += len(chunk)
        bar.update(len(chunk))
    bar.close()
    docs.close()

    if shards is not None:
        encoded, encode_s = shards.finish()
        sink = _new_sink(out, dense_m.dim, cfg, n_docs)
        for emb in shards.merged(cfg.chunk_size):
            sink.add(emb)
            if cache_write is not None:
                cache_write.write(emb.tobytes())
    if sink is not None:
        _finish_sink(sink, out)
    if cache_write is not None:
        cache_write.close()
        cache_path.with_suffix(".tmp").rename(cache_path)
    if tokenizer is not None:
        shutil.rmtree(out / BM25_DIR, ignore_errors=True)
        retriever = bm25s.BM25()
        corpus_ids = bm25s.tokenization.Tokenized(ids=tokens.close(), vocab=tokenizer.get_vocab_dict())
        retriever.index(corpus_ids, show_progress=False)
        retriever.save(str(out / BM25_DIR))
        tokenizer.save_vocab(str(out / BM25_DIR))
        (out / TOKENS_FILE).unlink()
    wanted.write(out)
    if shards is not None:  # the embeddings now live in the index (and in the cache, when there is one)
        shutil.rmtree(out / SHARDS_DIR)
    seconds = time.perf_counter() - t0
    logger.info("built %s: %d passages in %.1f s (encoding %.1f s)", out, n_docs, seconds, encode_s)
    return BuildReport(wanted, skipped=False, encoded=encoded, seconds=seconds, encode_seconds=encode_s)


def _new_sink(out: Path, dim: int, cfg: BuildConfig, n_docs: int) -> FlatIndexWriter | _DenseSink:
    if cfg.index_type == "Flat":
        return FlatIndexWriter(out / FAISS_FILE, dim)
    return _DenseSink(dim, cfg.index_type, n_docs, cfg.ivf_train_size)


def _finish_sink(sink: FlatIndexWriter | _DenseSink, out: Path) -> None:
    import faiss

    if isinstance(sink, FlatIndexWriter):
        sink.close()
    else:
        faiss.write_index(sink.finish(), str(out / FAISS_FILE))


class _ShardedEncoding:
    """Collects the corpus into shards as the build reads it; hands unfinished shards to the encoders."""

    def __init__(
        self,
        cfg: BuildConfig,
        out: Path,
        encoder: Encoder,
        dense: DenseManifest,
        corpus_sha: str,
        n_docs: int,
        show_progress: bool,
    ) -> None:
        self.bounds = _shard_bounds(n_docs, cfg.shards)
        self.store = _ShardStore(out, _cache_key(dense, corpus_sha), dense.dim)
        self.workers: _LocalShardEncoder | _RayShardEncoder | None = None
        self._make_workers: Callable[[], _LocalShardEncoder | _RayShardEncoder] = (
            (lambda: _RayShardEncoder(cfg.encoder, cfg.ray_encoders, cfg.chunk_size))
            if cfg.ray_encoders > 0
            else (lambda: _LocalShardEncoder(encoder, cfg.chunk_size))
        )
        self.texts: list[str] = []
        self.next_shard = 0
        self.encoded = 0
        self.t0 = time.perf_counter()
        self.bar = tqdm(total=n_docs, unit="psg", desc="encode shards", disable=not show_progress, smoothing=0.1)

    def add(self, texts: list[str]) -> None:
        self.texts.extend(texts)
        while self.next_shard < len(self.bounds):
            start, stop = self.bounds[self.next_shard]
            if len(self.texts) < stop - start:
                return
            shard_texts, self.texts = self.texts[: stop - start], self.texts[stop - start :]
            self._dispatch(self.next_shard, shard_texts)
            self.next_shard += 1

    def _dispatch(self, shard: int, texts: list[str]) -> None:
        start, stop = self.bounds[shard]
        if self.store.is_done(shard, start, stop):
            logger.info("shard %d (rows %d-%d) already encoded", shard, start, stop)
            self.bar.update(stop - start)
            return
        if self.workers is None:
            self.workers = self._make_workers()
        self.workers.submit(shard, texts)
        self.encoded += len(texts)
        self._collect(wait_all=False)

    def _collect(self, wait_all: bool) -> None:
        for shard, emb in self.workers.results(wait_all):
            start, stop = self.bounds[shard]
            self.store.write(shard, start, stop, emb)
            self.bar.update(stop - start)

    def finish(self) -> tuple[int, float]:
        """Wait for every shard; returns (passages encoded in this run, seconds spent encoding)."""
        if self.next_shard != len(self.bounds) or self.texts:
            raise RuntimeError("the corpus changed while it was read: shard rows do not add up")
        try:
            if self.workers is not None:
                self._collect(wait_all=True)
        finally:
            if self.workers is not None:
                self.workers.close()
            self.bar.close()
        return self.encoded, time.perf_counter() - self.t0

    def merged(self, chunk_size: int) -> Iterator[np.ndarray]:
        """All embeddings in row order, `chunk_size` rows at a time, from the memory-mapped shard files."""
        for shard, (start, stop) in enumerate(self.bounds):
            emb = self.store.read(shard, start, stop)
            for i in range(0, stop - start, chunk_size):
                yield np.array(emb[i : i + chunk_size])
