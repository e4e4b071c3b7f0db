"""The data generator agent A_gen: round 0 (search, then write a QA pair) and revisions (one call, no search).

Round 0 (the paper's initial generation; `QUESTION_GENERATION_WITH_SEARCH` in the authors' released code):
the generator gets a seed passage, the target number of searches S and an answer type; it reasons in
`<think>`, searches with `<search>` up to a budget (default 20), then writes `<question>`, `<answer>` and
`<answering steps>`. If it still searches after the budget, it is told the budget is used up and called
once more. Revisions (`revise`) are a single call with the feedback prompt of `feedback.py` and output
`<search steps>` instead of `<answering steps>`.

Output that lacks a non-empty `<question>` or `<answer>` is garbled: `parse_candidate` returns None and
the loop records the round as garbled instead of crashing. The prompts are our own wording of those in
the authors' released code (google-research `sage/prompt_templates/`), not their text.
"""

from __future__ import annotations

from dataclasses import dataclass

from sage_rl import protocol
from sage_rl.episode import ChatSettings, EpisodePolicy, SearchClient, Trajectory, Turn, run_chat_episode
from sage_rl.generate.records import QACandidate, Seed
from sage_rl.llm import ChatModel
from sage_rl.protocol import Tokenizer

ANSWER_TYPE_PHRASES = {"number": "a number", "date": "a date", "entity": "an entity"}

BUDGET_MESSAGE = (
    "\nI have used up my whole search budget. I must now write the question, the answer and the answering "
    "steps from what I have found, using <question>, <answer> and <answering steps>.\n"
)

INITIAL_PROMPT = """You write hard research questions that test search agents.

Starting document:
Doc 0(Title: {title}) {text}

Task: write one question whose answer is {answer_type}, such that a search agent working over Wikipedia \
needs at least {steps} separate searches to answer it.

How to work:
- Reason inside <think> and </think> about the starting document, and again after every search result.
- To look something up, write <search> query </search>. Results come back between <information> and \
</information>. You may search up to {budget} times: collect facts that chain together, each from a \
different document.
- When you are done, write the question between <question> and </question>, the answer between <answer> \
and </answer>, and the solver's steps between <answering steps> and </answering steps>, one line per step \
(search query; what it finds).

Requirements:
- The answer and every step must be supported by the documents you saw. Your own knowledge may only help \
you choose queries.
- The question must stand on its own: the solver never sees the starting document.
- Every step must be necessary: no single search may reveal the facts of two steps.
- Do not ask How or Why questions. The answer is short, {answer_type}, correct and unique.
"""


def answer_type_phrase(answer_type: str) -> str:
    """'number' -> 'a number'; unknown types are used as written."""
    return ANSWER_TYPE_PHRASES.get(answer_type, answer_type)


def initial_prompt(seed: Seed, budget: int) -> str:
    return INITIAL_PROMPT.format(
        title=seed.title, text=seed.text, answer_type=answer_type_phrase(seed.answer_type),
        steps=seed.target_steps, budget=budget,
    )


def parse_candidate(
    text: str, steps_tag: str, evidence_doc_ids: tuple[str, ...] = (), reason: str | None = None
) -> QACandidate | None:
    """The QA pair in a generator's final output, or None when the question or answer is missing or empty.

    >>> parse_candidate("<question>Who?</question><answer>Ann</answer>", "answering steps").answer
    'Ann'
    >>> parse_candidate("<question>Who?</question>", "answering steps") is None
    True
    """
    question = protocol.extract_tag(text, "question")
    answer = protocol.extract_tag(text, "answer")
    if not question or not answer:
        return None
    steps_text = protocol.extract_tag(text, steps_tag) or ""
    steps = tuple(line.strip() for line in steps_text.splitlines() if line.strip())
    return QACandidate(question, answer, steps, evidence_doc_ids, reason)


def generator_policy(max_searches: int = 20, topk: int = 3, max_obs_tokens: int | None = 500) -> EpisodePolicy:
    """A_gen's episode: any turn that does not search is its output; past the budget it is told to write
    the pair and called once more; a retrieval error fails the round (the item is retried)."""
    return EpisodePolicy(
        max_searches=max_searches, on_budget="force_answer", budget_message=BUDGET_MESSAGE,
        on_retrieval_error="fail", max_obs_tokens=max_obs_tokens, topk=topk, ends_on="no_search",
    )


@dataclass
class Generator:
    """A_gen: its episode policy and sampling settings."""

    llm: ChatModel
    client: SearchClient
    policy: EpisodePolicy
    settings: ChatSettings
    tokenizer: Tokenizer | None = None

    async def generate(self, seed: Seed) -> tuple[QACandidate | None, Trajectory]:
        """Round 0 (and the resample baseline): search, then write a QA pair."""
        messages = [{"role": "user", "content": initial_prompt(seed, self.policy.max_searches)}]
        trajectory = await run_chat_episode(self.llm, messages, self.client, self.policy, self.settings,
                                            self.tokenizer)
        evidence = tuple(dict.fromkeys([seed.doc_id, *trajectory.doc_ids]))
        return parse_candidate(trajectory.final_text, "answering steps", evidence), trajectory

    async def revise(self, prompt: str, evidence_doc_ids: tuple[str, ...]) -> tuple[QACandidate | None, Trajectory]:
        """One feedback call with no search; the reply must hold `<question>`, `<answer>`, `<search steps>`."""
        completion = await self.llm.chat([{"role": "user", "content": prompt}], max_tokens=self.settings.max_tokens,
                                         temperature=self.settings.temperature)
        text = completion.text
        turn = Turn(text, "output", prompt_tokens=completion.prompt_tokens,
                    completion_tokens=completion.completion_tokens)
        trajectory = Trajectory(prompt, (turn,), answer=protocol.extract_tag(text, "answer"), num_searches=0,
                                end_reason="output")
        candidate = parse_candidate(text, "search steps", evidence_doc_ids, protocol.extract_tag(text, "reason"))
        return candidate, trajectory
