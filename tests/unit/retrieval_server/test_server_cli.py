"""`python -m retrieval_server`: flags generated from the config models, the documented short flags, config
files under flags, and argparse-style errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from retrieval_server.__main__ import main, parse_args
from retrieval_server.config import BuildConfig, ServeConfig, default_embeddings_cache_dir


def _fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every leaf field of a config model as its generated flag, e.g. `--limits.max-topk`, `--no-dense`."""
    flags = []
    for name, info in model.model_fields.items():
        nested = [t for t in getattr(info.annotation, "__args__", (info.annotation,)) if isinstance(t, type)]
        sub = next((t for t in nested if issubclass(t, BaseModel)), None)
        dotted = f"{prefix}{name.replace('_', '-')}"
        if sub:
            flags += _fields(sub, dotted + ".")
        else:
            flags.append(f"--no-{dotted}" if info.default is True else f"--{dotted}")
    return flags


@pytest.mark.parametrize(("command", "model"), [("build", BuildConfig), ("serve", ServeConfig)])
def test_every_config_field_is_a_flag(command: str, model: type[BaseModel], capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    help_text = capsys.readouterr().out
    missing = [flag for flag in _fields(model) if f"{flag} " not in help_text]
    assert not missing and "--config" in help_text


def test_build_flags() -> None:
    argv = ["build", "--corpus", "c.jsonl", "--out", "idx", "--no-dense", "--no-bm25", "--index-type", "HNSW32",
            "--chunk-size", "7", "--model", "hashing-256", "--query-prefix", "q: ", "--passage-prefix", "p: ",
            "--max-seq-length", "128", "--encode-batch-size", "3", "--torch-threads", "2",
            "--cache-dir", "cache"]  # fmt: skip
    level, cfg = parse_args(argv)
    assert level == "INFO" and isinstance(cfg, BuildConfig)
    assert (cfg.corpus, cfg.out, cfg.dense, cfg.bm25, cfg.index_type, cfg.chunk_size, cfg.embeddings_cache) == (
        Path("c.jsonl"), Path("idx"), False, False, "HNSW32", 7, Path("cache"))  # fmt: skip
    enc = cfg.encoder
    assert (enc.model, enc.query_prefix, enc.passage_prefix, enc.max_seq_length, enc.batch_size, enc.torch_threads) == (
        "hashing-256", "q: ", "p: ", 128, 3, 2)  # fmt: skip


def test_build_caches_embeddings_unless_told_not_to() -> None:
    assert parse_args(["build", "--corpus", "c", "--out", "o"])[1].embeddings_cache == default_embeddings_cache_dir()
    assert parse_args(["build", "--corpus", "c", "--out", "o", "--no-cache"])[1].embeddings_cache is None


def test_serve_flags() -> None:
    argv = ["--log-level", "debug", "serve", "--index", "idx", "--retriever", "hybrid", "--host", "0.0.0.0",
            "--port", "0", "--topk", "5", "--max-topk", "50", "--max-batch", "1", "--max-wait-ms", "0",
            "--faiss-threads", "2", "--ray-replicas", "2", "--torch-threads", "1", "--model", "hashing-128",
            "--limits.max-queries", "9"]  # fmt: skip
    level, cfg = parse_args(argv)
    assert level == "debug" and isinstance(cfg, ServeConfig)
    assert (cfg.index, cfg.retriever, cfg.host, cfg.port, cfg.faiss_threads, cfg.ray_replicas, cfg.torch_threads) == (
        Path("idx"), "hybrid", "0.0.0.0", 0, 2, 2, 1)  # fmt: skip
    assert (cfg.limits.default_topk, cfg.limits.max_topk, cfg.limits.max_queries) == (5, 50, 9)
    assert (cfg.batching.max_batch_queries, cfg.batching.max_wait_ms) == (1, 0.0)
    assert cfg.encoder is not None and cfg.encoder.model == "hashing-128"


def test_serve_without_encoder_flags_uses_the_manifests_encoder() -> None:
    assert parse_args(["serve", "--index", "idx", "--torch-threads", "1"])[1].encoder is None


def test_serve_web_flags() -> None:
    argv = ["serve", "--retriever", "web", "--web-endpoint", "http://x/search", "--web-api-key-env", "KEY",
            "--web-cache-dir", "wc", "--web-rps", "2", "--web.timeout-s", "3"]  # fmt: skip
    web = parse_args(argv)[1].web
    assert (web.endpoint, web.api_key_env, web.cache_dir, web.max_requests_per_second, web.timeout_s) == (
        "http://x/search", "KEY", Path("wc"), 2.0, 3.0)  # fmt: skip


def test_config_file_fills_in_and_flags_override_it(tmp_path: Path) -> None:
    file = tmp_path / "serve.json"
    file.write_text(json.dumps({"index": "from-file", "port": 9000, "limits": {"default_topk": 7, "max_topk": 20},
                                "encoder": {"model": "hashing-64", "batch_size": 5}}))
    cfg = parse_args(["serve", "--config", str(file), "--port", "0", "--max-topk", "30", "--encode-batch-size", "9"])[1]
    assert (cfg.index, cfg.port, cfg.limits.default_topk, cfg.limits.max_topk) == (Path("from-file"), 0, 7, 30)
    assert cfg.encoder is not None and (cfg.encoder.model, cfg.encoder.batch_size) == ("hashing-64", 9)


def test_environment_variables_are_not_flags(monkeypatch) -> None:
    monkeypatch.setenv("port", "1234")
    monkeypatch.setenv("index", "from-env")
    with pytest.raises(SystemExit):
        parse_args(["serve"])  # no index: the environment must not supply one


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["build", "--out", "o"], "build.corpus: Field required"),
        (["serve", "--index", "i", "--port", "abc"], "serve.port: Input should be a valid integer"),
        (["serve"], "retriever=dense needs an index directory"),
        (["serve", "--index", "i", "--bogus", "1"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_command_lines_exit_2_with_the_reason(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err
