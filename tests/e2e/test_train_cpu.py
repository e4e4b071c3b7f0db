"""The proof that the training path works: verl's real PPO trainer (GRPO), vLLM-on-CPU rollouts, FSDP2 on
gloo, two steps of the CPU recipe through `sage-rl train`, a checkpoint at the end. ~7 minutes on 2 cores."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

STEP_LINE = re.compile(r"step:(\d+) - (.*)")


def _metrics(line: str) -> dict[str, float]:
    out = {}
    for item in line.split(" - "):
        key, _, value = item.partition(":")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            continue
    return out


def test_grpo_two_steps_on_cpu_write_metrics_and_a_checkpoint(tmp_path: Path):
    ckpt = tmp_path / "checkpoints"
    cmd = [sys.executable, "-m", "sage_rl.cli", "train", "--config-name", "grpo_tiny_cpu",
           "trainer.total_training_steps=2", "trainer.save_freq=2", f"trainer.default_local_dir={ckpt}"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=1500)
    log = proc.stdout + proc.stderr
    (tmp_path / "train.log").write_text(log)
    assert proc.returncode == 0, log[-6000:]

    steps = {}
    for match in STEP_LINE.finditer(log):
        steps[int(match.group(1))] = _metrics(match.group(2))
    assert sorted(steps) == [1, 2], log[-4000:]
    for step, metrics in steps.items():
        # verl's own step metrics: a real rollout, a real actor update, a real reward.
        assert metrics["timing_s/gen"] > 0 and metrics["timing_s/update_actor"] > 0, (step, metrics)
        assert metrics["response_length/mean"] > 0
        assert 0.0 <= metrics["critic/score/mean"] <= 1.0
        assert "actor/pg_loss" in metrics and "actor/grad_norm" in metrics

    actor = ckpt / "global_step_2" / "actor"
    assert actor.is_dir(), sorted(p.name for p in ckpt.rglob("*"))[:50]
    assert any(actor.rglob("*.pt")) or any(actor.rglob("*.safetensors")) or any(actor.rglob("*.distcp"))
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == "2"
