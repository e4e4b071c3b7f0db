"""`sage-rl warmstart` end to end on CPU: the shipped recipe builds gold trajectories against a real retrieval
server, verl's SFT trainer (torchrun, FSDP2 on gloo) fine-tunes the embedded SmolLM2 on them, and the model is
cached by its inputs.

The smallest settings that still prove the claim: 8 HotpotQA train questions (a corpus slice holding their
supporting paragraphs, BM25), 3 epochs over the kept rows. The claim: the weights change, and on those
questions' solver prompts the model now opens with a `<search>` action, which the base model never does; a
second run with the same inputs reuses the model without training. (The whole main job, warm-start included,
is tests/e2e/test_quickstart_cpu.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from servers import retrieval_server

from sage_rl import protocol
from sage_rl.assets import embedded_questions, write_corpus_slice
from sage_rl.models import smollm2_path

pytestmark = pytest.mark.e2e
QUESTIONS = 8


def first_turns(model_dir: Path, questions: list[dict]) -> list[str]:
    """Greedy first turns on the solver prompt (64 tokens: the CPU recipes' max_turn_tokens), cut after the first
    action as the episode would."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    prompts = [tok.apply_chat_template([{"role": "user", "content": protocol.search_prompt(q["question"])}],
                                       tokenize=False, add_generation_prompt=True) for q in questions]
    batch = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=64, do_sample=False, pad_token_id=tok.pad_token_id)
    texts = tok.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    return [protocol.truncate_at_action(t) for t in texts]


def searches(turns: list[str]) -> int:
    """How many turns hold a complete `<search>` action."""
    return sum(1 for t in turns if (a := protocol.parse_action(t)) is not None and a.kind == protocol.SEARCH)


def check_warmstart(report: dict, cache: Path, questions: list[dict], epochs: int, batch: int) -> None:
    """What a warm-start must show: both roles' rows, a falling loss, changed weights, a model that searches."""
    from safetensors.torch import load_file

    gold, training = report["gold_stats"], report["training"]
    assert Path(report["model"]).parent == cache
    assert gold["solver_kept"] >= len(questions) // 2 and gold["generator_kept"] >= 1  # both roles
    assert gold["revision_kept"] >= 1  # and the generator's feedback rounds
    assert 1.0 <= gold["mean_searches"] <= 2.0
    kept = gold["solver_kept"] + gold["generator_kept"] + gold["revision_kept"]
    assert training["rows"] == kept - gold["too_long"]
    assert training["steps"] == (training["rows"] // batch) * epochs and training["losses"][-1] < training["losses"][0]
    base, model = smollm2_path(), Path(report["model"])
    before, after = load_file(base / "model.safetensors"), load_file(model / "model.safetensors")
    changed = [k for k in before if k in after and not before[k].equal(after[k])]
    assert len(changed) > len(before) // 2, f"only {len(changed)} of {len(before)} tensors changed"
    base_turns, warm_turns = first_turns(base, questions), first_turns(model, questions)
    assert searches(base_turns) == 0, base_turns
    # From never to most of the time after ~6 SFT steps on 8 questions (6 of 8 measured; the model also copies
    # the question into its <think> at this scale, which costs turn tokens; the main job measures the rest).
    assert searches(warm_turns) >= len(questions) // 2, warm_turns


def private_cache(tmp: Path) -> Path:
    """A cache of its own (so the warm-start trains instead of finding a model), holding the converted base."""
    cache = tmp / "cache"
    cache.mkdir()
    (cache / smollm2_path().name).symlink_to(smollm2_path())
    return cache


def _warmstart(out: Path, url: str, env: dict) -> tuple[subprocess.CompletedProcess, dict]:
    cmd = [sys.executable, "-m", "sage_rl.cli", "warmstart", "--config-name", "smollm2_cpu",
           f"gold.retrieval_url={url}", f"gold.limit={QUESTIONS}", "data.train_batch_size=4",
           "trainer.total_epochs=3", "optim.lr=1e-4", f"output_dir={out}"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done, json.loads((out / "warmstart.json").read_text())


def test_warmstart_fine_tunes_both_roles_and_is_cached(tmp_path: Path):
    questions = embedded_questions("train")[:QUESTIONS]
    corpus = tmp_path / "corpus.jsonl"
    write_corpus_slice(corpus, questions, distractors=200)
    cache = private_cache(tmp_path)
    env = {**os.environ, "SAGE_RL_CACHE": str(cache)}
    with retrieval_server(tmp_path / "retrieval", corpus, dense=False) as url:
        done, report = _warmstart(tmp_path / "run", url, env)
        assert done.stdout.strip().splitlines()[-1] == f"model: {report['model']}" and not report["cached"]
        assert (tmp_path / "run" / "sft.log").stat().st_size > 0  # verl's output went to the log file
        rerun, again = _warmstart(tmp_path / "run", url, env)
        assert again["cached"] and again["model"] == report["model"] and "fine-tuning" not in rerun.stdout
    check_warmstart(report, cache, questions, epochs=3, batch=4)
