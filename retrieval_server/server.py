"""FastAPI app speaking Search-R1's `/retrieve` contract, plus `/health`.

Contract (byte-compatible with PeterGriffinJin/Search-R1 `retrieval_server.py`):
    POST /retrieve {"queries": [str], "topk": int (optional), "return_scores": bool (default false)}
    -> {"result": [[{"document": {"id", "contents"}, "score": float}, ...], ...]}   if return_scores
    -> {"result": [[{"id", "contents"}, ...], ...]}                                  otherwise
One inner list per query, in query order. Unlike the reference server, `return_scores=false` works for
any number of queries, requests are batched across callers, and bad input is a 4xx with a message.

Two services answer it: `Service` (an index directory: dense, BM25 or hybrid, through the micro-batcher)
and `WebService` (a web-search API, no index, queries sent concurrently on the event loop; see `web.py`).
Both expose `answer()` and `describe()`, so request limits, the request timeout and /health are shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from retrieval_server.batching import MicroBatcher
from retrieval_server.config import EncoderConfig, LimitsConfig, ServeConfig
from retrieval_server.corpus import DocStore
from retrieval_server.encoder import Encoder, load_encoder
from retrieval_server.index import Manifest
from retrieval_server.retrievers import Retriever, open_retriever
from retrieval_server.web import WebSearchError, WebSearchRetriever

logger = logging.getLogger(__name__)


# --- request / response schema (also the OpenAPI schema) -------------------------------------------


class RetrieveRequest(BaseModel):
    """Search-R1 request body. Unknown fields are rejected so typos (`top_k`) do not pass silently."""

    model_config = ConfigDict(extra="forbid")

    queries: list[StrictStr] = Field(description="One or more query strings")
    topk: StrictInt | None = Field(None, description="Hits per query; server default if omitted")
    return_scores: StrictBool = Field(False, description="Wrap each hit as {document, score}")


class Document(BaseModel):
    id: str | int
    contents: str = Field(description='"Title"\\ntext, exactly as in the corpus')


class ScoredDocument(BaseModel):
    document: Document
    score: float


class RetrieveResponse(BaseModel):
    result: list[list[ScoredDocument]] | list[list[Document]]


# --- loaded state ---------------------------------------------------------------------------------


@dataclass
class Service:
    """Everything a replica holds after loading: retriever, doc store, batcher."""

    manifest: Manifest
    retriever: Retriever
    docs: DocStore
    batcher: MicroBatcher
    model: str | None
    encoder: str | None = None  # "<backend> <precision>" of the query encoder, e.g. "openvino bf16"

    @classmethod
    def load(cls, cfg: ServeConfig, encoder: Encoder | None = None) -> Service:
        """Open the index directory; refuses a dense index whose manifest does not match the encoder."""
        manifest = Manifest.read(cfg.index)
        if cfg.retriever in ("dense", "hybrid") and encoder is None:
            enc_cfg = cfg.encoder or _manifest_encoder_config(manifest)
            if cfg.torch_threads is not None:
                enc_cfg = enc_cfg.model_copy(update={"torch_threads": cfg.torch_threads})
            encoder = load_encoder(enc_cfg)
        if cfg.faiss_threads is not None:
            import faiss

            faiss.omp_set_num_threads(cfg.faiss_threads)
        retriever = open_retriever(
            Path(cfg.index),
            cfg.retriever,
            encoder if cfg.retriever != "bm25" else None,
            rrf_k=cfg.rrf_k,
            hybrid_depth=cfg.hybrid_depth,
            hnsw_ef_search=cfg.hnsw_ef_search,
            ivf_nprobe=cfg.ivf_nprobe,
        )
        batcher = MicroBatcher(retriever.search, cfg.batching.max_batch_queries, cfg.batching.max_wait_ms,
                               cfg.batching.cache_queries)
        model = manifest.dense.model if manifest.dense and cfg.retriever != "bm25" else None
        runtime = f"{encoder.backend} {encoder.precision}" if model else None
        return cls(manifest=manifest, retriever=retriever, docs=DocStore(cfg.index), batcher=batcher, model=model,
                   encoder=runtime)

    async def answer(self, queries: list[str], topk: int, return_scores: bool) -> list[list]:
        """JSON-ready hits for one request, batched with concurrent requests."""
        result = await self.batcher.submit(queries, topk)
        return self.render(result.rows, result.scores, return_scores)

    def describe(self) -> dict:
        """The service's part of the /health body."""
        stats = self.batcher.stats()
        return {
            "retriever": self.retriever.name,
            "model": self.model,
            "encoder": self.encoder,
            "index_type": self.manifest.dense.index_type if self.manifest.dense else None,
            "num_docs": len(self.docs),
            "batches": stats.batches,
            "queries": stats.queries,
            "requests": stats.requests,
            "searched": stats.searched,
        }

    def render(self, rows, scores, return_scores: bool) -> list[list]:
        """Hits as JSON-ready lists; corpus rows are spliced in as raw bytes (orjson.Fragment)."""
        out = []
        for row_list, score_list in zip(rows.tolist(), scores.tolist(), strict=True):
            hits = []
            for row, score in zip(row_list, score_list, strict=True):
                if row < 0:
                    continue  # corpus smaller than topk
                doc = orjson.Fragment(self.docs.raw(row))
                hits.append({"document": doc, "score": score} if return_scores else doc)
            out.append(hits)
        return out


@dataclass
class WebService:
    """retriever=web: results from a search API; no index, no doc store, no batcher (see `web.py`)."""

    retriever: WebSearchRetriever
    requests: int = 0

    @classmethod
    def load(cls, cfg: ServeConfig) -> WebService:
        """Reads the API key from the environment: a missing key fails here, at start-up."""
        return cls(WebSearchRetriever.from_config(cfg.web))

    async def answer(self, queries: list[str], topk: int, return_scores: bool) -> list[list]:
        """JSON-ready hits for one request; raises WebSearchError when the API cannot answer."""
        self.requests += 1
        out = []
        for hits in await self.retriever.search(queries, topk):
            docs = [{"id": h.id, "contents": h.contents} for h in hits]
            if return_scores:
                docs = [{"document": d, "score": h.score} for d, h in zip(docs, hits, strict=True)]
            out.append(docs)
        return out

    async def aclose(self) -> None:
        await self.retriever.aclose()

    def describe(self) -> dict:
        """The service's part of the /health body; counts show what the cache saved."""
        r = self.retriever
        return {
            "retriever": r.name,
            "model": None,
            "encoder": None,
            "index_type": None,
            "num_docs": None,
            "endpoint": r.cfg.endpoint,
            "requests": self.requests,
            "queries": r.queries,
            "cache_hits": r.cache_hits,
            "upstream_requests": r.upstream_requests,
            "upstream_failures": r.upstream_failures,
        }


def load_service(cfg: ServeConfig, encoder: Encoder | None = None) -> Service | WebService:
    """The service for `cfg.retriever`: a search API for `web`, an index directory otherwise."""
    if cfg.retriever == "web":
        return WebService.load(cfg)
    return Service.load(cfg, encoder)


def _manifest_encoder_config(manifest: Manifest) -> EncoderConfig:
    d = manifest.dense
    return EncoderConfig(
        model=d.model, query_prefix=d.query_prefix, passage_prefix=d.passage_prefix, max_seq_length=d.max_seq_length
    )


# --- HTTP ---------------------------------------------------------------------------------------------


class BodyLimitMiddleware:
    """Reject bodies over `max_bytes` with 413 before FastAPI buffers or parses them (pure ASGI).

    Also treats every POST body as JSON whatever its Content-Type (`curl -d` sends form encoding), so a
    client that forgets the header gets results or a JSON error, not a confusing "expected an object".
    """

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if scope.get("method") == "POST" and b"json" not in headers.get(b"content-type", b""):
            headers[b"content-type"] = b"application/json"
            scope = {**scope, "headers": list(headers.items())}
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await _send_413(send, self.max_bytes)
        # Chunked bodies have no length header: read up to the limit ourselves, then replay.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await _send_413(send, self.max_bytes)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _send_413(send, max_bytes: int) -> None:
    body = orjson.dumps({"detail": f"request body larger than {max_bytes} bytes"})
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _readable(errors: list[dict]) -> tuple[int, str]:
    if any(e.get("type") == "json_invalid" for e in errors):
        ctx = errors[0].get("ctx", {})
        return 400, f"malformed JSON body: {ctx.get('error', 'could not decode')}"
    parts = []
    for e in errors:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{loc}: {e.get('msg')}")
    return 422, "; ".join(parts)


def _check_limits(req: RetrieveRequest, limits: LimitsConfig) -> str | None:
    if not req.queries:
        return "queries must be a non-empty list of strings"
    if len(req.queries) > limits.max_queries:
        return f"too many queries: {len(req.queries)} > max_queries={limits.max_queries}"
    try:
        "".join(req.queries).encode("utf-8")
    except UnicodeEncodeError:
        return "queries must be valid Unicode text (found a lone surrogate escape such as \\ud800)"
    longest = max(len(q) for q in req.queries)
    if longest > limits.max_query_chars:
        return f"query too long: {longest} characters > max_query_chars={limits.max_query_chars}"
    if req.topk is not None and not 1 <= req.topk <= limits.max_topk:
        return f"topk must be between 1 and {limits.max_topk}, got {req.topk}"
    return None


def create_app(
    cfg: ServeConfig, service: Service | WebService | None = None, encoder: Encoder | None = None
) -> FastAPI:
    """The ASGI app. Without `service`, it loads in a background thread and /health says 503 until then."""
    state: dict = {"service": service, "error": None}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if isinstance(state["service"], WebService):
            await state["service"].aclose()  # its pooled connections belong to this loop, which is ending

    app = FastAPI(
        lifespan=lifespan,
        title="retrieval_server",
        description="Search-R1-compatible `/retrieve` over FAISS / BM25 / hybrid indexes or a web-search API",
        version="1",
    )
    ready = threading.Event()
    app.state.ready = ready
    app.state.state = state
    if service is not None:
        ready.set()
    else:

        def load() -> None:
            source = cfg.web.endpoint if cfg.retriever == "web" else f"index {cfg.index}"
            try:
                state["service"] = load_service(cfg, encoder)
                logger.info("%s retriever loaded (%s)", cfg.retriever, source)
            except Exception as e:  # reported on /health and /retrieve; the process stays up to say why
                logger.exception("failed to load the %s retriever (%s)", cfg.retriever, source)
                state["error"] = f"{type(e).__name__}: {e}"
            ready.set()

        threading.Thread(target=load, name="retrieval-load", daemon=True).start()

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message = _readable(exc.errors())
        return JSONResponse({"detail": message}, status_code=status)

    @app.get("/health")
    async def health() -> JSONResponse:
        svc = state["service"]
        if svc is None:
            status = "error" if state["error"] else "loading"
            return JSONResponse({"status": status, "detail": state["error"]}, status_code=503)
        return JSONResponse(
            {
                "status": "ok",
                "pid": os.getpid(),  # tells replicas apart behind Ray Serve
                "default_topk": cfg.limits.default_topk,
                "max_topk": cfg.limits.max_topk,
                **svc.describe(),
            }
        )

    @app.post("/retrieve", response_model=RetrieveResponse)
    async def retrieve(req: RetrieveRequest) -> Response:
        svc = state["service"]
        if svc is None:
            detail = state["error"] or "index is still loading; poll GET /health"
            return JSONResponse({"detail": detail}, status_code=503)
        problem = _check_limits(req, cfg.limits)
        if problem:
            return JSONResponse({"detail": problem}, status_code=422)
        topk = req.topk if req.topk is not None else cfg.limits.default_topk
        try:
            result = await asyncio.wait_for(
                svc.answer(req.queries, topk, req.return_scores), cfg.batching.request_timeout_s
            )
        except TimeoutError:
            return JSONResponse({"detail": "retrieval timed out; server overloaded"}, status_code=503)
        except WebSearchError as e:  # the search API failed: a 5xx with its reason, never a traceback
            return JSONResponse({"detail": str(e)}, status_code=e.status_code)
        body = orjson.dumps({"result": result})
        return Response(body, media_type="application/json")

    app.add_middleware(BodyLimitMiddleware, max_bytes=cfg.limits.max_body_bytes)
    return app
