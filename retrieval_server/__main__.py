"""`python -m retrieval_server {build,serve}`: build an index directory, or serve one over HTTP.

    python -m retrieval_server build --corpus sage_rl/assets/hotpotqa/corpus.jsonl.gz --out indexes/hotpotqa
    python -m retrieval_server serve --index indexes/hotpotqa            # http://127.0.0.1:8000
    SERPER_API_KEY=... python -m retrieval_server serve --retriever web  # Google results, no index

The flags are generated from `BuildConfig` / `ServeConfig` in `config.py` (pydantic-settings), so a new
field is a new flag with its description as help: nested fields are dotted (`--limits.max-topk`,
`--encoder.model`, `--web.timeout-s`), and the common ones have short aliases (`--model`, `--topk`,
`--max-batch`, `--web-endpoint`, ...: `_SHORTCUTS`). Every flag can also come from a YAML/JSON file
(`--config`) whose keys are the fields; flags given on the command line override the file.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, CliApp, CliSubCommand, SettingsConfigDict, get_subcommand

from retrieval_server.config import BuildConfig, ServeConfig, default_embeddings_cache_dir, load_config_file

logger = logging.getLogger("retrieval_server")

# Short flags for nested fields: generated name -> alias (the flags of the hand-written CLI this replaced).
_SHORTCUTS = {
    "encoder.model": "model",
    "encoder.query-prefix": "query-prefix",
    "encoder.passage-prefix": "passage-prefix",
    "encoder.max-seq-length": "max-seq-length",
    "encoder.batch-size": "encode-batch-size",
    "embeddings-cache": "cache-dir",
    "limits.default-topk": "topk",
    "limits.max-topk": "max-topk",
    "batching.max-batch-queries": "max-batch",
    "batching.max-wait-ms": "max-wait-ms",
    "web.endpoint": "web-endpoint",
    "web.api-key-env": "web-api-key-env",
    "web.cache-dir": "web-cache-dir",
    "web.max-requests-per-second": "web-rps",
}


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`base` with `override` on top, nested dicts merged key by key."""
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


class _ConfigFile(BaseModel):
    config: Path | None = Field(None, description="YAML/JSON file with this command's fields; flags override it")

    @model_validator(mode="before")
    @classmethod
    def _read_config_file(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("config"):
            data = _merge(load_config_file(Path(data["config"])), data)
        return data


class BuildCommand(BuildConfig, _ConfigFile):
    """Build an index directory from a jsonl(.gz) corpus (streaming)."""

    embeddings_cache: Path | None = Field(  # the schema's default is no cache; the command's is this folder
        default_factory=default_embeddings_cache_dir,
        description="Folder caching passage embeddings keyed by (model, prefixes, corpus checksum)",
    )
    no_cache: bool = Field(False, description="Do not read or write the embedding cache")
    # `--torch-threads` sets the encoder's threads here; in `serve` it is ServeConfig's own field.
    torch_threads: int | None = Field(None, ge=1, description="torch threads (same as --encoder.torch-threads)")

    def to_config(self) -> BuildConfig:
        fields = self.model_dump(exclude={"config", "no_cache", "torch_threads"})
        if self.no_cache:
            fields["embeddings_cache"] = None
        if self.torch_threads is not None:
            fields["encoder"]["torch_threads"] = self.torch_threads
        return BuildConfig.model_validate(fields)


class ServeCommand(ServeConfig, _ConfigFile):
    """Serve an index, or a web-search API, over HTTP (the Search-R1 /retrieve contract)."""

    def to_config(self) -> ServeConfig:
        return ServeConfig.model_validate(self.model_dump(exclude={"config"}, exclude_unset=True))


class RetrievalServerCli(BaseSettings):
    """Build a retrieval index, or serve one over HTTP (Search-R1's /retrieve contract)."""

    model_config = SettingsConfigDict(
        cli_prog_name="python -m retrieval_server",
        cli_kebab_case=True,
        cli_implicit_flags="toggle",  # a bool defaulting to True is a --no-<name> flag, e.g. --no-dense
        cli_avoid_json=True,
        cli_hide_none_type=True,
        cli_shortcuts=_SHORTCUTS,
    )

    log_level: str = Field("INFO", description="Logging level")
    build: CliSubCommand[BuildCommand] = Field(description="build an index directory from a jsonl(.gz) corpus")
    serve: CliSubCommand[ServeCommand] = Field(description="serve an index or a web-search API over HTTP")

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, **other_sources):
        return (init_settings,)  # the command line only: no environment variables or .env files


def parse_args(argv: list[str] | None = None) -> tuple[str, BuildConfig | ServeConfig]:
    """(log level, validated config) for a command line; `--help` and usage errors exit like argparse."""
    try:
        cli = CliApp.run(RetrievalServerCli, cli_args=sys.argv[1:] if argv is None else argv)
        return cli.log_level, get_subcommand(cli).to_config()
    except ValidationError as e:  # a bad value or a missing field: one line each, as argparse reports errors
        for error in e.errors():
            where = ".".join(str(part) for part in error["loc"])
            print(f"python -m retrieval_server: error: {where}: {error['msg']}", file=sys.stderr)  # noqa: T201
        raise SystemExit(2) from None


def build_main(cfg: BuildConfig) -> int:
    from retrieval_server.build import build_index

    report = build_index(cfg)
    verb = "up to date" if report.skipped else "built"
    logger.info("%s: %s (%d passages, %.1f s)", verb, cfg.out, report.manifest.num_docs, report.seconds)
    return 0


def serve_main(cfg: ServeConfig) -> int:
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


def main(argv: list[str] | None = None) -> int:
    log_level, cfg = parse_args(argv)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return build_main(cfg) if isinstance(cfg, BuildConfig) else serve_main(cfg)


if __name__ == "__main__":
    sys.exit(main())
