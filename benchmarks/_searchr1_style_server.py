"""Benchmark fixture: a retrieval server built the way Search-R1's reference server is (not a product feature).

One synchronous FastAPI endpoint, so Starlette runs each request in its thread pool and encodes and searches
it alone, concurrently with the others, on the same MiniLM encoder, FAISS index and documents as our server.
Written for the benchmark from a description of Search-R1's `search_r1/search/retrieval_server.py`; no
Search-R1 code is copied.

    python benchmarks/_searchr1_style_server.py <index dir> <port>
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from retrieval_server.config import EncoderConfig
from retrieval_server.corpus import DocStore
from retrieval_server.encoder import load_encoder
from retrieval_server.index import Manifest, load_faiss_index


class QueryRequest(BaseModel):
    queries: list[str]
    topk: int | None = None
    return_scores: bool = False


def main() -> None:
    index_dir, port = Path(sys.argv[1]), int(sys.argv[2])
    dense = Manifest.read(index_dir).dense
    # Search-R1 runs the model in PyTorch (fp32 on CPU), whatever our server's default backend is.
    encoder = load_encoder(EncoderConfig(model=dense.model, max_seq_length=dense.max_seq_length, backend="torch"))
    index = load_faiss_index(index_dir, 128, 16)
    docs = DocStore(index_dir)
    app = FastAPI()

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.post("/retrieve")
    def retrieve(request: QueryRequest) -> dict:  # a plain `def`: one thread-pool thread per request
        scores, rows = index.search(encoder.encode_queries(request.queries), request.topk or 3)
        result = []
        for row_scores, row_ids in zip(scores, rows, strict=True):
            hits = [json.loads(docs.raw(int(i))) for i in row_ids]
            if request.return_scores:
                hits = [{"document": h, "score": float(s)} for h, s in zip(hits, row_scores, strict=True)]
            result.append(hits)
        return {"result": result}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
