"""`sage-rl` reports bad input in one message, exit status 2, no traceback."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--config-name", "no_such_recipe"], "available: "),
        (["train", "--config-name", "grpo_tiny_cpu", "trainer.no_such_key=1"], "no_such_key"),
        (["train", "--config-name", "grpo_tiny_cpu", "data.train_files=${sage_rl.data:nq-train}"], "nq-train"),
        (["warmstart", "--config-name", "smollm2_cpu", "gold.solver.max_search=2"], "max_search"),
        (["pipeline", "--config-name", "quickstart_cpu", "run.stages=[index,trian]"], "trian"),
    ],
)
def test_cli_reports_bad_recipes_without_a_traceback(argv, message):
    out = subprocess.run([sys.executable, "-m", "sage_rl.cli", *argv], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert out.stderr.startswith("sage-rl: error:") and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
