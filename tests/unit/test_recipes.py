"""Every shipped recipe composes, opens with its launch command, and (for training) passes verl's validation."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf
from recipe_keys import composed_train_recipe

from sage_rl.config import compose, recipes_dir

RECIPES = sorted(p for p in recipes_dir().glob("*/*.yaml"))
TRAIN_RECIPES = [p for p in RECIPES if p.parent.name == "train"]


def test_recipes_are_found():
    assert TRAIN_RECIPES, f"no training recipes under {recipes_dir()}"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipe_composes_and_opens_with_its_launch_command(recipe: Path):
    from sage_rl.eval.config import register_schema
    from sage_rl.pipeline import register_schema as register_pipeline_schema

    first = recipe.read_text().splitlines()[0]
    assert first.startswith("# Launch:") and f"--config-name {recipe.stem}" in first, first
    register_schema()  # eval and pipeline recipes start from their schema
    register_pipeline_schema()
    cfg = compose(recipe.parent, recipe.stem)
    assert len(cfg) > 0


@pytest.mark.parametrize("recipe", TRAIN_RECIPES, ids=lambda p: p.stem)
def test_train_recipe_extends_verl_and_passes_its_validation(recipe: Path):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    from sage_rl.models import tiny_model_path
    from sage_rl.train.launch import load_train_config

    # GPU recipes name hub models, which cannot be fetched here: validate them with the tiny model's files.
    overrides = [] if "cpu" in recipe.stem else [f"actor_rollout_ref.model.path={tiny_model_path()}"]
    cfg = load_train_config(recipe.stem, overrides, config_dir=recipe.parent)
    # verl's defaults are inherited, not restated: a key only ppo_trainer.yaml sets is present.
    assert "rollout_correction" in cfg.algorithm
    if "cpu" in recipe.stem:  # CPU recipes run here, so everything they name must exist offline
        assert Path(cfg.actor_rollout_ref.model.path, "config.json").is_file()
        assert Path(cfg.data.train_files).is_file()
    if cfg.actor_rollout_ref.rollout.agent.agent_loop_config_path:
        assert Path(cfg.actor_rollout_ref.rollout.agent.agent_loop_config_path).is_absolute()  # verl's requirement
    validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    if "search_agent" in cfg:  # sage_rl's own block: typos fail here, not in a Ray worker mid-run
        from sage_rl.train.search_agent_loop import SearchAgentConfig

        SearchAgentConfig.from_trainer_config(cfg)
    OmegaConf.resolve(cfg)  # every remaining verl interpolation resolves


@pytest.mark.parametrize("recipe", [p for p in RECIPES if p.parent.name == "eval"], ids=lambda p: p.stem)
def test_eval_recipe_loads_typed_and_valid(recipe: Path):
    from sage_rl.eval.config import load_eval_config

    overrides = [] if "cpu" in recipe.stem else ["model.path=/some/model"]
    cfg = load_eval_config(recipe.stem, overrides, recipe.parent)
    assert cfg.benchmarks and cfg.policy.topk == 3  # every recipe: Search-R1's top-3
    if "cpu" in recipe.stem:  # runs here: the model and every benchmark must exist offline
        from sage_rl.benchmarks import benchmark_path

        assert Path(cfg.model.path, "config.json").is_file()
        assert all(benchmark_path(b.name).is_file() for b in cfg.benchmarks)


def test_cpu_eval_recipe_runs_the_training_episode():
    """The main job evaluates the policy on the episode it was trained on (searches, passages, turn length)."""
    from sage_rl.eval.config import load_eval_config
    from sage_rl.serving import CPU_SERVING_ENV, cpu_dtype
    from sage_rl.train.launch import load_train_config
    from sage_rl.train.search_agent_loop import SearchAgentConfig

    cfg = load_eval_config("smollm2_cpu")
    train = load_train_config("grpo_search_smollm2_cpu")
    assert cfg.policy == SearchAgentConfig.from_trainer_config(train).episode
    assert cfg.sampling.max_tokens == train.search_agent.max_turn_tokens
    assert dict(cfg.model.serve.env) == CPU_SERVING_ENV
    assert cfg.model.serve.args[cfg.model.serve.args.index("--dtype") + 1] == cpu_dtype()


def test_the_google_transfer_is_one_setting():
    from sage_rl.eval.config import load_eval_config

    wiki = load_eval_config("sage_paper_wiki18", ["model.path=m"])
    google = load_eval_config("sage_paper_google", ["model.path=m"])
    wiki.retrieval.url, wiki.run.output_dir = google.retrieval.url, google.run.output_dir
    assert wiki == google


def test_overrides_reach_the_config():
    cfg = compose(recipes_dir() / "train", "grpo_tiny_cpu", ["trainer.total_training_steps=7"])
    assert cfg.trainer.total_training_steps == 7


def test_unknown_recipe_names_the_available_ones():
    with pytest.raises(FileNotFoundError, match="grpo_tiny_cpu"):
        compose(recipes_dir() / "train", "no_such_recipe")


# The authors' run.sh for the SAGE PPO run (google-research `sage/run.sh`, read at Tanker187/google-research
# 75ce739, with the Search-R1 trainer's defaults where run.sh sets nothing), in verl 0.9.1 / sage_rl names.
RUN_SH = {
    "algorithm.adv_estimator": "gae",
    "algorithm.use_kl_in_reward": True,
    "algorithm.kl_ctrl.kl_coef": 0.001,
    "data.train_batch_size": 512,
    "data.val_batch_size": 256,
    "actor_rollout_ref.actor.optim.lr": 1e-6,
    "actor_rollout_ref.actor.optim.lr_warmup_steps_ratio": 0.285,
    "actor_rollout_ref.actor.ppo_mini_batch_size": 256,
    "actor_rollout_ref.actor.entropy_coeff": 0.001,  # the Search-R1 trainer's default; verl's is 0
    "critic.optim.lr": 1e-5,
    "critic.optim.lr_warmup_steps_ratio": 0.015,
    "actor_rollout_ref.rollout.n": 1,
    "actor_rollout_ref.rollout.temperature": 1.0,
    "actor_rollout_ref.rollout.top_p": 0.95,
    "actor_rollout_ref.rollout.gpu_memory_utilization": 0.6,
    "search_agent.max_turn_tokens": 1024,  # max_response_length: one turn
    "search_agent.episode.max_searches": 8,  # max_turns: action turns, searches or invalid ones
    "search_agent.episode.invalid_spends_budget": True,
    "search_agent.episode.on_budget": "end",  # then one turn in which only an answer counts
    "search_agent.episode.max_obs_tokens": 1000,  # max_obs_length
    "search_agent.episode.topk": 3,  # retriever.topk
    "trainer.n_gpus_per_node": 8,
    "trainer.total_epochs": 15,
    "trainer.total_training_steps": 1005,
    "trainer.save_freq": 50,
    "trainer.test_freq": 50,
}


@pytest.fixture(scope="module")
def paper_ppo():
    from sage_rl.models import tiny_model_path
    from sage_rl.train.launch import load_train_config

    return load_train_config("ppo_qwen2.5-3b_sage", [f"actor_rollout_ref.model.path={tiny_model_path()}"])


@pytest.mark.parametrize("key", sorted(RUN_SH))
def test_paper_recipe_matches_the_authors_run(paper_ppo, key):
    assert OmegaConf.select(paper_ppo, key) == RUN_SH[key]


def test_paper_recipe_context_and_validation(paper_ppo):
    # run.sh: an 8,192-token context with a 2,048-token start; validation on a held-out test file.
    assert paper_ppo.data.max_prompt_length == 2048
    assert paper_ppo.data.max_prompt_length + paper_ppo.data.max_response_length == 8192
    val = list(paper_ppo.data.val_files)
    assert val and paper_ppo.data.train_files not in val
    assert paper_ppo.reward.custom_reward_function.name == "judge_score"
    assert paper_ppo.trainer.v1.trainer_mode == "sage" and paper_ppo.reward_guard.max_judge_failure_share < 1


@pytest.mark.parametrize("size", ["3b", "7b"])
def test_online_gpu_recipes_are_the_paper_run_plus_the_online_blocks(size):
    """Everything but the model, the step-aware reward, the online data source and the run's name is the paper's
    run, so the online recipes cannot drift from run.sh."""
    from sage_rl.online.config import OnlineConfig

    paper = composed_train_recipe("ppo_qwen2.5-3b_sage")
    online = composed_train_recipe(f"ppo_qwen2.5-{size}_sage_online")
    differ = {k for k in paper.keys() | online.keys() if paper.get(k) != online.get(k)}
    allowed = {"actor_rollout_ref.model.path", "trainer.experiment_name", "reward.custom_reward_function.name",
               "reward.custom_reward_function.reward_kwargs.correctness",
               "reward.custom_reward_function.reward_kwargs.step_weight", "data.custom_cls.path",
               "data.custom_cls.name"}
    assert {k for k in differ if not k.startswith(("online.", "data.online"))} <= allowed, sorted(differ)
    assert online["actor_rollout_ref.model.path"] == f"Qwen/Qwen2.5-{size[0]}B-Instruct"
    assert online["reward.custom_reward_function.reward_kwargs.judge_model"] == paper[
        "reward.custom_reward_function.reward_kwargs.judge_model"]  # the judge settings are the paper's
    cfg = OnlineConfig.from_mapping(compose(recipes_dir() / "train", f"ppo_qwen2.5-{size}_sage_online").online)
    assert cfg.enable and cfg.generate_recipe == "sage_paper" and cfg.pool.controller.max_steps == 10


@pytest.mark.parametrize("recipe", [p for p in RECIPES if p.parent.name == "warmstart"], ids=lambda p: p.stem)
def test_warmstart_recipe_trains_on_what_the_pipeline_runs(recipe: Path, tmp_path: Path):
    from verl.utils.import_utils import load_extern_object

    from sage_rl.generate.config import load_generate_config
    from sage_rl.generate.generator import generator_policy
    from sage_rl.train.launch import load_train_config
    from sage_rl.train.search_agent_loop import SearchAgentConfig
    from sage_rl.train.sft import SearchSFTDataset, load_warmstart_config, verl_config
    from sage_rl.warmstart import REVISION_K, GoldConfig

    cfg = load_warmstart_config(recipe.stem, config_dir=recipe.parent)
    gold = GoldConfig.from_mapping(OmegaConf.to_container(cfg.gold))
    # The solver learns the CPU training recipes' episode, the generator sage-rl generate's CPU settings.
    assert gold.solver == SearchAgentConfig.from_trainer_config(load_train_config("grpo_search_tiny_cpu")).episode
    generate = load_generate_config("sage_tiny_cpu")
    gen = generate.generator
    assert gold.generator == generator_policy(gen.max_searches, 3, gen.max_obs_tokens)
    # Revision rows are rendered as sage-rl generate renders its feedback prompts.
    assert gold.max_trace_tokens == generate.loop.max_trace_tokens
    assert REVISION_K == generate.solver.num_rollouts  # the failed attempts a revision prompt reports
    assert Path(cfg.model.path, "config.json").is_file()
    # What verl's SFT trainer receives: its own config, our dataset class, every interpolation resolvable.
    run_cfg = verl_config(cfg, tmp_path / "gold.parquet", tmp_path)
    assert "gold" not in run_cfg and "max_token_len_per_gpu" in run_cfg.data  # verl's defaults, inherited
    assert load_extern_object(run_cfg.data.custom_cls.path, run_cfg.data.custom_cls.name) is SearchSFTDataset
    assert run_cfg.trainer.default_local_dir == str((tmp_path / "sft").resolve())
    OmegaConf.resolve(run_cfg)
