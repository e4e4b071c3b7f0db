"""`python -m retrieval_server {build,serve}`: build an index directory, or serve one over HTTP.

    python -m retrieval_server build --corpus sage_rl/assets/hotpotqa/corpus.jsonl.gz --out indexes/hotpotqa
    python -m retrieval_server serve --index indexes/hotpotqa            # http://127.0.0.1:8000
    SERPER_API_KEY=... python -m retrieval_server serve --retriever web  # Google results, no index

Every flag can also come from a YAML/JSON file (`--config`), whose keys are the fields of `BuildConfig` /
`ServeConfig` in `config.py`; flags given on the command line override the file.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path

from retrieval_server.config import (
    DEFAULT_MODEL,
    BatchingConfig,
    BuildConfig,
    LimitsConfig,
    ServeConfig,
    WebSearchConfig,
    default_web_cache_dir,
    load_config_file,
)

logger = logging.getLogger("retrieval_server")


def _set(d: dict, dotted: str, value) -> None:
    if value is None:
        return
    *parents, leaf = dotted.split(".")
    for p in parents:
        d = d.setdefault(p, {})
    d[leaf] = value


def _encoder_flags(p: argparse.ArgumentParser, help_suffix: str = "") -> None:
    p.add_argument("--model", help=f"sentence-transformers name/folder (default {DEFAULT_MODEL}){help_suffix}")
    p.add_argument("--query-prefix", help="text put before queries (default: inferred, e.g. 'query: ' for e5)")
    p.add_argument("--passage-prefix", help="text put before passages (default: inferred)")
    p.add_argument("--max-seq-length", type=int, help="token cap per input (default 256)")
    p.add_argument("--encode-batch-size", type=int, help="encoder batch size (default 64)")
    p.add_argument("--torch-threads", type=int, help="torch threads (default: torch's; 1 helps on shared CPUs)")


def _encoder_overrides(args: argparse.Namespace, d: dict, prefix: str = "encoder") -> None:
    _set(d, f"{prefix}.model", args.model)
    _set(d, f"{prefix}.query_prefix", args.query_prefix)
    _set(d, f"{prefix}.passage_prefix", args.passage_prefix)
    _set(d, f"{prefix}.max_seq_length", args.max_seq_length)
    _set(d, f"{prefix}.batch_size", args.encode_batch_size)
    _set(d, f"{prefix}.torch_threads", args.torch_threads)


def build_main(args: argparse.Namespace) -> int:
    from retrieval_server.build import build_index, default_cache_dir

    d = load_config_file(args.config) if args.config else {}
    _set(d, "corpus", args.corpus)
    _set(d, "out", args.out)
    _set(d, "index_type", args.index_type)
    _set(d, "dense", False if args.no_dense else None)
    _set(d, "bm25", False if args.no_bm25 else None)
    _set(d, "chunk_size", args.chunk_size)
    if args.no_cache:
        d["embeddings_cache"] = None
    elif args.cache_dir:
        d["embeddings_cache"] = args.cache_dir
    else:
        d.setdefault("embeddings_cache", str(default_cache_dir()))
    _encoder_overrides(args, d)
    cfg = BuildConfig.model_validate(d)
    report = build_index(cfg)
    verb = "up to date" if report.skipped else "built"
    logger.info("%s: %s (%d passages, %.1f s)", verb, cfg.out, report.manifest.num_docs, report.seconds)
    return 0


def serve_main(args: argparse.Namespace) -> int:
    d = load_config_file(args.config) if args.config else {}
    _set(d, "index", args.index)
    _set(d, "retriever", args.retriever)
    _set(d, "host", args.host)
    _set(d, "port", args.port)
    _set(d, "limits.default_topk", args.topk)
    _set(d, "limits.max_topk", args.max_topk)
    _set(d, "batching.max_batch_queries", args.max_batch)
    _set(d, "batching.max_wait_ms", args.max_wait_ms)
    _set(d, "faiss_threads", args.faiss_threads)
    _set(d, "ray_replicas", args.ray_replicas)
    _set(d, "web.endpoint", args.web_endpoint)
    _set(d, "web.api_key_env", args.web_api_key_env)
    _set(d, "web.cache_dir", args.web_cache_dir)
    _set(d, "web.max_requests_per_second", args.web_rps)
    if args.model is not None:
        _encoder_overrides(args, d)
    _set(d, "torch_threads", args.torch_threads)
    cfg = ServeConfig.model_validate(d)
    if cfg.ray_replicas > 0:
        from retrieval_server.serve_ray import run_ray_serve

        return run_ray_serve(cfg)
    return run_uvicorn(cfg)


def run_uvicorn(cfg: ServeConfig) -> int:
    """Serve with uvicorn in this process; print the URL once the retriever is loaded and the socket is bound."""
    import uvicorn

    from retrieval_server.server import create_app

    app = create_app(cfg)
    server = uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False))

    def announce() -> None:
        app.state.ready.wait()
        while not server.started and not server.should_exit:
            threading.Event().wait(0.05)
        if app.state.state["error"]:
            logger.error("%s retriever failed to load: %s", cfg.retriever, app.state.state["error"])
            server.should_exit = True
            return
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        print(f"retrieval server ready at http://{host}:{port}", flush=True)  # noqa: T201

    threading.Thread(target=announce, daemon=True).start()
    server.run()
    return 1 if app.state.state["error"] else 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m retrieval_server", description=__doc__.split("\n")[0])
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="build an index directory from a jsonl(.gz) corpus (streaming)")
    b.add_argument("--config", type=Path, help="YAML/JSON file with BuildConfig fields")
    b.add_argument("--corpus", type=Path, help='jsonl or jsonl.gz with {"id", "contents"} rows')
    b.add_argument("--out", type=Path, help="index directory to write")
    b.add_argument("--index-type", help="FAISS factory string: Flat (default), HNSW32, IVF1024,PQ32, ...")
    b.add_argument("--no-dense", action="store_true", help="skip the dense index (BM25 only)")
    b.add_argument("--no-bm25", action="store_true", help="skip the BM25 index")
    b.add_argument("--chunk-size", type=int, help="passages per streaming step (default 512)")
    b.add_argument("--cache-dir", type=Path, help="passage-embedding cache (default ~/.cache/retrieval_server)")
    b.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    _encoder_flags(b)
    b.set_defaults(func=build_main)

    s = sub.add_parser("serve", help="serve an index or a web-search API over HTTP (Search-R1 /retrieve contract)")
    s.add_argument("--config", type=Path, help="YAML/JSON file with ServeConfig fields")
    s.add_argument("--index", type=Path, help="index directory written by `build` (not used by --retriever web)")
    s.add_argument("--retriever", choices=["dense", "bm25", "hybrid", "web"], help="default dense")
    s.add_argument("--host", help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (default 8000; 0 = any free port)")
    s.add_argument("--topk", type=int, help=f"default topk (default {LimitsConfig().default_topk})")
    s.add_argument("--max-topk", type=int, help=f"largest topk accepted (default {LimitsConfig().max_topk})")
    s.add_argument("--max-batch", type=int, help=f"queries per batch (default {BatchingConfig().max_batch_queries})")
    s.add_argument("--max-wait-ms", type=float, help=f"batch wait (default {BatchingConfig().max_wait_ms})")
    s.add_argument("--faiss-threads", type=int, help="OpenMP threads for FAISS")
    s.add_argument("--ray-replicas", type=int, help="run N replicas behind one URL with Ray Serve")
    _encoder_flags(s, "; default: the manifest's model")
    web = WebSearchConfig.model_fields
    s.add_argument("--web-endpoint", help=f"--retriever web: search API URL (default {web['endpoint'].default})")
    s.add_argument("--web-api-key-env", help=f"variable holding the API key (default {web['api_key_env'].default})")
    s.add_argument("--web-cache-dir", type=Path, help=f"result cache folder (default {default_web_cache_dir()})")
    s.add_argument("--web-rps", type=float, help=f"API requests/s (default {web['max_requests_per_second'].default})")
    s.set_defaults(func=serve_main)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
