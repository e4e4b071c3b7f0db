"""The SAGE loop (paper Algorithms 1-2) per seed, and the resumable, concurrent run around it.

Per seed (`process_item`):
  round 0   the generator searches and writes a QA pair for target S and an answer type;
  verify    K solver rollouts, judged: correct = pass@K, difficult = |S*| >= S; both -> accepted, stop
            (`loop.reject_stated_answers`: a question that states its answer is not difficult);
  rounds 1..R  feedback (difficulty or correctness prompt with both traces, one call, no search) or, with
            `loop.mode=resample`, a fresh round-0 generation; then verify again;
  garbled   output without a question or answer uses up its round (counted, not raised); the next round tries
            again: from the seed while no pair has been verified, else the same feedback once more
            (`loop.retry_garbled=false` ends the item instead). An item whose last round is garbled is `garbled`.
Around it (`run_generation`): a bounded pool of items in flight, per-item retries then a recorded
failure, append-only exactly-once storage (`store.py`), a progress bar, and at the end assembly
(`assemble.py`) and the report (`report.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from retrieval_server.client import Hit
from sage_rl.assets import EMBEDDED_CORPUS, read_jsonl
from sage_rl.episode import ChatSettings, SearchClient, Trajectory
from sage_rl.generate.assemble import assemble, states_answer, write_outputs
from sage_rl.generate.config import GenerateConfig, to_yaml
from sage_rl.generate.feedback import choose_trace, feedback_kind, feedback_prompt
from sage_rl.generate.generator import Generator, generator_policy
from sage_rl.generate.records import ItemRecord, RoundKind, RoundRecord, Seed, Status
from sage_rl.generate.store import RecordStore
from sage_rl.generate.verify import verify
from sage_rl.judge import Verdict, make_judge
from sage_rl.llm import ChatModel, MeteredChatModel
from sage_rl.protocol import Tokenizer
from sage_rl.search_agent import SearchAgent, solver_policy

logger = logging.getLogger(__name__)


@dataclass
class Pipeline:
    """The services one run talks to; built from config by `build_pipeline`, or faked in tests."""

    generator_llm: ChatModel
    solver_llm: ChatModel
    retriever: SearchClient
    judge_llm: ChatModel | None = None
    tokenizer: Tokenizer | None = None


def _corpus_rows(corpus: str) -> Iterator[dict]:
    return read_jsonl(EMBEDDED_CORPUS if corpus == "embedded" else Path(corpus).expanduser())


def sample_seeds(cfg: GenerateConfig) -> list[Seed]:
    """Deterministic seeds: a reservoir sample of corpus passages (one streaming pass, any corpus size),
    then per item a target S and an answer type from an item-specific RNG, so resumes see identical seeds."""
    s = cfg.seeds
    rng = random.Random(f"sage-seeds:{s.seed}")
    reservoir: list[dict] = []
    eligible = 0
    for row in _corpus_rows(s.corpus):
        passage = Hit(str(row["id"]), row["contents"], None)
        if len(passage.text.split()) < s.min_words:
            continue
        if eligible < s.num_items:
            reservoir.append(row)
        elif (j := rng.randint(0, eligible)) < s.num_items:
            reservoir[j] = row
        eligible += 1
    if eligible < s.num_items:
        logger.warning("only %d corpus passages have >= %d words; generating %d items", eligible, s.min_words, eligible)
    seeds = []
    for i, row in enumerate(reservoir):
        item_rng = random.Random(f"sage-item:{s.seed}:{i}")
        passage = Hit(str(row["id"]), row["contents"], None)
        seeds.append(Seed(
            item_id=i, doc_id=passage.id, title=passage.title, text=passage.text,
            target_steps=item_rng.randint(s.min_steps, s.max_steps), answer_type=item_rng.choice(s.answer_types),
        ))
    return seeds


@dataclass(frozen=True)
class RoundTrace:
    """Everything one round ran: the generator's episode, the K solver episodes and their verdicts."""

    round: int
    kind: str
    generator: Trajectory
    solver: tuple[Trajectory, ...] = ()
    verdicts: tuple[Verdict, ...] = ()
    feedback_trace_index: int | None = None  # the solver rollout shown to the generator next round

    def to_dict(self) -> dict:
        return {"round": self.round, "kind": self.kind, "generator": self.generator.to_dict(),
                "solver": [t.to_dict() for t in self.solver], "verdicts": [asdict(v) for v in self.verdicts],
                "feedback_trace_index": self.feedback_trace_index}


def _agents(cfg: GenerateConfig, pipe: Pipeline, meters: dict[str, MeteredChatModel]) -> tuple[Generator, SearchAgent]:
    g, sv, topk = cfg.generator, cfg.solver, cfg.retrieval.topk
    generator = Generator(
        llm=meters["generator"], client=pipe.retriever,
        policy=generator_policy(max_searches=g.max_searches, topk=topk, max_obs_tokens=g.max_obs_tokens),
        settings=ChatSettings(max_tokens=g.llm.max_tokens, temperature=g.llm.temperature),
        tokenizer=pipe.tokenizer,
    )
    solver = SearchAgent(
        llm=meters["solver"], client=pipe.retriever,
        policy=solver_policy(max_searches=sv.max_searches, topk=topk, max_obs_tokens=sv.max_obs_tokens),
        settings=ChatSettings(max_tokens=sv.llm.max_tokens, temperature=sv.llm.temperature),
        tokenizer=pipe.tokenizer,
    )
    return generator, solver


async def process_item(seed: Seed, cfg: GenerateConfig, pipe: Pipeline) -> tuple[ItemRecord, dict]:
    """Run round 0 and up to R feedback rounds for one seed. Returns the record and its trajectories."""
    started = time.monotonic()
    meters = {"generator": MeteredChatModel(pipe.generator_llm), "solver": MeteredChatModel(pipe.solver_llm)}
    if pipe.judge_llm is not None:
        meters["judge"] = MeteredChatModel(pipe.judge_llm)
    generator, solver = _agents(cfg, pipe, meters)
    judge = make_judge(cfg.judge.kind, meters.get("judge"), f1_threshold=cfg.judge.f1_threshold,
                       max_tokens=cfg.judge.llm.max_tokens)
    rng = random.Random(f"sage-feedback:{cfg.seeds.seed}:{seed.item_id}")

    rounds: list[RoundRecord] = []
    traces: list[RoundTrace] = []
    basis: int | None = None  # index of the latest verified round: what the next feedback revises
    basis_trace = ""  # the generator's trace behind that round's pair, as the next feedback shows it
    candidate, gen_traj = await generator.generate(seed)
    search_trace = gen_trace = gen_traj.transcript()  # the latest search episode from the seed
    kind: RoundKind = "initial"
    status: Status = "rejected"
    accepted_round = None
    for r in range(cfg.loop.rounds + 1):
        if r > 0:
            if cfg.loop.mode == "resample" or basis is None:
                kind = "resample"
                candidate, gen_traj = await generator.generate(seed)
                search_trace = gen_trace = gen_traj.transcript()
            else:
                prev, prev_trace = rounds[basis], traces[basis]
                assert prev.candidate is not None and prev.verification is not None
                assert prev_trace.feedback_trace_index is not None
                shown = prev_trace.solver[prev_trace.feedback_trace_index]
                kind = feedback_kind(prev.verification)
                prompt = feedback_prompt(seed, prev.candidate, prev.verification, basis_trace, shown,
                                         cfg.loop.max_trace_tokens)
                evidence = tuple(dict.fromkeys([*prev.candidate.evidence_doc_ids, *shown.doc_ids]))
                candidate, gen_traj = await generator.revise(prompt, evidence)
                gen_trace = f"{search_trace}\n\n[your latest revision]\n{gen_traj.final_text}"
        if candidate is None:
            rounds.append(RoundRecord(r, kind, None, None, gen_traj.budget_exhausted))
            traces.append(RoundTrace(r, kind, gen_traj))
            status = "garbled"
            if cfg.loop.retry_garbled:
                continue
            break
        verification, solver_trajs, verdicts = await verify(
            candidate.question, [candidate.answer], seed.target_steps, solver, judge, cfg.solver.num_rollouts
        )
        if cfg.loop.reject_stated_answers and states_answer(candidate.question, candidate.answer):
            verification = replace(verification, shortcut=True, difficult=False)
        rounds.append(RoundRecord(r, kind, candidate, verification, gen_traj.budget_exhausted))
        traces.append(RoundTrace(r, kind, gen_traj, tuple(solver_trajs), tuple(verdicts),
                                 choose_trace(solver_trajs, verdicts, rng)))
        basis, basis_trace, status = len(rounds) - 1, gen_trace, "rejected"
        if verification.correct and verification.difficult:
            status, accepted_round = "accepted", r
            break
    usage = {role: asdict(m.usage) for role, m in meters.items()}
    record = ItemRecord(seed.item_id, seed, status, tuple(rounds), accepted_round, usage,
                        elapsed_s=round(time.monotonic() - started, 3))
    return record, {"rounds": [t.to_dict() for t in traces]}


async def process_with_retries(seed: Seed, cfg: GenerateConfig, pipe: Pipeline) -> tuple[ItemRecord, dict]:
    """`process_item`, retried on any error; after `run.item_retries` retries the failure itself is the record."""
    error = ""
    for attempt in range(1, cfg.run.item_retries + 2):
        try:
            record, trajectories = await process_item(seed, cfg, pipe)
            return replace(record, attempts=attempt), trajectories
        except Exception as e:  # intended: one item's fault must never stop the run
            error = f"{type(e).__name__}: {e}"
            logger.warning("item %d attempt %d failed: %s", seed.item_id, attempt, error)
    failed = ItemRecord(seed.item_id, seed, "failed", error=error[:2000], attempts=cfg.run.item_retries + 1)
    return failed, {"rounds": []}


class _Tally:
    """Running counts for the progress bar: statuses, and per round passed/tried (O(1) per item)."""

    def __init__(self) -> None:
        self.status: Counter[str] = Counter()
        self.tried: Counter[int] = Counter()
        self.passed: Counter[int] = Counter()

    def add(self, rec: ItemRecord) -> None:
        self.status[rec.status] += 1
        for rnd in rec.rounds:
            self.tried[rnd.round] += 1
            self.passed[rnd.round] += rnd.passed

    def __str__(self) -> str:
        per_round = " ".join(f"r{k}:{self.passed[k]}/{self.tried[k]}" for k in sorted(self.tried))
        s = self.status
        return f"accepted={s['accepted']} garbled={s['garbled']} failed={s['failed']} pass {per_round}"


async def run_items(cfg: GenerateConfig, pipe: Pipeline, store: RecordStore, seeds: list[Seed],
                    done: dict[int, ItemRecord]) -> dict[int, ItemRecord]:
    """Process every seed not yet done with a bounded worker pool; each result is stored as it finishes."""
    from tqdm.auto import tqdm

    queue: asyncio.Queue[Seed] = asyncio.Queue()
    for seed in seeds:
        if seed.item_id not in done:
            queue.put_nowait(seed)
    finished = dict(done)
    tally = _Tally()
    for rec in done.values():
        tally.add(rec)
    bar = tqdm(total=len(seeds), initial=len(done), desc="sage generate", unit="item", disable=not cfg.run.progress)

    async def worker() -> None:
        while True:
            try:
                seed = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            record, trajectories = await process_with_retries(seed, cfg, pipe)
            store.append(record, trajectories)
            finished[record.item_id] = record
            tally.add(record)
            bar.update(1)
            bar.set_postfix_str(str(tally), refresh=False)

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, cfg.run.max_concurrent_items))))
    finally:
        bar.close()
    return finished


def _check_resume(out_dir: Path, cfg: GenerateConfig) -> None:
    """Refuse to resume a folder whose seeds or loop settings differ: the records would not be one run."""
    from omegaconf import OmegaConf

    saved = out_dir / "config.yaml"
    if not saved.exists():
        saved.write_text(to_yaml(cfg))
        return
    new = OmegaConf.structured(cfg)
    # Over the schema's defaults, so a setting added since the folder was started does not block its resume.
    old = OmegaConf.merge(OmegaConf.structured(type(cfg)), OmegaConf.load(saved))
    for key in ("seeds", "loop"):
        if OmegaConf.to_container(old[key]) != OmegaConf.to_container(new[key]):
            raise ValueError(f"{out_dir} holds a run with different `{key}` settings; use a new run.output_dir")


async def run_generation(cfg: GenerateConfig, pipe: Pipeline) -> dict[str, Path]:
    """Generate (or resume) a run in `cfg.run.output_dir`, then assemble the dataset and write the report."""
    from sage_rl.generate.report import write_report

    out_dir = Path(cfg.run.output_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    with RecordStore(out_dir) as store:
        _check_resume(out_dir, cfg)
        done = store.open()
        seeds = sample_seeds(cfg)
        if done:
            logger.info("resuming %s: %d of %d items already done", out_dir, len(done), len(seeds))
        records = await run_items(cfg, pipe, store, seeds, done)
    ordered = [records[k] for k in sorted(records)]
    items = assemble(ordered, cfg.loop.rounds, cfg.assemble.min_searches)
    paths = write_outputs(items, out_dir, cfg.assemble.data_source)
    paths["report"] = write_report(out_dir, ordered, items, cfg)
    paths["records"], paths["trajectories"] = store.records_path, store.trajectories_path
    return paths


@contextlib.asynccontextmanager
async def build_pipeline(cfg: GenerateConfig):
    """Real services from config: OpenAI-compatible clients and the retrieval server's async client."""
    from retrieval_server.client import AsyncRetrievalClient
    from sage_rl.llm import OpenAIChatModel

    def client(c) -> OpenAIChatModel:
        return OpenAIChatModel(c.base_url, c.model, api_key_env=c.api_key_env, max_concurrency=c.max_concurrency,
                               timeout=c.timeout_s, max_retries=c.max_retries, backoff=c.backoff_s,
                               temperature=c.temperature, max_tokens=c.max_tokens, extra_body=dict(c.extra_body))

    tokenizer = None
    if cfg.run.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(cfg.run.tokenizer)
    retriever = AsyncRetrievalClient(cfg.retrieval.url, timeout=cfg.retrieval.timeout_s,
                                     max_retries=cfg.retrieval.max_retries)
    llms = [client(cfg.generator.llm), client(cfg.solver.llm)]
    judge_llm = client(cfg.judge.llm) if cfg.judge.kind == "llm" else None
    try:
        yield Pipeline(llms[0], llms[1], retriever, judge_llm, tokenizer)
    finally:
        for llm in [*llms, judge_llm]:
            if llm is not None:
                await llm.aclose()
        await retriever.aclose()


async def generate(cfg: GenerateConfig) -> dict[str, Path]:
    """`sage-rl generate`: run against the services named in config."""
    async with build_pipeline(cfg) as pipe:
        return await run_generation(cfg, pipe)
