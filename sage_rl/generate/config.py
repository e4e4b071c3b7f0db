"""Schema of `sage-rl generate` recipes (recipes/generate/*.yaml), with the paper's defaults.

Recipes are Hydra YAML; they are merged onto these dataclasses so a misspelt key fails at load time.
Defaults follow the paper (SAGE, arXiv 2601.18202) and, where it is more specific, the authors' released
code (google-research `sage/`): S uniform in [2, 5], answer types {number, date, entity},
generator search budget 20, K = 4 solver rollouts with 10 turns, top-3 retrieval, R = 2 feedback rounds,
LLM judge, assembly minimum of 2 searches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf


@dataclass
class LLMConfig:
    """An OpenAI-compatible chat endpoint."""

    base_url: str = "http://127.0.0.1:8001/v1"  # up to and including /v1
    model: str = "smollm2"  # the served model name
    api_key_env: str | None = None  # NAME of the env var holding the key (the key itself never goes in config)
    temperature: float = 1.0
    max_tokens: int = 1024  # per call
    timeout_s: float = 120.0  # per request
    max_retries: int = 3  # on timeouts, connection errors, 429, 5xx, malformed bodies
    backoff_s: float = 1.0  # first retry delay; doubles each retry (with jitter)
    max_concurrency: int = 16  # requests in flight from this role (generator, solver and judge each have their own)
    extra_body: dict[str, Any] = field(default_factory=dict)  # merged into each request, e.g. {top_p: 0.95}


@dataclass
class SeedsConfig:
    """How items are seeded (the paper's step 1: a random seed document, a target S and an answer type)."""

    corpus: str = "embedded"  # Search-R1 corpus jsonl(.gz) path, or `embedded` (10,787 HotpotQA passages)
    num_items: int = 100  # seeds to process (a random sample of the corpus, without replacement)
    seed: int = 0  # fixes which passages, S and answer types; keep it when resuming
    min_steps: int = 2  # S ~ uniform[min_steps, max_steps]
    max_steps: int = 5
    answer_types: list[str] = field(default_factory=lambda: ["number", "date", "entity"])
    min_words: int = 20  # passages shorter than this are not used as seeds (too little to build on)


@dataclass
class RetrievalConfig:
    """The `/retrieve` server (python -m retrieval_server serve ...)."""

    url: str = "http://127.0.0.1:8000"
    topk: int = 3  # passages per search, for both agents
    timeout_s: float = 30.0
    max_retries: int = 3


@dataclass
class GeneratorConfig:
    """A_gen."""

    llm: LLMConfig = field(default_factory=LLMConfig)
    max_searches: int = 20  # search budget; a search beyond it gets the forcing message and one last call
    max_obs_tokens: int | None = 500  # truncation of each <information> block


@dataclass
class SolverConfig:
    """A_search, the fixed verifier."""

    llm: LLMConfig = field(default_factory=LLMConfig)
    num_rollouts: int = 4  # K
    max_searches: int = 10  # search budget per rollout; a search beyond it gets one last answer-only call
    max_obs_tokens: int | None = 500


@dataclass
class JudgeConfig:
    """Answer checking: `llm` (paper), or the cheap `em`, `f1`, `cover_em`."""

    kind: str = "llm"
    llm: LLMConfig = field(default_factory=lambda: LLMConfig(temperature=0.0, max_tokens=512))
    f1_threshold: float = 0.8  # kind=f1: correct when F1 >= this


@dataclass
class LoopConfig:
    """Feedback rounds."""

    rounds: int = 2  # R feedback rounds after round 0
    mode: str = "feedback"  # `feedback` (SAGE) or `resample` (ablation: regenerate from scratch, no traces)
    max_trace_tokens: int | None = None  # clip each trace in feedback prompts (whitespace tokens); None = full
    # A garbled output (no question or answer) uses up its round and the next round tries again: regenerate from
    # the seed while no pair has been verified, else repeat the feedback on the latest verified pair. The paper
    # does not say; its strong generators rarely garble, a small one garbles most round-0 drafts (README, main
    # job). false: the item ends at its first garbled output.
    retry_garbled: bool = True
    # A pair whose question states its answer (a whole-word span: `sage_rl.generate.assemble.states_answer`) needs
    # no search, so it is neither accepted nor kept: the next round gets the difficulty feedback with 0 searches.
    # Not in the paper (its generators do not write such pairs; false reproduces it); a small generator does,
    # and a solver that copies the answer is judged correct (README, main job).
    reject_stated_answers: bool = False


@dataclass
class AssembleConfig:
    """Final dataset rules."""

    min_searches: int = 2  # drop pairs whose fewest correct searches is below this
    data_source: str = "sage"  # verl's data_source column


@dataclass
class RunConfig:
    """Run control."""

    output_dir: str = "outputs/generate/default"  # rerun with the same folder to resume
    max_concurrent_items: int = 8  # seeds in flight (each runs K rollouts concurrently)
    item_retries: int = 2  # retries of an item after an LLM/retrieval error; then recorded as failed
    progress: bool = True
    report_examples: int = 3  # full examples in the report
    tokenizer: str | None = None  # HF tokenizer folder for token-exact observation truncation; None = words


@dataclass
class GenerateConfig:
    seeds: SeedsConfig = field(default_factory=SeedsConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    assemble: AssembleConfig = field(default_factory=AssembleConfig)
    run: RunConfig = field(default_factory=RunConfig)


def validate(cfg: GenerateConfig) -> GenerateConfig:
    """Reject settings the loop cannot honour, with the key to fix."""
    if not 1 <= cfg.seeds.min_steps <= cfg.seeds.max_steps:
        raise ValueError("seeds: need 1 <= min_steps <= max_steps")
    if not cfg.seeds.answer_types:
        raise ValueError("seeds.answer_types is empty")
    if cfg.loop.mode not in ("feedback", "resample"):
        raise ValueError(f"loop.mode must be feedback or resample, not {cfg.loop.mode!r}")
    if cfg.judge.kind not in ("llm", "em", "f1", "cover_em"):
        raise ValueError(f"judge.kind must be llm, em, f1 or cover_em, not {cfg.judge.kind!r}")
    if cfg.solver.num_rollouts < 1 or cfg.loop.rounds < 0 or cfg.generator.max_searches < 0:
        raise ValueError("need solver.num_rollouts >= 1, loop.rounds >= 0, generator.max_searches >= 0")
    if cfg.solver.max_searches < 0:
        raise ValueError("need solver.max_searches >= 0")
    return cfg


def load_generate_config(
    config_name: str, overrides: list[str] | None = None, config_path: str | Path | None = None
) -> GenerateConfig:
    """Compose a recipe from recipes/generate (or `config_path`) with Hydra overrides, typed and validated."""
    from sage_rl.config import load_typed, recipes_dir

    return validate(load_typed(GenerateConfig, config_path or recipes_dir() / "generate", config_name, overrides))


def to_yaml(cfg: GenerateConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
