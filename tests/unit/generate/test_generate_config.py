"""Generation recipes load into the typed schema with the paper's knobs, and bad values fail fast."""

from __future__ import annotations

import pytest

from sage_rl.config import recipes_dir
from sage_rl.generate.config import GenerateConfig, load_generate_config, validate

RECIPES = sorted(p.stem for p in (recipes_dir() / "generate").glob("*.yaml"))


def test_both_generation_recipes_exist():
    assert {"sage_tiny_cpu", "sage_paper"} <= set(RECIPES)


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_loads_into_the_schema(name):
    cfg = load_generate_config(name)
    assert isinstance(cfg, GenerateConfig) and cfg.loop.mode == "feedback"


def test_paper_recipe_has_the_paper_settings():
    cfg = load_generate_config("sage_paper")
    assert (cfg.solver.num_rollouts, cfg.seeds.min_steps, cfg.seeds.max_steps, cfg.generator.search_budget,
            cfg.retrieval.topk, cfg.loop.rounds, cfg.judge.kind, cfg.assemble.min_searches) == (4, 2, 10, 20, 3, 2,
                                                                                                  "llm", 2)


def test_schema_defaults_are_the_papers():
    d = GenerateConfig()
    assert (d.seeds.min_steps, d.seeds.max_steps, d.seeds.answer_types) == (2, 5, ["number", "date", "entity"])
    assert (d.generator.search_budget, d.solver.num_rollouts, d.solver.max_turns, d.loop.rounds) == (20, 4, 10, 2)
    assert (d.judge.llm.temperature, d.judge.llm.max_tokens) == (0.0, 512)


def test_overrides_and_typos():
    cfg = load_generate_config("sage_tiny_cpu", ["loop.mode=resample", "solver.num_rollouts=3"])
    assert (cfg.loop.mode, cfg.solver.num_rollouts) == ("resample", 3)
    with pytest.raises(Exception, match="no_such_knob"):
        load_generate_config("sage_tiny_cpu", ["+loop.no_such_knob=1"])
    bad = GenerateConfig()
    bad.loop.mode = "oracle"
    with pytest.raises(ValueError, match="loop.mode"):
        validate(bad)
