"""Warm-start data: gold search trajectories for both SAGE roles, built from HotpotQA.

A 135M instruct model speaks neither role's protocol zero-shot, so PPO from it has almost no signal. But
HotpotQA is itself a set of gold multi-hop generations whose supporting paragraphs are all in the
embedded corpus, so we can write the trajectories a competent agent would produce:

- **solver** (`GoldSolver`): search the question (it finds the first supporting paragraph), search the
  title of the supporting paragraph still missing (the bridge entity), answer;
- **generator** (`GoldGenerator`): start from one supporting paragraph as the seed passage, search the
  other, then write the HotpotQA question, its answer and the solver's steps in the generator's format.

The gold models are scripted `ChatModel`s: the shipped episode engine (`run_chat_episode`) runs them under
the pipeline's own prompts and episode policies against the real retrieval server, so observations,
rendering and budgets are exactly what generation, training and evaluation see. A trajectory is kept
only if the searches really retrieved every supporting paragraph; the rest are dropped as unanswerable and
counted. `GoldExample.sft_row` turns a kept trajectory into a chat row for verl's SFT trainer: the
solver's row is one assistant message of text segments (`inline`, what the verl agent loop trains on)
with every observation marked not to train; the generator's observations are user messages
(`messages`, how `sage-rl generate` calls it), which verl's SFT dataset masks by itself.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sage_rl import protocol
from sage_rl.episode import ChatSettings, EpisodePolicy, SearchClient, Trajectory, Turn, run_chat_episode
from sage_rl.generate.generator import generator_policy, initial_prompt
from sage_rl.generate.records import Seed
from sage_rl.llm import Completion, Messages
from sage_rl.protocol import Tokenizer
from sage_rl.qa_match import normalize_answer

Transcript = Literal["inline", "messages"]

_MONTHS = ("january february march april may june july august september october november december").split()


@dataclass(frozen=True)
class GoldConfig:
    """The `gold:` block of a warm-start recipe (recipes/warmstart/smollm2_cpu.yaml)."""

    split: str = "train"
    limit: int | None = None
    generator_share: float = 0.5
    retrieval_url: str = "http://127.0.0.1:8000"
    solver: EpisodePolicy = field(default_factory=EpisodePolicy)
    generator: EpisodePolicy = field(default_factory=lambda: generator_policy())
    concurrency: int = 8

    @classmethod
    def from_mapping(cls, block: Mapping[str, Any] | None) -> GoldConfig:
        from sage_rl.config import reject_unknown

        block = dict(block or {})
        reject_unknown("gold", block, cls.__dataclass_fields__)
        solver = EpisodePolicy.from_mapping(block.pop("solver", None), "gold.solver")
        gen = dict(block.pop("generator", None) or {})
        reject_unknown("gold.generator", gen, ("max_searches", "topk", "max_obs_tokens"))
        if not 0.0 <= float(block.get("generator_share", 0.5)) <= 1.0:
            raise ValueError(f"gold.generator_share must be in [0, 1], got {block['generator_share']}")
        return cls(**block, solver=solver, generator=generator_policy(**gen))


@dataclass(frozen=True)
class GoldQuestion:
    """One HotpotQA question (a row of `sage_rl.assets.embedded_questions`)."""

    qid: str
    question: str
    answer: str
    titles: tuple[str, ...]  # supporting paragraphs' titles, as in the corpus (quotes stripped)
    doc_ids: tuple[str, ...]
    kind: str = "bridge"

    @classmethod
    def from_row(cls, row: dict) -> GoldQuestion:
        return cls(qid=str(row["id"]), question=row["question"], answer=row["golden_answers"][0],
                   titles=tuple(row["supporting_titles"]), doc_ids=tuple(row["supporting_doc_ids"]),
                   kind=row.get("type", "bridge"))


def answer_type(answer: str) -> str | None:
    """SAGE's answer type of a gold answer: `number`, `date` or `entity`; None for yes/no (not a SAGE type).

    >>> [answer_type(a) for a in ("1,200", "12 May 1999", "1999", "Tulsa", "yes")]
    ['number', 'date', 'date', 'entity', None]
    """
    norm = answer.strip().lower()
    if norm in ("yes", "no"):
        return None
    if re.fullmatch(r"(1[0-9]|20)\d\d", norm) or any(m in norm.split() for m in _MONTHS):
        return "date"
    if re.fullmatch(r"[\d,.]+( \w+)?", norm):
        return "number"
    return "entity"


def titles_in(text: str, titles: Iterable[str]) -> list[str]:
    """Which of `titles` appear in `text` as a rendered passage (`Doc i(Title: "T")`, quotes as in the corpus)."""
    return [t for t in titles if f'(Title: "{t}")' in text or f"(Title: {t})" in text]


def observed(turns: Iterable[Turn]) -> str:
    """Every observation of `turns`, as one text."""
    return "\n".join(t.observation for t in turns)


class GoldSolver:
    """The gold search agent for one question, as a `ChatModel`.

    Turn 1 searches the question; each later turn searches the title of a supporting paragraph not seen
    yet, until every one was retrieved or the search budget is spent; then it answers. Each search turn's
    `<think>` counts the budget ("search 2 of 2"), so a small model can tell from its own last turn that
    the next one must answer: without the count, SmolLM2 warm-started on these rows tried a third search in
    about a quarter of its held-out episodes and ended them unanswered.
    """

    def __init__(self, question: GoldQuestion, max_searches: int) -> None:
        self.q = question
        self.max_searches = max_searches
        self.searches = 0

    async def chat(self, messages: Messages, *, stop: Sequence[str] | None = None, max_tokens: int | None = None,
                   temperature: float | None = None, extra_body: dict[str, Any] | None = None) -> Completion:
        # What the episode showed so far: everything after the prompt (observations are user messages, or
        # part of the growing assistant message when the transcript is inline).
        seen = titles_in("\n".join(str(m.get("content") or "") for m in messages[1:]), self.q.titles)
        missing = [t for t in self.q.titles if t not in seen]
        count = f"Search {self.searches + 1} of {self.max_searches}"
        if self.searches == 0:
            query = protocol.as_question(self.q.question)
            text = f"<think> {count}: the question itself. </think>\n<search> {query} </search>"
        elif missing and self.searches < self.max_searches:
            found = f"I found {seen[0]}. " if seen else ""
            text = f"<think> {count}: {found}I still need {missing[0]}. </think>\n<search> {missing[0]} </search>"
        else:
            text = f"<think> The documents give the answer. </think>\n<answer> {self.q.answer} </answer>"
        self.searches += "<search>" in text
        return Completion(text, finish_reason="stop")


class GoldGenerator:
    """The gold data generator for one question, seeded with `seed_title`'s paragraph, as a `ChatModel`.

    It searches the other supporting paragraph's title, then writes the HotpotQA question, its answer
    and the solver's steps (`steps`: one `query; title found` line per step) in the generator's format.
    """

    def __init__(self, question: GoldQuestion, seed_title: str, steps: Sequence[str]) -> None:
        self.q = question
        self.seed_title = seed_title
        self.others = [t for t in question.titles if t != seed_title]
        self.steps = list(steps)
        self.searched = False

    async def chat(self, messages: Messages, *, stop: Sequence[str] | None = None, max_tokens: int | None = None,
                   temperature: float | None = None, extra_body: dict[str, Any] | None = None) -> Completion:
        if not self.searched and self.others:
            self.searched = True
            text = (f"<think> The starting document is about {self.seed_title}. A second fact about "
                    f"{self.others[0]} makes this a two-step question. </think>\n<search> {self.others[0]} </search>")
        else:
            steps = "\n".join(self.steps)
            text = (f"<think> {self.seed_title} and {', '.join(self.others)} chain together. </think>\n"
                    f"<question> {self.q.question} </question>\n<answer> {self.q.answer} </answer>\n"
                    f"<answering steps>\n{steps}\n</answering steps>")
        return Completion(text, finish_reason="stop")


@dataclass(frozen=True)
class GoldExample:
    """A kept gold trajectory of one role, ready to become an SFT row."""

    role: Literal["solver", "generator"]
    qid: str
    transcript: Transcript
    trajectory: Trajectory

    def sft_row(self) -> dict:
        """A chat row for verl's SFT trainer (`messages`), read by `sage_rl.train.sft.SearchSFTDataset`.

        `inline`: [user prompt, one assistant message whose `segments` say which text the model wrote
        (`train`) and which the environment appended (observations, not trained)]. `messages`: every
        observation is a user message, so only the model's turns are assistant messages.
        """
        t = self.trajectory
        messages: list[dict] = [{"role": "user", "content": t.prompt}]
        if self.transcript == "inline":
            segments = []
            for turn in t.turns:
                segments.append({"text": turn.text, "train": True})
                if turn.observation:
                    segments.append({"text": turn.observation, "train": False})
            messages.append({"role": "assistant", "content": "".join(s["text"] for s in segments),
                             "segments": segments})
        else:
            for turn in t.turns:
                messages.append({"role": "assistant", "content": turn.text})
                if turn.observation:
                    messages.append({"role": "user", "content": turn.observation})
        return {"messages": messages, "role": self.role, "qid": self.qid, "num_searches": t.num_searches}


@dataclass
class GoldStats:
    """What `build_gold` kept and dropped, per role."""

    solver_kept: int = 0
    solver_dropped: int = 0
    generator_kept: int = 0
    generator_dropped: int = 0
    searches: int = 0

    @property
    def mean_searches(self) -> float:
        return self.searches / self.solver_kept if self.solver_kept else 0.0


async def gold_solver_example(q: GoldQuestion, client: SearchClient, policy: EpisodePolicy,
                              transcript: Transcript = "inline",
                              tokenizer: Tokenizer | None = None) -> GoldExample | None:
    """The gold solver trajectory of `q` under `policy`, or None if its searches miss a supporting paragraph."""
    oracle = GoldSolver(q, policy.max_searches)
    messages = [{"role": "user", "content": protocol.search_prompt(q.question)}]
    trajectory = await run_chat_episode(oracle, messages, client, policy, ChatSettings(transcript=transcript),
                                        tokenizer)
    seen = titles_in(observed(trajectory.turns), q.titles)
    if trajectory.end_reason != "answer" or len(seen) < len(q.titles):
        return None
    return GoldExample("solver", q.qid, transcript, trajectory)


async def gold_generator_example(q: GoldQuestion, solver: GoldExample, client: SearchClient,
                                 policy: EpisodePolicy, seed_texts: dict[str, str],
                                 tokenizer: Tokenizer | None = None) -> GoldExample | None:
    """The gold generator trajectory of `q`, seeded with the paragraph the solver's first search found.

    None for yes/no answers (not a SAGE answer type), when the solver found both paragraphs with one
    search (no chain to teach), or when the generator's search misses the other supporting paragraph.
    `seed_texts` maps a supporting doc id to its corpus `contents`.
    """
    kind = answer_type(q.answer)
    if kind is None or len(q.titles) < 2:
        return None
    turns = solver.trajectory.turns
    first_seen = titles_in(turns[0].observation, q.titles)
    seed_title = first_seen[0] if first_seen else q.titles[0]
    seed_doc = q.doc_ids[q.titles.index(seed_title)]
    contents = seed_texts.get(seed_doc)
    if contents is None:
        return None
    steps = []
    for turn in turns:
        if turn.kind == "search" and turn.query:
            found = titles_in(turn.observation, q.titles)
            steps.append(f"{turn.query}; {', '.join(found) or 'background'}")
    if len(steps) < 2:
        return None  # one search found both paragraphs: not a two-step chain to teach the generator
    _, _, text = contents.partition("\n")
    seed = Seed(item_id=0, doc_id=seed_doc, title=seed_title, text=text, target_steps=len(steps),
                answer_type=kind)
    oracle = GoldGenerator(q, seed_title, steps)
    messages = [{"role": "user", "content": initial_prompt(seed, policy.max_searches)}]
    trajectory = await run_chat_episode(oracle, messages, client, policy, ChatSettings(transcript="messages"),
                                        tokenizer)
    seen = titles_in(observed(trajectory.turns), oracle.others)
    if trajectory.end_reason != "output" or len(seen) < len(oracle.others):
        return None
    return GoldExample("generator", q.qid, "messages", trajectory)


async def build_gold(questions: Sequence[GoldQuestion], client: SearchClient, solver_policy: EpisodePolicy,
                     generator_policy: EpisodePolicy, seed_texts: dict[str, str], *, generator_share: float = 0.5,
                     tokenizer: Tokenizer | None = None, concurrency: int = 8,
                     progress: Any = None) -> tuple[list[GoldExample], GoldStats]:
    """Gold solver examples for every answerable question, and generator examples for the first
    `generator_share` of them (in question order, so the choice is deterministic).

    `tokenizer`: the model's, so observations are cut by its tokens as in training (`max_obs_tokens`).
    `progress`, if given, is called with each finished question (a tqdm's `update`, say).
    """
    stats = GoldStats()
    semaphore = asyncio.Semaphore(concurrency)
    n_gen = round(generator_share * len(questions))

    async def one(i: int, q: GoldQuestion) -> list[GoldExample]:
        async with semaphore:
            out = []
            solver = await gold_solver_example(q, client, solver_policy, tokenizer=tokenizer)
            if solver is None:
                stats.solver_dropped += 1
            else:
                stats.solver_kept += 1
                stats.searches += solver.trajectory.num_searches
                out.append(solver)
                if i < n_gen:
                    gen = await gold_generator_example(q, solver, client, generator_policy, seed_texts, tokenizer)
                    stats.generator_kept += gen is not None
                    stats.generator_dropped += gen is None
                    out += [gen] if gen is not None else []
            if progress is not None:
                progress(1)
            return out

    results = await asyncio.gather(*(one(i, q) for i, q in enumerate(questions)))
    return [ex for group in results for ex in group], stats


def answer_in_evidence(example: GoldExample, answer: str) -> bool:
    """Whether the normalised answer occurs in the observations the trajectory retrieved."""
    seen = normalize_answer(observed(example.trajectory.turns))
    return normalize_answer(answer) in seen


def load_questions(split: str, limit: int | None) -> tuple[list[GoldQuestion], dict[str, str]]:
    """The embedded HotpotQA questions of `split` (the first `limit`), and their supporting paragraphs' contents."""
    from sage_rl.assets import EMBEDDED_CORPUS, embedded_questions, read_jsonl

    questions = [GoldQuestion.from_row(r) for r in embedded_questions(split)][:limit]
    if not questions:
        raise ValueError(f"no embedded HotpotQA questions in split {split!r} (limit {limit})")
    need = {d for q in questions for d in q.doc_ids}
    texts = {r["id"]: r["contents"] for r in read_jsonl(EMBEDDED_CORPUS) if r["id"] in need}
    return questions, texts


async def gold_for_config(cfg: GoldConfig, tokenizer: Tokenizer | None = None,
                          progress: Any = None) -> tuple[list[GoldExample], GoldStats]:
    """`build_gold` on the embedded questions against the retrieval server of `cfg`; a server that does not
    answer is a clear error before any work."""
    from retrieval_server.client import AsyncRetrievalClient

    questions, texts = load_questions(cfg.split, cfg.limit)
    async with AsyncRetrievalClient(cfg.retrieval_url) as client:
        try:
            await client.health()
        except Exception as e:  # intended: any failure here means there is no usable server
            raise ConnectionError(f"no retrieval server answers at {cfg.retrieval_url} ({type(e).__name__}: {e}); "
                                  "start one on the embedded corpus first (see the recipe's header)") from e
        return await build_gold(questions, client, cfg.solver, cfg.generator, texts,
                                generator_share=cfg.generator_share, tokenizer=tokenizer,
                                concurrency=cfg.concurrency, progress=progress)
