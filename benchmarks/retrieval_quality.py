"""Recall@3 / recall@10 of gold supporting paragraphs for the 1,100 embedded HotpotQA questions.

    .venv/bin/python benchmarks/retrieval_quality.py [--index DIR] [--backend B --precision P]

Recall@k = share of a question's gold paragraphs (`supporting_doc_ids`, 2 per question) found in its
top k, averaged over questions; "both@10" = questions with every gold paragraph in the top 10.
The index is built (and cached) over the embedded 10,787-passage corpus if --index is not given.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _retrieval_common import HOTPOT_CORPUS, ensure_index, gold_recall, load_questions

from retrieval_server.config import EncoderConfig
from retrieval_server.corpus import DocStore
from retrieval_server.encoder import load_encoder
from retrieval_server.index import Manifest
from retrieval_server.retrievers import open_retriever


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--index", type=Path)
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--backend", default="auto", help="encoder backend for the build and the queries (auto: default)")
    p.add_argument("--precision", default="auto", help="encoder precision (auto: the backend's default)")
    args = p.parse_args()
    runtime = EncoderConfig(backend=args.backend, precision=args.precision, torch_threads=args.torch_threads)
    index = ensure_index(HOTPOT_CORPUS, args.index, encoder=runtime)
    m = Manifest.read(index).dense
    enc = load_encoder(runtime.model_copy(update={"model": m.model, "max_seq_length": m.max_seq_length}))
    store = DocStore(index)
    questions = load_questions()
    print(f"{len(questions)} questions, {len(store)} passages, model {m.model} (index: {m.backend} {m.precision}, "
          f"queries: {enc.backend} {enc.precision}), index {m.index_type}\n")
    print(f"{'retriever':<10}{'recall@3':>10}{'recall@10':>11}{'both@10':>9}{'seconds':>9}")
    for kind in ("dense", "bm25", "hybrid"):
        retriever = open_retriever(index, kind, enc)
        t = time.perf_counter()
        rows = []
        for i in range(0, len(questions), 64):
            rows.extend(retriever.search([q["question"] for q in questions[i : i + 64]], 10).rows.tolist())
        seconds = time.perf_counter() - t
        r3, r10, both = gold_recall(questions, [[store.get(r).id for r in row if r >= 0] for row in rows])
        print(f"{kind:<10}{r3:>10.3f}{r10:>11.3f}{both:>9.3f}{seconds:>9.1f}")


if __name__ == "__main__":
    main()
