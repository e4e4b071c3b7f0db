"""`sage-rl eval`: search episodes over deep-search benchmarks, scored, resumable, with a report.

Each (benchmark, question, sample) is one episode of `sage_rl.episode` run by `run_chat_episode` against
the model's OpenAI-compatible endpoint and the retrieval server, under the recipe's `episode:` policy
(the one training used). With `sampling.transcript=inline` the trajectory is one growing assistant
message that vLLM continues, i.e. the text a verl-trained policy saw during training.

The run folder holds `trajectories.jsonl` (one durable line per finished episode, the whole trajectory
included: rerun the same command after Ctrl-C or kill -9 and it continues without duplicates),
`results.json`, `results.md` and plots (`sage_rl.eval.report`). Questions are never shuffled or dropped:
an episode whose model calls fail after their retries is recorded as an error (scored 0 and counted) and
retried on the next run.

The model is either an endpoint that already runs (`model.base_url`) or a model the command serves with
vLLM and stops afterwards (`model.path`: a Hugging Face folder or name, or a verl checkpoint, which is
first merged into a Hugging Face folder by verl's model merger).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sage_rl import protocol
from sage_rl.benchmarks import BenchmarkItem, benchmark_path, data_source_name, load_benchmark
from sage_rl.episode import ChatSettings, EpisodePolicy, SearchClient, Trajectory, run_chat_episode
from sage_rl.eval.config import EvalConfig, to_yaml
from sage_rl.eval.metrics import score_answer
from sage_rl.files import JsonlAppender, atomic_write_text, folder_lock, read_complete_lines
from sage_rl.judge import LLMJudge
from sage_rl.llm import ChatModel, LLMError
from sage_rl.protocol import Tokenizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    """One episode to run: a question of a benchmark, and which of its `n` samples."""

    benchmark: str
    item: BenchmarkItem
    sample: int

    @property
    def key(self) -> str:
        return f"{self.benchmark}\t{self.item.id}\t{self.sample}"


def tasks_of(cfg: EvalConfig) -> list[Task]:
    """Every episode of the run, in benchmark and file order."""
    tasks = []
    for bench in cfg.benchmarks:
        name = data_source_name(bench.name)
        for item in load_benchmark(benchmark_path(bench.name), limit=bench.limit):
            tasks.extend(Task(name, item, s) for s in range(cfg.sampling.n))
    return tasks


def request_seed(base: int, task: Task) -> int:
    """A per-episode sampling seed: the same episode gets the same seed on every run and resume."""
    digest = hashlib.sha256(f"{base}\t{task.key}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1


@dataclass
class Evaluator:
    """Runs and scores episodes; `judge` is the paper's LLM judge or None."""

    llm: ChatModel
    client: SearchClient
    policy: EpisodePolicy
    cfg: EvalConfig
    judge: LLMJudge | None = None
    tokenizer: Tokenizer | None = None  # the model's, so observations are cut by the tokens training cut them by

    def settings(self, task: Task) -> ChatSettings:
        s = self.cfg.sampling
        return ChatSettings(max_tokens=s.max_tokens, temperature=s.temperature, transcript=s.transcript,  # type: ignore[arg-type]
                            extra={"top_p": s.top_p} | ({} if s.seed is None else {"seed": request_seed(s.seed, task)}))

    async def episode(self, task: Task) -> Trajectory:
        messages = [{"role": "user", "content": protocol.search_prompt(task.item.question)}]
        return await run_chat_episode(self.llm, messages, self.client, self.policy, self.settings(task),
                                      self.tokenizer)

    async def run(self, task: Task) -> dict:
        """The result row of one episode (never raises for a failing endpoint: the row records the error)."""
        started = time.monotonic()
        golds = list(task.item.golden_answers)
        row: dict = {"benchmark": task.benchmark, "id": task.item.id, "sample": task.sample,
                     "question": task.item.question, "golden_answers": golds}
        try:
            trajectory = await self.episode(task)
        except LLMError as e:  # intended: a failing endpoint degrades this episode, not the run
            logger.warning("episode %s failed: %s", task.key.replace("\t", "/"), e)
            return row | {"error": str(e)[:1000], "wall_s": round(time.monotonic() - started, 3)}
        scores = score_answer(trajectory.answer, golds)
        row |= {
            "answer": trajectory.answer, "em": scores.em, "f1": scores.f1, "cover_em": scores.cover_em,
            "num_searches": trajectory.num_searches, "invalid_turns": trajectory.invalid_turns,
            "retrieval_errors": trajectory.retrieval_errors, "turns": len(trajectory.turns),
            "prompt_tokens": trajectory.prompt_tokens, "completion_tokens": trajectory.completion_tokens,
            "end_reason": trajectory.end_reason,
        }
        if self.judge is not None:
            try:
                verdict = await self.judge(task.item.question, trajectory.answer, golds)
                row |= {"judge_correct": float(verdict.correct), "judge_garbled": verdict.garbled}
            except LLMError as e:  # the judge's outage is counted, not scored as wrong
                row |= {"judge_correct": None, "judge_error": str(e)[:500]}
        return row | {"wall_s": round(time.monotonic() - started, 3), "trajectory": trajectory.to_dict()}


def completed_rows(path: Path) -> dict[str, dict]:
    """The latest row per episode key in a run's trajectories file (after crash repair)."""
    rows: dict[str, dict] = {}
    for row in read_complete_lines(path):
        rows[f"{row['benchmark']}\t{row['id']}\t{row['sample']}"] = row
    return rows


def _check_resume(out_dir: Path, cfg: EvalConfig) -> None:
    """Refuse to mix episodes of different settings in one folder: their scores would not be one run."""
    from omegaconf import OmegaConf

    saved = out_dir / "config.yaml"
    if not saved.exists():
        atomic_write_text(saved, to_yaml(cfg))
        return
    old, new = OmegaConf.load(saved), OmegaConf.structured(cfg)
    for key in ("sampling", "episode"):
        if OmegaConf.to_container(old[key]) != OmegaConf.to_container(new[key]):
            raise ValueError(f"{out_dir} holds an evaluation with different `{key}` settings; use a new run.output_dir")
    if old.model.name != new.model.name:
        raise ValueError(f"{out_dir} holds an evaluation of model {old.model.name!r}; use a new run.output_dir")


# Episodes open per model request slot (`sampling.max_concurrency` bounds the requests): while some episodes
# wait for `/retrieve`, the others keep the model's slots busy. benchmarks/eval_throughput.py measured 2 vs 1 at
# 0.88 vs 0.78 of the server's limit (BM25, 8 slots, 2-core box); 4 gave no more than 2.
EPISODES_PER_SLOT = 2


async def run_tasks(evaluator: Evaluator, tasks: list[Task], out: JsonlAppender, done: dict[str, dict],
                    progress: bool) -> dict[str, dict]:
    """Run the tasks not yet done, `EPISODES_PER_SLOT` x `max_concurrency` episodes open; each row is stored when
    it ends."""
    from tqdm.auto import tqdm

    rows = dict(done)
    pending = [t for t in tasks if t.key not in done or "error" in done[t.key]]
    queue: asyncio.Queue[Task] = asyncio.Queue()
    for task in pending:
        queue.put_nowait(task)
    bar = tqdm(total=len(tasks), initial=len(tasks) - len(pending), desc="sage eval", unit="episode",
               disable=not progress)
    correct = sum(r.get("em", 0.0) for r in rows.values())

    async def worker() -> None:
        nonlocal correct
        while True:
            try:
                task = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            row = await evaluator.run(task)
            out.append(row)
            rows[task.key] = row
            correct += row.get("em", 0.0)
            bar.update(1)
            bar.set_postfix_str(f"EM {correct / max(1, bar.n):.3f}", refresh=False)

    try:
        slots = max(1, evaluator.cfg.sampling.max_concurrency)
        await asyncio.gather(*(worker() for _ in range(EPISODES_PER_SLOT * slots)))
    finally:
        bar.close()
    return rows


def is_verl_checkpoint(path: Path) -> bool:
    """A verl FSDP checkpoint folder: `global_step_N/` (with `actor/`) or its `actor/` folder."""
    return (path / "actor" / "fsdp_config.json").is_file() or (path / "fsdp_config.json").is_file()


def merge_checkpoint(checkpoint: Path, target: Path) -> Path:
    """A verl checkpoint as a Hugging Face folder, by verl's own model merger (cached in `target`)."""
    if (target / "config.json").is_file():
        return target
    actor = checkpoint / "actor" if (checkpoint / "actor").is_dir() else checkpoint
    tmp = target.with_name(f".{target.name}.tmp")
    cmd = [sys.executable, "-m", "verl.model_merger", "merge", "--backend", "fsdp", "--local_dir", str(actor),
           "--target_dir", str(tmp)]
    logger.info("merging verl checkpoint %s into %s", actor, target)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"verl's model merger failed on {actor}:\n{done.stderr[-3000:]}")
    tmp.rename(target)
    return target


@contextlib.contextmanager
def model_endpoint(cfg: EvalConfig, out_dir: Path) -> Iterator[tuple[str, str | None]]:
    """The base URL of the model under evaluation and where its tokenizer is: the configured endpoint (and
    `model.tokenizer`), or a vLLM server started (and stopped) here for `model.path`."""
    from sage_rl.serving import vllm_server

    m = cfg.model
    if m.base_url is not None:
        yield m.base_url, m.tokenizer
        return
    assert m.path is not None
    path = Path(m.path).expanduser()
    model = str(merge_checkpoint(path, out_dir / "merged_model")) if is_verl_checkpoint(path) else m.path
    logger.info("serving %s as %r with vLLM (log: %s)", model, m.name, out_dir / "vllm.log")
    with vllm_server(model, m.name, out_dir / "vllm.log", port=m.serve.port, args=m.serve.args, env=m.serve.env,
                     timeout=m.serve.startup_timeout_s) as url:
        yield url, m.tokenizer or model


async def _retrieval_info(client: SearchClient) -> dict:
    """The retrieval server's `/health` (corpus, index, encoder), recorded with the results."""
    try:
        return await client.health()
    except Exception as e:  # intended: the record is informative, its absence must not stop the run
        return {"error": f"{type(e).__name__}: {e}"}


async def run_evaluation(cfg: EvalConfig, llm: ChatModel, client: SearchClient,
                         judge_llm: ChatModel | None = None, tokenizer: Tokenizer | None = None) -> dict[str, Path]:
    """Evaluate (or resume) in `cfg.run.output_dir`, then write the results and plots."""
    from sage_rl.eval.report import write_results

    out_dir = Path(cfg.run.output_dir).expanduser()
    judge = LLMJudge(judge_llm, max_tokens=cfg.judge.llm.max_tokens) if judge_llm is not None else None
    evaluator = Evaluator(llm, client, cfg.policy, cfg, judge, tokenizer)
    tasks = tasks_of(cfg)
    with folder_lock(out_dir, "sage-rl eval"):
        _check_resume(out_dir, cfg)
        trajectories = out_dir / "trajectories.jsonl"
        done = completed_rows(trajectories)
        if done:
            logger.info("resuming %s: %d of %d episodes already done", out_dir, len(done), len(tasks))
        appender = JsonlAppender(trajectories)
        try:
            rows = await run_tasks(evaluator, tasks, appender, done, cfg.run.progress)
        finally:
            appender.close()
    ordered = [rows[t.key] for t in tasks]
    paths = write_results(out_dir, ordered, cfg, retrieval=await _retrieval_info(client))
    return paths | {"trajectories": trajectories}


async def evaluate(cfg: EvalConfig) -> dict[str, Path]:
    """`sage-rl eval`: serve the model if asked, then run against the configured services."""
    from retrieval_server.client import AsyncRetrievalClient
    from sage_rl.llm import OpenAIChatModel

    out_dir = Path(cfg.run.output_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    s, j = cfg.sampling, cfg.judge.llm
    with model_endpoint(cfg, out_dir) as (url, tokenizer_path):
        tokenizer = None
        if tokenizer_path:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        llm = OpenAIChatModel(url, cfg.model.name, api_key_env=cfg.model.api_key_env, max_concurrency=s.max_concurrency,
                              timeout=s.timeout_s, max_retries=s.max_retries, temperature=s.temperature,
                              max_tokens=s.max_tokens)
        judge_llm = None
        if cfg.judge.kind == "llm":
            judge_llm = OpenAIChatModel(j.base_url, j.model, api_key_env=j.api_key_env, timeout=j.timeout_s,
                                        max_concurrency=j.max_concurrency, max_retries=j.max_retries, temperature=0.0)
        client = AsyncRetrievalClient(cfg.retrieval.url, timeout=cfg.retrieval.timeout_s,
                                      max_retries=cfg.retrieval.max_retries)
        try:
            return await run_evaluation(cfg, llm, client, judge_llm, tokenizer)
        finally:
            await client.aclose()
            for c in (llm, judge_llm):
                if c is not None:
                    await c.aclose()
