"""The main job's orchestration with stand-in stages: resume, failures, the console, the report."""

import json
import os
import sys
from pathlib import Path

import pandas as pd
import pytest
from priority import PROBE, assert_lowered, own_session

from sage_rl import pipeline, pipeline_stages
from sage_rl.config import register_resolvers
from sage_rl.pipeline import Console, Job, PipelineConfig, StageFailed, load_pipeline_config, run_pipeline
from sage_rl.pipeline_report import write_report


def test_quickstart_recipe_loads_typed():
    cfg = load_pipeline_config("quickstart_cpu")
    assert cfg.run.stages == list(pipeline.STAGES) and cfg.train.recipe == "grpo_search_smollm2_cpu"
    with pytest.raises(ValueError, match="unknown stages"):
        load_pipeline_config("quickstart_cpu", ["run.stages=[index,trian]"])


def test_quickstart_generation_verifies_with_the_training_episode():
    """SAGE accepts a pair the solver answers with >= S searches: the quickstart's solver is the policy's episode
    (budget, passages, turn length), and S stays within that budget."""
    from sage_rl.generate.config import load_generate_config
    from sage_rl.train.launch import load_train_config
    from sage_rl.train.search_agent_loop import SearchAgentConfig

    cfg = load_pipeline_config("quickstart_cpu")
    gen = load_generate_config(cfg.generate.recipe, list(cfg.generate.overrides))
    train = load_train_config(cfg.train.recipe, list(cfg.train.overrides))
    episode = SearchAgentConfig.from_trainer_config(train).episode
    assert (gen.solver.max_searches, gen.solver.max_obs_tokens) == (episode.max_searches, episode.max_obs_tokens)
    assert gen.solver.llm.max_tokens == train.search_agent.max_turn_tokens
    assert gen.seeds.max_steps <= episode.max_searches


def test_finished_stages_are_skipped_and_redo_reruns_one(tmp_path, monkeypatch, capsys):
    calls = []
    for stage in pipeline.STAGES:
        monkeypatch.setattr(pipeline_stages, stage, lambda job, s=stage: calls.append(s) or {"summary": s})
    cfg = PipelineConfig()
    cfg.run.output_dir = str(tmp_path)
    cfg.run.stages = ["index", "warmstart"]
    run_pipeline(cfg)
    assert calls == ["index", "warmstart"]
    assert json.loads((tmp_path / "index" / "done.json").read_text())["summary"] == "index"
    cfg.run.redo = ["warmstart"]
    run_pipeline(cfg)
    assert calls == ["index", "warmstart", "warmstart"]
    cfg.run.redo, cfg.run.stages = [], ["index", "report"]
    run_pipeline(cfg)
    run_pipeline(cfg)
    assert calls[3:] == ["report", "report"]  # the report always reflects the records as they are now
    assert "[index] done before" in capsys.readouterr().out


def test_a_stage_that_needs_an_unfinished_one_says_so(tmp_path):
    job = Job(PipelineConfig(), tmp_path, Console(verbose=False))
    with pytest.raises(StageFailed, match="stage 'warmstart' has not finished"):
        pipeline_stages.train(job)


def test_console_mirrors_progress_logs_everything_and_reports_failures(tmp_path, capsys):
    script = ("import sys\n"
              "for i in range(1, 4): sys.stdout.write(f'\\rwork: {i}/3 [00:01<00:00]'); sys.stdout.flush()\n"
              "sys.stdout.write('\\rloading: 272/272 [00:01<00:00]')\n"
              "print('\\nstep:1 - critic/score/mean:0.5 - timing_s/step:np.float64(12.0)')\n"
              "sys.exit(3)\n")
    seen = []
    log = tmp_path / "logs" / "child.log"
    with pytest.raises(StageFailed, match=r"child failed \(exit 3\); full log: .*child.log"):
        Console(verbose=False).run([sys.executable, "-c", script], log, "child",
                                   on_line=lambda t: seen.append(pipeline.step_line(t)), bar="work")
    assert "work: 3/3" in log.read_text()
    assert (1, {"reward": 0.5, "step_s": 12.0}) in seen
    shown = capsys.readouterr()
    assert "critic/score" not in shown.out  # the console shows the bar, not the child's lines
    assert "3/3" in shown.err and "272" not in shown.err  # the stage's bar, not the child's other bars


def _record(folder: Path, stage: str, record: dict) -> None:
    (folder / stage).mkdir(parents=True, exist_ok=True)
    (folder / stage / "done.json").write_text(json.dumps({"seconds": 10.0, "summary": stage, **record}))


def test_report_has_every_section_with_intervals(tmp_path):
    ws = {"model": "/m", "cached": False, "gold_stats": {"solver_kept": 9, "solver_dropped": 1, "mean_searches": 1.9,
                                                         "generator_kept": 3},
          "training": {"rows": 12, "steps": 3, "losses": [1.5, 1.0, 0.7], "seconds": 90.0}}
    (tmp_path / "ws.json").write_text(json.dumps(ws))
    results = {}
    for label, em in (("base", 0.0), ("warmstart", 0.2), ("trained", 0.3)):
        path = tmp_path / f"{label}.json"
        path.write_text(json.dumps({"benchmarks": {"hotpotqa-test": {
            "episodes": 10, "failed_episodes": 0, "em": em, "searches_mean": 1.5, "answered": 0.9,
            "invalid_turn_rate": 0.1}}}))
        results[label] = str(path)
    gen_md = "# g\n\n## Intrinsic evaluation (paper Table)\n\n| a |\n|---|\n| 1 |\n\n## Other\n"
    (tmp_path / "gen.md").write_text(gen_md)
    _record(tmp_path, "index", {"docs": 2000, "retriever": "dense"})
    _record(tmp_path, "warmstart", {"report": str(tmp_path / "ws.json")})
    _record(tmp_path, "generate", {"items": 6, "accepted": 1, "statuses": {"accepted": 1, "rejected": 5},
                                   "pairs": 1, "stated_answers": 1, "report": str(tmp_path / "gen.md")})
    _record(tmp_path, "train", {"train_files": ["/x/verl.parquet"], "steps": [
        {"step": 1, "reward": 0.1, "acc": 0.1, "searches": 1.2, "answered": 0.8, "step_s": 60.0},
        {"step": 2, "reward": 0.2, "acc": 0.2, "searches": 1.4, "answered": 0.9, "step_s": 55.0}]})
    _record(tmp_path, "eval", {"results": results})
    text = write_report(Job(PipelineConfig(), tmp_path, Console(False))).read_text()
    for heading in ("## Stages", "## Index", "## Warm-start", "## SAGE generation", "## Training", "## Evaluation"):
        assert heading in text
    assert "| **total** | 50 |" in text and "| 1 |" in text  # stage times; the generation table copied
    assert "1 pairs in the training set, 1 of them with the answer stated in the question" in text
    assert "| warmstart | hotpotqa-test | 10 | 0.200 | [0.057, 0.510] |" in text
    assert "- hotpotqa-test: the trained model scores above its warm-start, within noise (EM 0.300 vs 0.200" in text
    assert (tmp_path / "training.png").is_file() and (tmp_path / "warmstart_loss.png").is_file()
    # An online run says where its questions came from and shows the pool's size per step.
    _record(tmp_path, "train", {"train_files": ["/x/train.parquet"], "online": True, "pool": "/run/train/pool",
                                "steps": [{"step": 1, "reward": 0.1, "step_s": 60.0, "pool": 2.0}]})
    text = write_report(Job(PipelineConfig(), tmp_path, Console(False))).read_text()
    assert "Data: online: part of each batch from the question pool" in text and "`/run/train/pool`" in text
    assert "| step | reward | acc | searches | answered | step_s | pool |" in text and "| 1 | 0.1 | - |" in text


def test_index_slice_keeps_questions_answerable_and_seeds_exclude_held_out_evidence(tmp_path, monkeypatch):
    from sage_rl.assets import embedded_questions, read_jsonl

    commands = []
    monkeypatch.setattr(Console, "run", lambda self, cmd, *a, **k: commands.append(cmd))
    cfg = PipelineConfig()
    cfg.index.warmstart_questions, cfg.index.train_questions, cfg.index.eval_questions = 3, 4, 2
    cfg.index.distractors = 5
    with pytest.raises(ValueError, match="has 300 questions"):
        cfg.index.train_questions = 400
        pipeline_stages.index(Job(cfg, tmp_path, Console(False)))
    cfg.index.train_questions = 4
    record = pipeline_stages.index(Job(cfg, tmp_path, Console(False)))
    corpus = {r["id"] for r in read_jsonl(record["corpus"])}
    seeds = {r["id"] for r in read_jsonl(record["seeds"])}
    used = embedded_questions("train")[:7] + embedded_questions("test")[:2]
    # GRPO trains on the 4 train questions after the warm-start's, every one answerable from the slice
    train = pd.read_parquet(record["train_file"])
    assert list(train.extra_info.map(lambda e: e["qid"])) == [q["id"] for q in embedded_questions("train")[3:7]]
    assert "<search>" in train.prompt[0][0]["content"]
    assert {d for q in used for d in q["supporting_doc_ids"]} <= corpus and len(corpus) == record["docs"]
    held_out = {d for q in embedded_questions("test")[:2] for d in q["supporting_doc_ids"]}
    assert seeds == corpus - held_out  # no SAGE question is built on an evaluation question's evidence
    assert commands[0][2:4] == ["retrieval_server", "build"] and record["retriever"] == "dense"


@pytest.mark.parametrize("recipe", ["grpo_search_smollm2_cpu", "online_smollm2_cpu"])
def test_online_training_serves_the_warm_model_to_its_producer(tmp_path, monkeypatch, recipe):
    import contextlib

    served, commands = [], []

    @contextlib.contextmanager
    def fake_served(job, model, name, log, nice=0):
        served.append((model, nice))
        yield "http://127.0.0.1:9/v1"

    def fake_run(self, cmd, log, what, on_line=None, bar=None):
        commands.append(cmd)
        hf = tmp_path / "train" / "checkpoints" / "global_step_1" / "actor" / "huggingface"
        hf.mkdir(parents=True)
        (hf / "model.safetensors").write_text("")
        on_line("step:1 - critic/score/mean:0.5 - pool/size:3.0")

    prepared = []  # models the stage prepared itself (raising would not do: OmegaConf's merge swallows it)

    def default_model(name):  # the recipe's default model is replaced by the warm one: never prepared here
        prepared.append(name)
        return Path(f"/cache/{name}")

    monkeypatch.setattr(pipeline_stages, "served_model", fake_served)
    monkeypatch.setattr(Console, "run", fake_run)
    monkeypatch.setattr(Job, "retrieval", lambda self: "http://127.0.0.1:8")
    monkeypatch.setattr("sage_rl.models.model_path", default_model)
    register_resolvers()  # as the pipeline's own config loading leaves them: OmegaConf's merges then call them
    _record(tmp_path, "index", {"seeds": "/s/seeds.jsonl", "train_file": "/i/train.parquet"})
    _record(tmp_path, "warmstart", {"model": "/m/warm"})
    _record(tmp_path, "generate", {"accepted": 0, "verl_parquet": "/g/verl.parquet"})
    (tmp_path / "train" / "pool").mkdir(parents=True)  # a previous attempt's pool: training restarts, so does it
    cfg = PipelineConfig()
    cfg.train.recipe, cfg.generate.overrides = recipe, ["seeds.num_items=2"]
    cfg.run.producer_nice = 19
    result = pipeline_stages.train(Job(cfg, tmp_path, Console(verbose=False)))
    (cmd,) = commands
    assert "actor_rollout_ref.model.path=/m/warm" in cmd and "data.train_files=['/i/train.parquet']" in cmd
    assert result["steps"][0]["pool"] == 3.0
    assert prepared == []  # on an empty cache: a GGUF conversion logged to the job's console
    online = [c for c in cmd if c.startswith("online.")]
    if recipe == "grpo_search_smollm2_cpu":
        assert not served and not online and result["online"] is False
    else:
        assert served == [("/m/warm", 19)] and result["online"] is True  # the producer yields to training
        assert not (tmp_path / "train" / "pool").exists()
        assert f"online.pool.folder={tmp_path / 'train' / 'pool'}" in online
        (producer,) = [c for c in online if c.startswith("online.generate_overrides=")]
        assert producer.endswith("'seeds.seed=1','seeds.num_items=64']")  # not the generate stage's seeds
        for setting in ("seeds.corpus=/s/seeds.jsonl", "retrieval.url=http://127.0.0.1:8", "seeds.num_items=2",
                        "generator.llm.base_url=http://127.0.0.1:9/v1", "solver.llm.base_url=http://127.0.0.1:9/v1"):
            assert f"'{setting}'" in producer, producer


def test_generate_serves_its_model_at_the_stage_priority(tmp_path, monkeypatch):
    # Served at the pipeline's own priority (0), the model outranked the `sage-rl generate` client (run.nice), whose
    # turns then waited for the cores: 53.9 s of runqueue wait against 0.4 s at the stage's priority (README).
    import contextlib

    import sage_rl.pipeline

    served = []

    @contextlib.contextmanager
    def fake_vllm_server(model, name, log, *, args=(), env=None, timeout=900.0, nice=0):
        served.append((model, nice))
        yield "http://127.0.0.1:9/v1"

    def fake_run(self, cmd, log, what, on_line=None, bar=None):
        assert "generator.llm.base_url=http://127.0.0.1:9/v1" in cmd
        out = Path(next(c for c in cmd if c.startswith("run.output_dir=")).split("=", 1)[1])
        out.mkdir(parents=True)
        (out / "records.jsonl").write_text(json.dumps({"status": "accepted"}) + "\n")

    monkeypatch.setattr(sage_rl.pipeline, "vllm_server", fake_vllm_server)  # served_model's own default priority
    monkeypatch.setattr(Console, "run", fake_run)
    monkeypatch.setattr(Job, "retrieval", lambda self: "http://127.0.0.1:8")
    _record(tmp_path, "index", {"seeds": "/s/seeds.jsonl"})
    _record(tmp_path, "warmstart", {"model": "/m/warm"})
    cfg = PipelineConfig()
    cfg.run.nice = 13
    result = pipeline_stages.generate(Job(cfg, tmp_path, Console(verbose=False, nice=13)))
    assert served == [("/m/warm", 13)] and result["accepted"] == 1


def test_eval_runs_sage_eval_for_each_model_with_settings_that_compose(tmp_path, monkeypatch):
    import sage_rl.models
    from sage_rl.eval.config import load_eval_config

    commands = []
    monkeypatch.setattr(sage_rl.models, "smollm2_path", lambda: Path("/m/base"))  # not the ~30 s conversion

    def fake_run(self, cmd, log, what, on_line=None, bar=None):
        commands.append(cmd)
        out = Path(next(c for c in cmd if c.startswith("run.output_dir=")).split("=", 1)[1])
        out.mkdir(parents=True)
        (out / "results.json").write_text(json.dumps(
            {"benchmarks": {"bamboogle": {"em": 0.5, "searches_mean": 1.0, "answered": 1.0}}}))

    monkeypatch.setattr(Console, "run", fake_run)
    monkeypatch.setattr(Job, "retrieval", lambda self: "http://127.0.0.1:8")
    _record(tmp_path, "warmstart", {"model": "/m/warm"})
    _record(tmp_path, "train", {"model": "/m/trained"})
    job_cfg = PipelineConfig()
    result = pipeline_stages.eval(Job(job_cfg, tmp_path, Console(verbose=False)))
    paths = {"base": "/m/base", "warmstart": "/m/warm", "trained": "/m/trained"}
    assert list(result["results"]) == list(paths) and len(commands) == 3
    for cmd, (label, path) in zip(commands, paths.items(), strict=True):
        recipe = cmd.index("--config-name") + 1  # the command's settings compose and validate as `sage-rl eval`'s
        cfg = load_eval_config(cmd[recipe], cmd[recipe + 1:])
        assert (cfg.model.name, cfg.model.path, cfg.retrieval.url) == (label, path, "http://127.0.0.1:8")
        assert [(b.name, b.limit) for b in cfg.benchmarks] == [("hotpotqa-test", job_cfg.index.eval_questions),
                                                               ("bamboogle", job_cfg.index.bamboogle_questions)]
        assert cfg.run.output_dir == str(tmp_path / "eval" / label)


def test_sigterm_stops_the_running_stage_and_keeps_finished_ones(tmp_path):
    """`kill` (or a scheduler's SIGTERM) must not leave a stage's processes running without the pipeline."""
    import os
    import signal
    import subprocess
    import time

    pidfile = tmp_path / "child.pid"
    script = f"""
import sys
from sage_rl import pipeline, pipeline_stages
child = "import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
pipeline_stages.index = lambda job: {{"summary": "index"}}
pipeline_stages.warmstart = lambda job: job.console.run([sys.executable, "-c", child], job.log("w"), "w") or {{}}
cfg = pipeline.PipelineConfig()
cfg.run.output_dir, cfg.run.stages = {str(tmp_path / "run")!r}, ["index", "warmstart"]
try:
    pipeline.run_pipeline(cfg)
except KeyboardInterrupt:
    sys.exit(130)
"""
    proc = subprocess.Popen([sys.executable, "-c", script])
    for _ in range(300):
        if pidfile.is_file() and pidfile.read_text():
            break
        time.sleep(0.1)
    child = int(pidfile.read_text())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # the stage's process went with the pipeline
    assert (tmp_path / "run" / "index" / "done.json").is_file()
    assert not (tmp_path / "run" / "warmstart" / "done.json").exists()


def test_stages_run_at_lower_priority_and_the_pipeline_keeps_its_own(tmp_path):
    # run.nice: training and vLLM yield the cores to the job's retrieval server (started by the pipeline itself).
    probe, log, before = PROBE + "\nprint(seen)", tmp_path / "child.log", own_session()
    Console(verbose=False, nice=7).run([sys.executable, "-c", probe], log, "child")
    assert_lowered(log.read_text(), 7, before)  # the pipeline's own session keeps its priority
    Console(verbose=False).run([sys.executable, "-c", probe], log, "child")
    assert int(log.read_text().split()[0]) == os.nice(0)
