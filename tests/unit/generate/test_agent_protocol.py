"""The agent text protocol: action parsing, stop-string repair, rendering, truncation."""

from __future__ import annotations

from retrieval_server.client import Hit
from sage_rl import protocol
from sage_rl.protocol import Action


def test_last_valid_action_wins_and_empty_search_is_invalid():
    assert protocol.parse_action("<search>a</search><search>b</search>") == Action("search", "b")
    assert protocol.parse_action("<answer>x</answer> <search>  </search>") == Action("answer", "x")
    assert protocol.parse_action("<search></search>") is None
    assert protocol.parse_action("<search>unclosed") is None
    assert protocol.parse_action("<answer></answer>") == Action("answer", "")


def test_stop_string_cut_is_repaired_and_runaway_text_is_cut():
    assert protocol.close_stopped("<search> q") == "<search> q</search>"
    assert protocol.close_stopped("<answer>A") == "<answer>A</answer>"
    assert protocol.close_stopped("<search>a</search> and <answer>b") == "<search>a</search> and <answer>b</answer>"
    text = "<search>a</search><information>fake</information><answer>z</answer>"
    assert protocol.truncate_at_action(text) == "<search>a</search>"
    assert protocol.truncate_at_action(text, ("</answer>",)) == text
    assert protocol.truncate_at_action("no action") == "no action"


def test_extract_answer_keeps_its_last_block_behaviour():
    assert protocol.extract_answer("<answer>1</answer> <answer> 2 </answer>") == "2"
    assert protocol.extract_answer("<answer>open") is None


class CharTokenizer:
    """One token per character: makes token truncation easy to check."""

    def encode(self, text, add_special_tokens=False):
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


def test_observation_truncation_by_tokens():
    p = [Hit("1", "T\n" + "word " * 50, None)]
    short = protocol.render_information(p, max_tokens=6)
    assert short == "\n\n<information>Doc 1(Title: T) word word word</information>\n\n"  # 3 header words + 3
    assert protocol.render_information(p, max_tokens=10, tokenizer=CharTokenizer()) == (
        "\n\n<information>Doc 1(Titl</information>\n\n"
    )


def test_search_prompt_appends_question_mark_once():
    assert protocol.search_prompt("Who wrote Hamlet").endswith("Question: Who wrote Hamlet?\n")
    assert protocol.search_prompt("Who?").endswith("Question: Who?\n")
