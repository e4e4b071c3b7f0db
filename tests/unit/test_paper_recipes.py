"""The paper's runs beyond the 3B SAGE recipe: what each may change, and nothing more.

`ppo_qwen2.5-7b_sage` is the 3B run with another model; `grpo_qwen2.5-3b_sage` changes the algorithm only; the
Search-R1 baseline (`ppo_qwen2.5-{3b,7b}_search_r1`) is Search-R1's train_ppo.sh with the EM reward, trained on
NQ + HotpotQA and validated on held-out sets. Comparing fully composed configs key by key means a setting added to
one recipe, or to a shared file, shows up here instead of silently making two runs incomparable.
"""

import pytest
from recipe_keys import composed_train_recipe

from sage_rl.config import compose, recipes_dir


def _composed(name: str) -> dict:
    return composed_train_recipe(name)


def _differing(a: dict, b: dict) -> dict[str, tuple]:
    """Key -> (value in a, value in b) for every flattened key whose value differs or exists on one side only."""
    pairs = {k: (a.get(k, "<absent>"), b.get(k, "<absent>")) for k in a.keys() | b.keys()}
    return {k: pair for k, pair in pairs.items() if pair[0] != pair[1]}


@pytest.fixture(scope="module")
def sage_3b() -> dict:
    return _composed("ppo_qwen2.5-3b_sage")


@pytest.mark.parametrize(("small", "large"), [("ppo_qwen2.5-3b_sage", "ppo_qwen2.5-7b_sage"),
                                               ("ppo_qwen2.5-3b_search_r1", "ppo_qwen2.5-7b_search_r1")])
def test_7b_runs_differ_from_3b_only_in_the_model(small, large):
    """Neither the SAGE paper nor Search-R1's script gives 7B-specific settings: only the model (and name) moves."""
    diff = _differing(_composed(small), _composed(large))
    assert set(diff) == {"actor_rollout_ref.model.path", "trainer.experiment_name"}, sorted(diff)
    assert diff["actor_rollout_ref.model.path"] == ("Qwen/Qwen2.5-3B-Instruct", "Qwen/Qwen2.5-7B-Instruct")


def test_grpo_variant_differs_from_the_ppo_run_only_in_the_algorithm(sage_3b):
    grpo = _composed("grpo_qwen2.5-3b_sage")
    algorithm_keys = {"algorithm.adv_estimator", "algorithm.use_kl_in_reward", "actor_rollout_ref.actor.use_kl_loss",
                      "actor_rollout_ref.actor.kl_loss_coef", "actor_rollout_ref.actor.kl_loss_type",
                      "actor_rollout_ref.rollout.n", "critic.enable", "trainer.experiment_name"}
    assert set(_differing(sage_3b, grpo)) <= algorithm_keys, sorted(_differing(sage_3b, grpo))
    # Search-R1's GRPO (v0.2 train_grpo.sh): 5 rollouts per prompt, KL 0.001 as a low_var_kl loss, no critic.
    assert (grpo["algorithm.adv_estimator"], grpo["actor_rollout_ref.rollout.n"]) == ("grpo", 5)
    assert grpo["actor_rollout_ref.actor.use_kl_loss"] and not grpo["algorithm.use_kl_in_reward"]
    assert grpo["actor_rollout_ref.actor.kl_loss_coef"] == 0.001
    assert grpo["actor_rollout_ref.actor.kl_loss_type"] == "low_var_kl"
    assert grpo["critic.enable"] is False


def test_grpo_variant_needs_no_critic_but_a_reference():
    from verl.trainer.ppo.utils import need_critic, need_reference_policy

    cfg = compose(recipes_dir() / "train", "grpo_qwen2.5-3b_sage")
    assert not need_critic(cfg) and need_reference_policy(cfg)  # the KL loss needs the reference model


# Search-R1's PPO run (PeterGriffinJin/Search-R1@a14dc3a scripts/nq_hotpotqa/v0.2/train_ppo.sh, with its trainer's
# defaults where the script sets nothing), in verl 0.9.1 / sage_rl names; per-GPU micro-batches = per-step / 8 GPUs.
SEARCH_R1_PPO = {
    "algorithm.adv_estimator": "gae",
    "algorithm.use_kl_in_reward": True,
    "algorithm.kl_ctrl.kl_coef": 0.001,
    "algorithm.gamma": 1.0,
    "algorithm.lam": 1.0,
    "data.train_batch_size": 512,
    "data.val_batch_size": 256,
    "data.max_prompt_length": 2048,  # max_start_length
    "actor_rollout_ref.actor.optim.lr": 1e-6,
    "actor_rollout_ref.actor.optim.lr_warmup_steps_ratio": 0.285,
    "actor_rollout_ref.actor.ppo_mini_batch_size": 256,
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": 8,  # 64
    "actor_rollout_ref.actor.entropy_coeff": 0.001,
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu": 16,  # 128
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu": 16,  # 128
    "actor_rollout_ref.rollout.n": 1,
    "actor_rollout_ref.rollout.temperature": 1.0,
    "actor_rollout_ref.rollout.top_p": 1.0,
    "actor_rollout_ref.rollout.gpu_memory_utilization": 0.6,
    "critic.optim.lr": 1e-5,
    "critic.optim.lr_warmup_steps_ratio": 0.015,
    "critic.ppo_micro_batch_size_per_gpu": 1,  # 8
    "search_agent.max_turn_tokens": 500,  # max_response_length: one turn
    "search_agent.episode.max_searches": 4,  # max_turns
    "search_agent.episode.invalid_spends_budget": True,
    "search_agent.episode.on_budget": "end",
    "search_agent.episode.max_obs_tokens": 500,  # max_obs_length
    "search_agent.episode.topk": 3,
    "trainer.n_gpus_per_node": 8,
    "trainer.total_epochs": 15,
    "trainer.total_training_steps": 1005,
    "trainer.save_freq": 100,
    "trainer.test_freq": 100,
}


@pytest.fixture(scope="module")
def search_r1() -> dict:
    return _composed("ppo_qwen2.5-3b_search_r1")


@pytest.mark.parametrize("key", sorted(SEARCH_R1_PPO))
def test_search_r1_baseline_matches_its_script(search_r1, key):
    assert search_r1[key] == SEARCH_R1_PPO[key]


def test_search_r1_baseline_context_is_the_scripts(search_r1):
    assert search_r1["data.max_prompt_length"] + search_r1["data.max_response_length"] == 4096  # max_prompt_length


def test_search_r1_baseline_scores_exact_match_without_a_judge(search_r1):
    from sage_rl import reward

    assert search_r1["reward.custom_reward_function.path"] == "pkg://sage_rl.reward"
    assert search_r1["reward.custom_reward_function.name"] == "compute_score"
    assert getattr(reward, search_r1["reward.custom_reward_function.name"]) is reward.compute_score
    assert not [k for k in search_r1 if k.startswith("reward.custom_reward_function.reward_kwargs.")]


def test_search_r1_baseline_trains_on_nq_hotpotqa_and_validates_on_held_out_files(search_r1):
    train, val = list(search_r1["data.train_files"]), list(search_r1["data.val_files"])
    assert train == ["data/train/nq.parquet", "data/train/hotpotqa.parquet"]
    assert not set(train) & set(val)
    assert all(path.startswith("data/val/") for path in val)  # the held-out sets, never a data/train/ file
    assert {p.removeprefix("data/val/").removesuffix(".parquet") for p in val} == {
        "nq", "triviaqa", "popqa", "hotpotqa", "2wikimultihopqa", "musique", "bamboogle"}  # Search-R1's seven


def test_search_r1_baseline_is_the_sage_run_but_for_data_reward_episode_and_scripts_values(sage_3b, search_r1):
    """What makes the baseline a baseline, listed: anything else differing would be an unintended confound."""
    expected = {
        "data.train_files", "data.val_files", "data.max_response_length",  # NQ+HotpotQA; a 4096-token context
        "reward.custom_reward_function.name",  # EM instead of the judge ...
        "reward.custom_reward_function.reward_kwargs.judge_url",  # ... so no judge settings
        "reward.custom_reward_function.reward_kwargs.judge_model",
        "reward.custom_reward_function.reward_kwargs.api_key_env",
        "reward_guard.max_judge_failure_share",
        "search_agent.max_turn_tokens", "search_agent.episode.max_searches",  # 4 turns of 500 tokens
        "search_agent.episode.max_obs_tokens",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu",  # 64 vs run.sh's 32 per step
        "actor_rollout_ref.rollout.top_p",  # 1.0 vs run.sh's 0.95
        "trainer.save_freq", "trainer.test_freq", "trainer.experiment_name",  # 100 vs 50
    }
    assert set(_differing(sage_3b, search_r1)) == expected, sorted(_differing(sage_3b, search_r1))


@pytest.mark.parametrize("recipe", ["ppo_qwen2.5-7b_sage", "grpo_qwen2.5-3b_sage", "ppo_qwen2.5-3b_search_r1",
                                    "ppo_qwen2.5-7b_search_r1"])
def test_every_paper_run_validates_on_held_out_files_only(recipe):
    cfg = _composed(recipe)
    train = cfg["data.train_files"]
    train = set(train) if isinstance(train, list) else {train}
    assert cfg["data.val_files"] and not train & set(cfg["data.val_files"])
    assert cfg["trainer.val_before_train"]  # the untrained model's score is the first point of every curve
