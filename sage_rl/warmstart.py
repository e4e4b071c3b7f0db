"""Warm-start data: gold search trajectories for both SAGE roles, built from HotpotQA.

A 135M instruct model speaks neither role's protocol zero-shot, so PPO from it has almost no signal. But
HotpotQA is itself a set of gold multi-hop generations whose supporting paragraphs are all in the
embedded corpus, so we can write the trajectories a competent agent would produce:

- **solver** (`GoldSolver`): search the question (it finds the first supporting paragraph), search the
  title of the supporting paragraph still missing (the bridge entity), answer;
- **generator** (`GoldGenerator`): start from one supporting paragraph as the seed passage, search the
  other, then write the HotpotQA question, its answer and the solver's steps in the generator's format;
- **revision** (`gold_revision_example`): SAGE's feedback round (`sage_rl.generate.feedback`) on a draft
  that is the gold generator's with a wrong answer: the correctness prompt shows the draft's trace and
  the gold solver's, and the gold reply corrects the answer from the documents, in the revision format
  (`<reason>`, `<question>`, `<answer>`, `<search steps>`). Without these rows the warm-started generator
  had never seen a revision prompt: 21 of the 29 revisions the online benchmark's producer asked for
  came out garbled.

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
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from sage_rl import protocol
from sage_rl.episode import ChatSettings, EpisodePolicy, SearchClient, Trajectory, Turn, run_chat_episode
from sage_rl.generate.feedback import feedback_prompt
from sage_rl.generate.generator import generator_policy, initial_prompt
from sage_rl.generate.records import QACandidate, Seed, Verification
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
    revision_share: float = 0.5
    max_trace_tokens: int | None = 200
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
        for share in ("generator_share", "revision_share"):
            if not 0.0 <= float(block.get(share, 0.5)) <= 1.0:
                raise ValueError(f"gold.{share} must be in [0, 1], got {block[share]}")
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
    """A kept gold trajectory of one role, ready to become an SFT row (`seed`: the generator's seed passage)."""

    role: Literal["solver", "generator", "revision"]
    qid: str
    transcript: Transcript
    trajectory: Trajectory
    seed: Seed | None = None

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
    revision_kept: int = 0
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
    return GoldExample("generator", q.qid, "messages", trajectory, seed)


REVISION_K = 2  # solver rollouts the revision prompt says failed (sage_tiny_cpu's solver.num_rollouts)


def revision_steps(solver: GoldExample, answer: str, titles: Sequence[str]) -> list[str]:
    """The gold solver's searches as revision steps, `query | sub-answer | title`: a step's sub-answer is
    what the next step searches (HotpotQA's bridge entity), the last step's is the answer."""
    searches = [t for t in solver.trajectory.turns if t.kind == "search" and t.query]
    lines = []
    for i, turn in enumerate(searches):
        sub = searches[i + 1].query if i + 1 < len(searches) else answer
        lines.append(f"{turn.query} | {sub} | {', '.join(titles_in(turn.observation, titles)) or 'background'}")
    return lines


def gold_revision_example(q: GoldQuestion, generator: GoldExample, solver: GoldExample, wrong_answer: str,
                          max_trace_tokens: int | None) -> GoldExample:
    """A correctness round on a draft that is `generator`'s output with `wrong_answer`, rendered by the
    pipeline's own `feedback_prompt`; the shown attempt is the gold solver's, which found the answer.

    The gold reply keeps the question and takes the answer from the documents both traces retrieved (the
    answer paragraph is in the draft's own trace: the gold generator searched it), so it teaches the
    revision format and to trust the documents over the draft, not to copy the solver: the reason cites
    the document title.
    """
    assert generator.seed is not None, "a generator example carries its seed"
    turns = generator.trajectory.turns
    gold_answer = f"<answer> {q.answer} </answer>"
    assert gold_answer in turns[-1].text, "GoldGenerator writes the answer in this form"
    draft_turn = replace(turns[-1], text=turns[-1].text.replace(gold_answer, f"<answer> {wrong_answer} </answer>"))
    draft = replace(generator.trajectory, turns=(*turns[:-1], draft_turn), answer=wrong_answer)
    shown = solver.trajectory
    verification = Verification(k=REVISION_K, num_correct=0, correct=False, difficult=False, avg_at_k=0.0,
                                min_searches=None, searches=(shown.num_searches,) * REVISION_K,
                                answers=(shown.answer,) * REVISION_K)
    candidate = QACandidate(q.question, wrong_answer, ())
    prompt = feedback_prompt(generator.seed, candidate, verification, draft.transcript(), shown, max_trace_tokens)
    last_title = titles_in(observed(shown.turns[-2:]), q.titles) or list(q.titles[-1:])
    steps = "\n".join(revision_steps(solver, q.answer, q.titles))
    text = (f"<reason> The documents do not support my answer {wrong_answer}: {last_title[-1]} gives "
            f"{q.answer}, as the agent found. </reason>\n"
            f"<think> Keep the question and correct the answer from the documents. </think>\n"
            f"<question> {q.question} </question>\n<answer> {q.answer} </answer>\n"
            f"<search steps>\n{steps}\n</search steps>")
    trajectory = Trajectory(prompt, (Turn(text, "output"),), answer=q.answer, num_searches=0, end_reason="output")
    return GoldExample("revision", q.qid, "messages", trajectory, generator.seed)


def wrong_answers(questions: Sequence[GoldQuestion]) -> dict[str, str]:
    """For each question, another question's answer of the same SAGE answer type (the next one in order,
    wrapping around): a plausible wrong answer for its revision draft. Questions with no such partner
    are left out."""
    out: dict[str, str] = {}
    by_kind: dict[str, list[GoldQuestion]] = {}
    for q in questions:
        if (kind := answer_type(q.answer)) is not None:
            by_kind.setdefault(kind, []).append(q)
    for group in by_kind.values():
        for i, q in enumerate(group):
            for other in group[i + 1:] + group[:i]:
                if normalize_answer(other.answer) != normalize_answer(q.answer):
                    out[q.qid] = other.answer
                    break
    return out


async def build_gold(questions: Sequence[GoldQuestion], client: SearchClient, solver_policy: EpisodePolicy,
                     generator_policy: EpisodePolicy, seed_texts: dict[str, str], *,
                     generator_share: float = GoldConfig.generator_share,
                     revision_share: float = GoldConfig.revision_share,
                     max_trace_tokens: int | None = GoldConfig.max_trace_tokens,
                     tokenizer: Tokenizer | None = None, concurrency: int = 8,
                     progress: Any = None) -> tuple[list[GoldExample], GoldStats]:
    """Gold solver examples for every answerable question, generator examples for the first
    `generator_share` of them, and a revision example for the first `revision_share` of those (in
    question order, so the choice is deterministic; `max_trace_tokens` as the generate recipe's
    `loop.max_trace_tokens`).

    `tokenizer`: the model's, so observations are cut by its tokens as in training (`max_obs_tokens`).
    `progress`, if given, is called with each finished question (a tqdm's `update`, say).
    """
    stats = GoldStats()
    semaphore = asyncio.Semaphore(concurrency)
    n_gen = round(generator_share * len(questions))
    n_rev = round(revision_share * n_gen)
    wrong = wrong_answers(questions)

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
                    if gen is not None and i < n_rev and q.qid in wrong:
                        out.append(gold_revision_example(q, gen, solver, wrong[q.qid], max_trace_tokens))
                        stats.revision_kept += 1
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
                                generator_share=cfg.generator_share, revision_share=cfg.revision_share,
                                max_trace_tokens=cfg.max_trace_tokens, tokenizer=tokenizer,
                                concurrency=cfg.concurrency, progress=progress)
