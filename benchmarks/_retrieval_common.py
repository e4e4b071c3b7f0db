"""Shared helpers for the retrieval benchmarks (not a test; not imported by the library)."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
import threading
from pathlib import Path

from retrieval_server.build import build_index
from retrieval_server.config import BuildConfig, EncoderConfig, default_embeddings_cache_dir

REPO = Path(__file__).resolve().parents[1]
HOTPOT_CORPUS = REPO / "sage_rl" / "assets" / "hotpotqa" / "corpus.jsonl.gz"
HOTPOT_QUESTIONS = REPO / "sage_rl" / "assets" / "hotpotqa" / "questions.jsonl.gz"
COMBINED_CORPUS = Path("/work/shared/data/derived/corpus_combined.jsonl.gz")


def ensure_index(corpus: Path, index: Path | None, index_type: str = "Flat",
                 encoder: EncoderConfig | None = None) -> Path:
    """Use `index`, or build one for `corpus` under the user cache (embeddings cached: slow only once).

    The folder is named after the encoder's runtime, so benchmarks of different backends keep their indexes."""
    if index is not None:
        return index
    encoder = encoder or EncoderConfig()
    cache = default_embeddings_cache_dir()
    runtime = "-".join(encoder.resolved())
    out = cache.parent / "indexes" / f"{corpus.name.split('.')[0]}-minilm-{index_type}-{runtime}"
    build_index(BuildConfig(corpus=corpus, out=out, index_type=index_type, embeddings_cache=cache, encoder=encoder))
    return out


def load_questions(n: int | None = None) -> list[dict]:
    with gzip.open(HOTPOT_QUESTIONS, "rt") as f:
        rows = [json.loads(line) for line in f]
    return rows[:n] if n else rows


def gold_recall(questions: list[dict], ranked_ids: list[list[str]]) -> tuple[float, float, float]:
    """(recall@3, recall@10, both@10) of the gold supporting paragraphs, averaged over questions.

    Recall@k = share of a question's `supporting_doc_ids` found in its first k `ranked_ids`; both@10 = share
    of questions with every gold paragraph in the top 10.
    """
    r3 = r10 = both = 0.0
    for q, ids in zip(questions, ranked_ids, strict=True):
        gold = set(q["supporting_doc_ids"])
        r3 += len(gold & set(ids[:3])) / len(gold)
        r10 += len(gold & set(ids[:10])) / len(gold)
        both += gold <= set(ids[:10])
    n = len(questions)
    return r3 / n, r10 / n, both / n


def start_server(*args: str) -> tuple[subprocess.Popen, str]:
    """Start `python -m retrieval_server serve` and return (process, url) once it says it is ready."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "retrieval_server", "--log-level", "WARNING", "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in proc.stdout:
        m = re.search(r"retrieval server ready at (http://\S+)", line)
        if m:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc, m.group(1)
    raise RuntimeError(f"server exited with {proc.wait()}")
