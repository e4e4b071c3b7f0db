"""The agent text protocol every stage speaks: Search-R1's `<think>`/`<search>`/`<information>`/`<answer>`.

One definition shared by data generation, RL rollouts, rewards and evaluation, so that training and
evaluation parse and render exactly the same text.
"""

from __future__ import annotations

import re

ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


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
