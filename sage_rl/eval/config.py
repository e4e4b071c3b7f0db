"""Schema of `sage-rl eval` recipes (recipes/eval/*.yaml).

Recipes are Hydra YAML merged onto these dataclasses, so a misspelt key fails at load time. The
`episode:` block holds `sage_rl.episode.EpisodePolicy` fields (the same block training recipes have under
`search_agent.episode`), so evaluation runs the episodes training ran. Defaults are Search-R1's evaluation
setting: greedy decoding, top-3 passages, 4 searches, exact match.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from sage_rl.episode import EpisodePolicy


@dataclass
class ServeConfig:
    """How the command serves `model.path` with vLLM when no `model.base_url` is given."""

    port: int = 0  # 0: a free port
    args: list[str] = field(default_factory=lambda: ["--max-model-len", "8192"])  # more vLLM server flags
    env: dict[str, str] = field(default_factory=dict)  # e.g. VLLM_TARGET_DEVICE=cpu on CPU machines
    startup_timeout_s: float = 900.0


@dataclass
class ModelConfig:
    """The model under evaluation: an endpoint that already runs, or a model the command serves and stops."""

    name: str = "model"  # served model name, and the model's label in results
    base_url: str | None = None  # an OpenAI-compatible endpoint (up to /v1); None: serve `path`
    # A Hugging Face folder or hub name, or a verl checkpoint folder (`global_step_N` or its `actor/`), which is
    # merged into a Hugging Face folder first (cached next to the results).
    path: str | None = None
    api_key_env: str | None = None  # NAME of the env var holding the endpoint's key
    # Tokenizer (folder or hub name) that cuts observations at episode.max_obs_tokens tokens, as training does;
    # default: the served model's; None with base_url: whitespace words stand in for tokens.
    tokenizer: str | None = None
    serve: ServeConfig = field(default_factory=ServeConfig)


@dataclass
class SamplingConfig:
    """How each turn is sampled."""

    temperature: float = 0.0  # greedy
    top_p: float = 1.0
    max_tokens: int = 500  # per turn (Search-R1's max_response_length)
    n: int = 1  # samples per question (pass@k and avg@k for k <= n)
    # Base of the per-episode sampling seeds (an episode samples the same tokens on every run and resume);
    # None sends no seed. vLLM's CPU backend dies on a seeded request whose prompt it prefills in chunks
    # ("CPU Generator does not use offset"), so CPU recipes set null; greedy decoding ignores it.
    seed: int | None = 0
    # `inline`: one growing assistant message the server continues (the text a verl-trained policy saw);
    # `messages`: observations as user messages (any chat API, e.g. a hosted one).
    transcript: str = "inline"
    max_concurrency: int = 16  # requests in flight to the model; the evaluator keeps twice as many episodes open
    timeout_s: float = 300.0
    max_retries: int = 3


@dataclass
class RetrievalConfig:
    url: str = "http://127.0.0.1:8000"  # a `/retrieve` server (python -m retrieval_server serve ...)
    timeout_s: float = 30.0
    max_retries: int = 3


@dataclass
class BenchmarkConfig:
    name: str = "bamboogle"  # a shipped benchmark name or a benchmark jsonl path
    limit: int | None = None  # the first N questions (file order), None: all


@dataclass
class JudgeLLMConfig:
    base_url: str = "http://127.0.0.1:8001/v1"
    model: str = "judge"
    api_key_env: str | None = None
    max_tokens: int = 512
    max_concurrency: int = 16
    timeout_s: float = 120.0
    max_retries: int = 3


@dataclass
class JudgeConfig:
    """`none` (EM/F1/cover-EM only) or `llm`: the paper's judge, reported as `judge_acc` next to EM."""

    kind: str = "none"
    llm: JudgeLLMConfig = field(default_factory=JudgeLLMConfig)


@dataclass
class RunConfig:
    output_dir: str = "outputs/eval/default"  # rerun with the same folder to resume
    progress: bool = True
    pass_k: list[int] = field(default_factory=lambda: [1])  # k values for pass@k (each <= sampling.n)


@dataclass
class EvalConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    episode: dict[str, Any] = field(default_factory=dict)  # EpisodePolicy fields; unset = Search-R1's
    benchmarks: list[BenchmarkConfig] = field(default_factory=lambda: [BenchmarkConfig()])
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    run: RunConfig = field(default_factory=RunConfig)

    @property
    def policy(self) -> EpisodePolicy:
        return EpisodePolicy.from_mapping(self.episode, "episode")


def validate(cfg: EvalConfig) -> EvalConfig:
    """Reject settings the evaluator cannot honour, with the key to fix."""
    cfg.policy  # noqa: B018 - unknown or bad episode settings fail here
    if (cfg.model.base_url is None) == (cfg.model.path is None):
        raise ValueError("set exactly one of model.base_url (a running endpoint) and model.path (served for you)")
    if cfg.sampling.transcript not in ("inline", "messages"):
        raise ValueError(f"sampling.transcript must be inline or messages, not {cfg.sampling.transcript!r}")
    if cfg.sampling.n < 1 or any(not 1 <= k <= cfg.sampling.n for k in cfg.run.pass_k):
        raise ValueError("need sampling.n >= 1 and every run.pass_k in [1, sampling.n]")
    if cfg.sampling.seed is not None and cfg.sampling.temperature > 0 and serves_on_cpu(cfg):
        raise ValueError("vLLM's CPU backend crashes on seeded sampling (its engine dies at the first seeded prompt "
                         "it prefills in chunks: 'CPU Generator does not use offset'); set sampling.seed=null "
                         "or sampling.temperature=0")
    if cfg.judge.kind not in ("none", "llm"):
        raise ValueError(f"judge.kind must be none or llm, not {cfg.judge.kind!r}")
    if not cfg.benchmarks:
        raise ValueError("benchmarks is empty")
    names = [b.name for b in cfg.benchmarks]
    if len(set(names)) != len(names):
        raise ValueError(f"benchmarks lists a set twice: {names}")
    return cfg


def serves_on_cpu(cfg: EvalConfig) -> bool:
    """Whether the command serves the model itself with vLLM's CPU backend."""
    return cfg.model.base_url is None and cfg.model.serve.env.get("VLLM_TARGET_DEVICE") == "cpu"


def register_schema() -> None:
    """Make `eval_schema` (this module's `EvalConfig`) available to recipes' defaults lists."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="eval_schema", node=EvalConfig)


def load_eval_config(
    config_name: str, overrides: list[str] | None = None, config_path: str | Path | None = None
) -> EvalConfig:
    """Compose a recipe from recipes/eval (or `config_path`) with Hydra overrides, typed and validated.

    Recipes start from the schema (`defaults: [eval_schema, _self_]`), so every field can be overridden
    without `+` and a misspelt key fails at composition."""
    from sage_rl.config import load_typed, recipes_dir

    register_schema()
    return validate(load_typed(EvalConfig, config_path or recipes_dir() / "eval", config_name, overrides))


def to_yaml(cfg: EvalConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
