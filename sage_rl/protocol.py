"""The agent text protocol every stage speaks: Search-R1's `<think>`/`<search>`/`<information>`/`<answer>`.

One definition shared by data generation (generator and solver agents), RL rollouts, rewards and
evaluation, so that training and evaluation parse and render exactly the same text:

- tags and the stop strings a model is sampled with (`</search>`, `</answer>`);
- `parse_action`: the last complete action of a turn (Search-R1 takes the first; we take the last so
  that a model quoting an example before acting is read by what it finally did);
- `INVALID_ACTION_MESSAGE`: the observation after a turn with no valid action: Search-R1's wording with the
  tags named, not written (Search-R1's `between <answer> and </answer>` parses as the answer "and"), so
  nothing the environment says can be read as an action;
- `render_information`: retrieved passages exactly as Search-R1's `_passages2string` renders them,
  `Doc i(Title: <first line of contents>) <rest>` (the title keeps its quotes), inside `<information>`;
- `truncate_tokens`: observation truncation by tokens (a tokenizer's, or whitespace tokens without one);
- `SEARCH_PROMPT`: our wording of Search-R1's "base" instruction for search agents.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from retrieval_server.client import Hit

THINK, SEARCH, INFORMATION, ANSWER = "think", "search", "information", "answer"
STOP_STRINGS: tuple[str, ...] = ("</search>", "</answer>")

ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_ACTION_RE = re.compile(r"<(search|answer)>(.*?)</\1>", re.DOTALL)

INVALID_ACTION_MESSAGE = (
    "\nMy previous action is invalid. If I want to search, I should put the query between the search tags. "
    "If I want to give the final answer, I should put the answer between the answer tags. Let me try again.\n"
)

# Our paraphrase of Search-R1's base template (`make_prefix` in its `scripts/data_process/nq_search.py`);
# `{question}` is filled by `search_prompt`.
SEARCH_PROMPT = (
    "Answer the question below. Every time you receive new information, first reason about it inside "
    "<think> and </think>. If you lack some knowledge, you can query a search engine by writing "
    "<search> your query </search>; the results will be returned between <information> and "
    "</information>. You may search as often as you need. When you know the answer, write it inside "
    "<answer> and </answer> with no explanation, for example <answer> Beijing </answer>. "
    "Question: {question}\n"
)


def extract_answer(text: str) -> str | None:
    """The content of the last complete `<answer>...</answer>` block, stripped, or None.

    The last one counts because a policy's response may quote earlier attempts or retrieved text.

    >>> extract_answer("<think>hm</think><answer> Paris </answer>")
    'Paris'
    >>> extract_answer("no tags") is None
    True
    """
    matches = ANSWER_RE.findall(text)
    return matches[-1].strip() if matches else None


def as_question(text: str) -> str:
    """Strip a question and end it with `?`, as Search-R1 does for its prompts.

    >>> as_question(" Who wrote Hamlet ")
    'Who wrote Hamlet?'
    """
    text = text.strip()
    return text if text.endswith("?") else text + "?"


def search_prompt(question: str) -> str:
    """The search-agent instruction for one question (used by the solver and in verl training rows)."""
    return SEARCH_PROMPT.format(question=as_question(question))


@dataclass(frozen=True)
class Action:
    """A parsed action: `kind` is `search` or `answer`; `content` is the stripped tag body."""

    kind: Literal["search", "answer"]
    content: str


def close_stopped(text: str) -> str:
    """Re-append the closing tag that a stop string cut off.

    OpenAI-compatible servers drop the matched stop string, so `<search> q </search>` comes back as
    `<search> q`; we close the last unclosed `<search>`/`<answer>` so parsing sees the whole action.

    >>> close_stopped("<think>x</think><search> capital of France")
    '<think>x</think><search> capital of France</search>'
    >>> close_stopped("<answer> Paris </answer>")
    '<answer> Paris </answer>'
    """
    for tag in (SEARCH, ANSWER):
        opened = text.rfind(f"<{tag}>")
        if opened != -1 and text.find(f"</{tag}>", opened) == -1:
            return text + f"</{tag}>"
    return text


def parse_action(text: str) -> Action | None:
    """The last complete `<search>` or `<answer>` action in a turn, or None if the turn has none.

    An empty search query is not a valid action (nothing to send to the retriever).

    >>> parse_action("<think>a</think><search> who is X </search>")
    Action(kind='search', content='who is X')
    >>> parse_action("<search>q</search> then <answer> 42 </answer>")
    Action(kind='answer', content='42')
    >>> parse_action("just prose") is None
    True
    """
    for match in reversed(list(_ACTION_RE.finditer(text))):
        content = match.group(2).strip()
        if content or match.group(1) == ANSWER:
            return Action(kind=match.group(1), content=content)  # type: ignore[arg-type]
    return None


def truncate_at_action(text: str, stops: Sequence[str] = STOP_STRINGS) -> str:
    """Cut a turn right after its first closed action, as generation with stop strings would.

    Servers that ignore stop strings (or fake models) may run on and invent their own `<information>`;
    everything after the first `</search>`/`</answer>` is discarded so the environment's observation is
    the only one the agent sees.

    >>> truncate_at_action("<search> q </search><information>made up</information>")
    '<search> q </search>'
    """
    ends = [i + len(s) for s in stops if (i := text.find(s)) != -1]
    return text[: min(ends)] if ends else text


class Tokenizer(Protocol):
    """The two methods of a Hugging Face tokenizer that truncation needs."""

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


def truncate_tokens(text: str, max_tokens: int | None, tokenizer: Tokenizer | None = None) -> str:
    """Keep the first `max_tokens` tokens of `text` (Search-R1's `max_obs_length`).

    With no tokenizer, whitespace-separated words stand in for tokens (an underestimate of real
    token counts by roughly 1.3x for English), which keeps the protocol usable without a model.

    >>> truncate_tokens("a b c d", 2)
    'a b'
    >>> truncate_tokens("a b", None)
    'a b'
    """
    if max_tokens is None:
        return text
    if tokenizer is None:
        words = text.split()
        return text if len(words) <= max_tokens else " ".join(words[:max_tokens])
    ids = tokenizer.encode(text, add_special_tokens=False)
    return text if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens])


def render_passages(passages: Iterable[Hit]) -> str:
    """Search-R1's `_passages2string`: one `Doc i(Title: <first line>) <rest>` line per passage, 1-based.

    Passages are `retrieval_server.client.Hit`s, sage_rl's one passage type (a corpus row: id, contents).

    The title is the first line of `contents` as it is, quotes included, like Search-R1's.

    >>> render_passages([Hit("1", '"Paris"\\nCapital of France.', None)])
    'Doc 1(Title: "Paris") Capital of France.\\n'
    """
    out = []
    for i, p in enumerate(passages, 1):
        title, _, text = p.contents.partition("\n")
        out.append(f"Doc {i}(Title: {title}) {text}\n")
    return "".join(out)


def render_information(
    passages: Iterable[Hit], max_tokens: int | None = None, tokenizer: Tokenizer | None = None
) -> str:
    """The observation after a search: Search-R1's `\\n\\n<information>{passages.strip()}</information>\\n\\n`.

    Truncation (`max_tokens`, Search-R1's `max_obs_length`) cuts the passages, not the tags: Search-R1
    cuts the whole observation's tokens, which can drop the closing `</information>`.

    >>> render_information([Hit("1", '"Paris"\\nCapital of France.', None)])
    '\\n\\n<information>Doc 1(Title: "Paris") Capital of France.</information>\\n\\n'
    """
    body = truncate_tokens(render_passages(passages).strip(), max_tokens, tokenizer)
    return f"\n\n<{INFORMATION}>{body}</{INFORMATION}>\n\n"


def extract_tag(text: str, tag: str) -> str | None:
    """The stripped content of the last complete `<tag>...</tag>` block, or None.

    >>> extract_tag("<question> Who? </question>", "question")
    'Who?'
    """
    matches = re.findall(rf"<{re.escape(tag)}>(.*?)</{re.escape(tag)}>", text, re.DOTALL)
    return matches[-1].strip() if matches else None
