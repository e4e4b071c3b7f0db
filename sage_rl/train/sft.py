"""Supervised fine-tuning on search trajectories with verl's SFT trainer (the warm-start's training step).

`SearchSFTDataset` is verl's `MultiTurnSFTDataset` (selected with `data.custom_cls`) plus one thing: an
assistant message that carries `segments` (rows written by `sage_rl.warmstart.GoldExample.sft_row`) is
tokenised segment by segment, the way `SearchAgentLoop` builds a PPO trajectory: the model's turns as
text it wrote (trained), each observation encoded on its own and appended (loss mask 0). So the
warm-start trains on exactly the token sequences PPO later samples and scores, with the retrieved text
masked, and chat rows without segments are verl's own.

`run_warmstart` is `sage-rl warmstart`: gold rows (`sage_rl.warmstart`), then verl's SFT trainer launched as
verl documents it (`torchrun -m verl.trainer.sft_trainer`, `sft_command`; on a machine with no accelerator
`sage_rl.train.cpu_platform`, loaded by `import verl`, makes it run on gloo), then the trained Hugging Face
folder moved into sage_rl's cache under a key of its inputs (the gold rows, the verl config, the base
model), so a rerun with the same inputs trains nothing.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from omegaconf import DictConfig, OmegaConf
from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

from sage_rl.config import compose, recipes_dir, resolve_own_interpolations
from sage_rl.files import atomic_write, atomic_write_text, folder_lock
from sage_rl.models import build_once, cache_dir
from sage_rl.train.cpu_platform import CPU_ACTIVE
from sage_rl.warmstart import GoldConfig, gold_for_config

TRAINING_RECORD = "sage_rl_warmstart.json"  # beside the weights: loss curve, steps, time
_STEP_RE = re.compile(r"step:(\d+) - .*?train/loss:([-\d.e+]+)")


class SearchSFTDataset(MultiTurnSFTDataset):
    """verl's multi-turn SFT dataset, with segment-wise assistant messages (see the module docstring)."""

    def _process_single_message(self, index: int, message: dict[str, Any], full_message: list,
                                tools: Any = None, enable_thinking: bool | None = None):
        segments = message.get("segments") if message["role"] == "assistant" else None
        if not segments:
            return super()._process_single_message(index, message, full_message, tools, enable_thinking)
        ids = list(self.generation_prompt)
        mask = [0] * len(ids)
        for segment in segments:
            piece = self.tokenizer.encode(segment["text"], add_special_tokens=False)
            ids += piece
            mask += [int(bool(segment["train"]))] * len(piece)
        end = self._assistant_suffix
        ids += end
        mask += [1] * len(end)  # the end-of-turn token is the model's, as in verl's assistant messages
        input_ids = torch.tensor(ids, dtype=torch.long)
        return input_ids, torch.tensor(mask, dtype=torch.long), torch.ones_like(input_ids), {}

    @functools.cached_property
    def _assistant_suffix(self) -> list[int]:
        """The tokens the chat template puts after an assistant message's content (`<|im_end|>\\n`)."""
        marker = "\u2063sage-rl\u2063"
        text = self.tokenizer.apply_chat_template([{"role": "assistant", "content": marker}], tokenize=False)
        return self.tokenizer.encode(text.split(marker, 1)[1], add_special_tokens=False)

    def sanity_check(self, input_ids, messages, tools, enable_thinking) -> None:
        # verl checks that per-message tokenisation equals the whole chat's; segment-wise tokenisation
        # differs on purpose (it is the agent loop's), so only chat rows without segments are checked.
        if any(m.get("segments") for m in messages if m["role"] == "assistant"):
            return
        super().sanity_check(input_ids, messages, tools, enable_thinking)


SFT_MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 36)}
"""glibc's malloc for the SFT's processes on CPU: every block from the heap, none handed back to the kernel.
glibc maps each block over 32 MB fresh from the kernel and unmaps it on free, and every row makes several (its
logits, tokens x 49k vocabulary, and their gradients), so each row paid tens of thousands of page faults, every
page zeroed by the kernel. From the heap, the warm-start's SFT step took 0.907 the time, same losses
(`benchmarks/cpu_malloc.py`). Not for GRPO's Ray workers: there the update was no faster (1.08x, one paired run)
and the actor held 2.4 GB more. An environment that tunes malloc itself (`GLIBC_TUNABLES`, even empty, or
any `MALLOC_*`) keeps its own."""


def sft_env(environ: dict[str, str], cpu: bool) -> dict[str, str]:
    """The SFT processes' environment: `environ`, on CPU with `SFT_MALLOC_ENV` unless it tunes malloc itself."""
    own = any(key == "GLIBC_TUNABLES" or key.startswith("MALLOC_") for key in environ)
    return {**environ, **(SFT_MALLOC_ENV if cpu and not own else {})}


def sft_command(config_dir: Path, config_name: str, nproc_per_node: int = 1) -> list[str]:
    """verl's SFT trainer on a composed config file, launched as verl documents it (torchrun)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}",
            "-m", "verl.trainer.sft_trainer", f"--config-path={config_dir.resolve()}", f"--config-name={config_name}"]


@dataclass(frozen=True)
class WarmStartResult:
    """What `sage-rl warmstart` made: the fine-tuned model folder, the gold rows and the run's report."""

    model: Path
    gold: Path
    report: Path
    cached: bool


def load_warmstart_config(config_name: str, overrides: list[str] | None = None,
                          config_dir: str | Path | None = None) -> DictConfig:
    """A warm-start recipe composed on verl's `sft_trainer_engine`, sage_rl's interpolations resolved."""
    cfg = compose(config_dir or recipes_dir() / "warmstart", config_name, overrides)
    resolve_own_interpolations(cfg)
    GoldConfig.from_mapping(OmegaConf.to_container(cfg.gold))  # a typo in `gold:` fails before any work
    return cfg


def verl_config(cfg: DictConfig, gold: Path, out: Path) -> DictConfig:
    """The recipe without sage_rl's own keys, pointed at the gold rows and the run folder."""
    verl_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k not in ("gold", "output_dir")])
    verl_cfg.data.train_files = str(gold.resolve())
    verl_cfg.trainer.default_local_dir = str((out / "sft").resolve())
    return verl_cfg


def input_key(rows: list[dict], cfg: DictConfig) -> str:
    """A hash of everything the fine-tuned weights depend on: the rows, verl's settings, the base model."""
    settings = OmegaConf.to_container(cfg, resolve=False)
    settings["data"].pop("train_files", None)
    settings["trainer"].pop("default_local_dir", None)
    blob = json.dumps({"rows": rows, "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def fitting_rows(rows: list[dict], tokenizer: Any, max_length: int) -> tuple[list[dict], int]:
    """The rows whose chat fits in `max_length` tokens (verl's SFT dataset refuses longer ones), and how many
    did not. A few tokens of margin cover segment-wise tokenisation, which can differ from the whole chat's."""
    kept = []
    for row in rows:
        chat = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        if len(tokenizer.apply_chat_template(chat, tokenize=True, return_dict=True)["input_ids"]) <= max_length - 16:
            kept.append(row)
    return kept, len(rows) - len(kept)


def run_warmstart(cfg: DictConfig, progress: bool = True) -> WarmStartResult:
    """Build the gold rows, fine-tune on them (unless the cache has the model already), write `warmstart.json`."""
    from tqdm import tqdm
    from transformers import AutoTokenizer

    gold_cfg = GoldConfig.from_mapping(OmegaConf.to_container(cfg.gold))
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with folder_lock(out, "sage-rl warmstart"):
        started = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(cfg.model.path)
        with tqdm(total=None, desc="gold trajectories", unit="q", disable=not progress) as bar:
            examples, stats = asyncio.run(gold_for_config(gold_cfg, tokenizer, bar.update))
        rows, too_long = fitting_rows([e.sft_row() for e in examples], tokenizer, cfg.data.max_length)
        if not rows:
            raise RuntimeError(f"no gold trajectory was kept ({stats}); is the retrieval server's corpus the "
                               "embedded HotpotQA corpus?")
        gold = atomic_write(out / "gold.parquet", lambda p: pq.write_table(pa.Table.from_pylist(rows), p))
        gold_s = time.perf_counter() - started
        print(f"gold: {stats.solver_kept} solver + {stats.generator_kept} generator trajectories + "  # noqa: T201
              f"{stats.revision_kept} revisions "
              f"({stats.solver_dropped} unanswerable questions dropped, {stats.mean_searches:.2f} searches "
              f"per solver trajectory; {too_long} rows over data.max_length left out) -> {gold}", flush=True)

        run_cfg = verl_config(cfg, gold, out)
        key = input_key(rows, run_cfg)
        cached = (cache_dir() / f"warmstart-{key}").is_dir()
        model = build_once(f"warmstart-{key}", lambda folder: _train(run_cfg, out, len(rows), folder, progress))
        if cached:
            print(f"warm-start: cached model for these inputs: {model}", flush=True)  # noqa: T201
        report = {
            "model": str(model), "gold": str(gold), "cached": cached, "input_key": key,
            "base_model": str(cfg.model.path),
            "gold_stats": asdict(stats) | {"mean_searches": stats.mean_searches, "too_long": too_long},
            # how the cached weights were trained (kept beside them, so a cache hit reports it too)
            "training": json.loads((model / TRAINING_RECORD).read_text()),
            "seconds": {"gold": round(gold_s, 1), "total": round(time.perf_counter() - started, 1)},
        }
        report_path = atomic_write_text(out / "warmstart.json", json.dumps(report, indent=2))
    return WarmStartResult(model, gold, report_path, cached)


def _train(cfg: DictConfig, out: Path, n_rows: int, target: Path, progress: bool) -> None:
    """verl's SFT trainer on `cfg` (logs to `<out>/sft.log`); the final Hugging Face folder goes to `target`."""
    from tqdm import tqdm

    started = time.perf_counter()
    run_dir = out / "sft"
    shutil.rmtree(run_dir, ignore_errors=True)  # a previous, interrupted run's checkpoints
    run_dir.mkdir(parents=True)
    (run_dir / "sft.yaml").write_text(OmegaConf.to_yaml(cfg))
    log_path = out / "sft.log"
    steps = (n_rows // cfg.data.train_batch_size) * cfg.trainer.total_epochs
    losses: list[float] = []
    print(f"fine-tuning {cfg.model.path} on {n_rows} rows, {steps} steps; log: {log_path}", flush=True)  # noqa: T201
    with open(log_path, "w") as log, tqdm(total=steps, desc="warm-start SFT", unit="step",
                                          disable=not progress) as bar:
        env = {**sft_env(dict(os.environ), cpu=CPU_ACTIVE),
               "PYTHONUNBUFFERED": "1"}  # step lines as they happen, for the progress bar
        proc = subprocess.Popen(sft_command(run_dir, "sft"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1, env=env)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            log.flush()  # the log is the user's view of a run that prints only a progress bar
            if match := _STEP_RE.search(line):
                losses.append(float(match.group(2)))
                bar.update(int(match.group(1)) - bar.n)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
        code = proc.wait()
    if code != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-20:])
        raise RuntimeError(f"verl's SFT trainer failed (exit {code}); last lines of {log_path}:\n{tail}")
    finals = sorted(run_dir.glob("global_step_*/huggingface"), key=lambda p: int(p.parent.name.split("_")[-1]))
    if not finals or not any(finals[-1].glob("*.safetensors")):
        raise RuntimeError(f"verl's SFT trainer saved no Hugging Face model under {run_dir}")
    if not losses or not all(math.isfinite(x) for x in losses):
        raise RuntimeError(f"the SFT loss is missing or diverged ({losses}); see {log_path}")
    shutil.copytree(finals[-1], target, dirs_exist_ok=True)
    record = {"rows": n_rows, "steps": len(losses), "losses": losses,
              "seconds": round(time.perf_counter() - started, 1)}
    (target / TRAINING_RECORD).write_text(json.dumps(record, indent=2))
