"""A scripted SAGE world for tests: fake retriever and one responder that plays generator, solver and judge.

The responder is a plain function of the chat messages (plus per-question rollout counters), so tests
state the behaviour they need (how many searches the solver makes, what it answers, what the generator
writes in each round) and assert the loop's decisions against it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from retrieval_server.client import Hit
from sage_rl.qa_match import normalize_answer


class FakeRetriever:
    """Three deterministic passages per query; `fail` raises instead (fault injection)."""

    def __init__(self, fail: Callable[[str], bool] | None = None) -> None:
        self.queries: list[str] = []
        self.fail = fail

    async def retrieve(self, queries: list[str], topk: int | None = None) -> list[list[Hit]]:
        out = []
        for q in queries:
            self.queries.append(q)
            if self.fail is not None and self.fail(q):
                raise ConnectionError(f"retrieval down for {q!r}")
            slug = re.sub(r"\W+", "-", q.strip().lower())[:40]
            hits = [Hit(f"{slug}#{i}", f'"{q} {i}"\nPassage {i} about {q}.', 1.0 / (i + 1)) for i in range(topk or 3)]
            out.append(hits)
        return out


def qa(question: str, answer: str, steps: str = "q1; a1\nq2; a2", tag: str = "answering steps") -> str:
    """A well-formed generator output."""
    return f"<think>done</think><question>{question}</question><answer>{answer}</answer><{tag}>{steps}</{tag}>"


def revision(question: str, answer: str) -> str:
    return "<reason>too easy</reason><think>plan</think>" + qa(question, answer, "q | a | Doc", "search steps")


@dataclass
class World:
    """Behaviour of every role.

    gen_outputs(title, k): generator text for round k of the seed titled `title` (k=0 after its searches,
    k>=1 for revisions). solver(question, rollout) -> (searches, answer or None). judge: match by EM, or
    `judge_reply` overrides the judge's text.
    """

    gen_outputs: Callable[[str, int], str]
    solver: Callable[[str, int], tuple[int, str | None]]
    gen_searches: int = 1
    judge_reply: Callable[[str, str], str] | None = None
    rollouts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    prompts: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def __call__(self, messages: list[dict[str, str]]) -> str:
        prompt = messages[0]["content"]
        assistant = [m["content"] for m in messages if m["role"] == "assistant"]
        if prompt.startswith("You write hard research questions"):
            self.prompts["generator"].append(prompt)
            title = re.search(r"Doc 0\(Title: (.*?)\)", prompt).group(1)
            if len(assistant) < self.gen_searches:
                return f"<think>need more</think><search> {title} fact {len(assistant)} </search>"
            return self.gen_outputs(title, 0)
        if "<generator_trace>" in prompt:
            self.prompts["revision"].append(prompt)
            title = re.search(r"Doc 0\(Title: (.*?)\)", prompt).group(1)
            return self.gen_outputs(title, 1 + prompt.count("[your latest revision]"))
        if prompt.startswith("Answer the question below."):
            question = re.search(r"Question: (.*?)\?\n", prompt).group(1)
            if not assistant:
                rollout = self.rollouts[question]
                self.rollouts[question] += 1
            else:
                rollout = int(re.search(r"rollout (\d+)", assistant[0]).group(1))
            searches, answer = self.solver(question, rollout)
            head = f"<think>rollout {rollout}</think>" if not assistant else "<think>go on</think>"
            if len(assistant) < searches:
                return head + f"<search> {question} step {len(assistant)} </search>"
            return head + (f"<answer> {answer} </answer>" if answer is not None else "no idea")
        if prompt.startswith("You are grading"):
            response = re.search(r"Response: (.*?)\n\n", prompt, re.DOTALL).group(1)
            gold = re.search(r"(?:Correct answer|Acceptable answers \(any one is correct\)): (.*?)\n\n", prompt,
                             re.DOTALL).group(1)
            if self.judge_reply is not None:
                return self.judge_reply(response, gold)
            ok = normalize_answer(response) in {normalize_answer(g) for g in gold.split(",")}
            return f"extracted_final_answer: {response}\nreasoning: compared\ncorrect: {'yes' if ok else 'no'}"
        raise AssertionError(f"unscripted prompt: {prompt[:200]}")


def write_corpus(path, n: int = 12) -> str:
    """A Search-R1 corpus of `n` passages titled T0..T{n-1}, long enough to be seeds."""
    import json

    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"doc{i}", "contents": f'"T{i}"\n' + f"T{i} is a place number {i}. " * 6}) + "\n")
    return str(path)


def standard_world() -> World:
    """Per seed T{i}: i%3==0 correct with 3 searches, i%3==1 correct with 1 search (too easy), else wrong."""

    def gen(title: str, k: int) -> str:
        return qa(f"Q about {title}", f"A{title}") if k == 0 else revision(f"Q about {title} v{k}", f"A{title}")

    def solver(question: str, rollout: int) -> tuple[int, str | None]:
        i = int(question.split(" ")[2][1:])
        return {0: (3, f"AT{i}"), 1: (1, f"AT{i}"), 2: (2, "nope")}[i % 3]

    return World(gen_outputs=gen, solver=solver)


def standard_cfg(out_dir, corpus: str, num_items: int = 12):
    from sage_rl.generate.config import GenerateConfig

    cfg = GenerateConfig()
    cfg.seeds.corpus, cfg.seeds.num_items, cfg.seeds.min_steps, cfg.seeds.max_steps = corpus, num_items, 2, 3
    cfg.solver.num_rollouts, cfg.loop.rounds, cfg.judge.kind = 2, 1, "llm"
    cfg.run.output_dir, cfg.run.progress, cfg.run.max_concurrent_items, cfg.run.item_retries = str(out_dir), False, 3, 1
    return cfg
