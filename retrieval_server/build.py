"""Streaming index build: corpus -> docs store + FAISS index + BM25 index + manifest.

Memory stays flat in the corpus size apart from the indexes themselves: the corpus is read `chunk_size`
rows at a time, each chunk is written to the doc store, encoded and added to FAISS, then dropped. IVF/PQ
indexes buffer at most `ivf_train_size` vectors for training. BM25 keeps token ids (which *are* its index).

Encoding dominates (MiniLM on 2 CPU cores: ~23 HotpotQA paragraphs/s), so passage embeddings are cached
on disk keyed by (model probe, prefix, max length, corpus checksum): rebuilding with another FAISS type,
or into another directory, skips the encoder entirely. A build whose manifest already matches is a no-op.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from retrieval_server.config import BuildConfig
from retrieval_server.corpus import DocStoreWriter, Passage, corpus_stats, iter_corpus
from retrieval_server.encoder import Encoder, load_encoder, probe_vector
from retrieval_server.index import (
    BM25_DIR,
    FAISS_FILE,
    MANIFEST_FILE,
    Bm25Manifest,
    DenseManifest,
    Manifest,
    fit_ivf_nlist,
    new_faiss_index,
)

logger = logging.getLogger(__name__)

BM25_STOPWORDS = "en"


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
    )


def _existing_matches(out: Path, wanted: Manifest) -> bool:
    try:
        have = Manifest.read(out)
    except Exception:  # missing or unreadable manifest: rebuild
        return False
    return have.model_dump(exclude={"corpus_path"}) == wanted.model_dump(exclude={"corpus_path"})


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
    import faiss

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

    docs = DocStoreWriter(out)
    sink = _DenseSink(dense_m.dim, cfg.index_type, n_docs, cfg.ivf_train_size) if dense_m else None
    tokenizer = bm25s.tokenization.Tokenizer(lower=True, stopwords=BM25_STOPWORDS) if cfg.bm25 else None
    token_ids: list[list[int]] = []
    encoded, encode_s, row = 0, 0.0, 0
    bar = tqdm(total=n_docs, unit="psg", desc="build", disable=not show_progress, smoothing=0.1)
    for chunk in _chunks(iter_corpus(cfg.corpus), cfg.chunk_size):
        for p in chunk:
            docs.add(p)
        texts = [p.contents for p in chunk]
        if sink is not None:
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
            token_ids.extend(tokenizer.streaming_tokenize(texts, update_vocab=True))
        row += len(chunk)
        bar.update(len(chunk))
    bar.close()
    docs.close()

    if sink is not None:
        faiss.write_index(sink.finish(), str(out / FAISS_FILE))
    if cache_write is not None:
        cache_write.close()
        cache_path.with_suffix(".tmp").rename(cache_path)
    if tokenizer is not None:
        shutil.rmtree(out / BM25_DIR, ignore_errors=True)
        retriever = bm25s.BM25()
        retriever.index((token_ids, tokenizer.get_vocab_dict()), show_progress=False)
        retriever.save(str(out / BM25_DIR))
        tokenizer.save_vocab(str(out / BM25_DIR))
    wanted.write(out)
    seconds = time.perf_counter() - t0
    logger.info("built %s: %d passages in %.1f s (encoding %.1f s)", out, n_docs, seconds, encode_s)
    return BuildReport(wanted, skipped=False, encoded=encoded, seconds=seconds, encode_seconds=encode_s)
