"""A stand-in OpenAI-compatible judge on a loopback port, for unit and end-to-end tests.

It grades like the paper's judge prompt asks (`correct: yes|no`) by comparing the prompt's `Response:` and
`Correct answer:` lines after SQuAD normalisation, and can be switched to fail: `mode` = `ok`, `error`
(HTTP 500 on every request) or `hang` (never answers in time). A refused connection needs no server:
use `refused_url()`. Requests are counted in `calls`. Runs in a thread of the test process, so verl's
reward workers (other processes) reach it over loopback too.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sage_rl.qa_match import normalize_answer


class JudgeState:
    def __init__(self, mode: str = "ok", hang_s: float = 30.0) -> None:
        self.mode, self.hang_s, self.calls, self.prompts = mode, hang_s, 0, []


def _verdict(prompt: str) -> str:
    response = re.search(r"Response: (.*)", prompt)
    gold = re.search(r"(?:Correct answer|Acceptable answers \(any one is correct\)): (.*)", prompt)
    golds = [g for g in (gold.group(1).split(", ") if gold else [])]
    ok = response is not None and normalize_answer(response.group(1)) in {normalize_answer(g) for g in golds}
    return f"extracted_final_answer: {response.group(1) if response else None}\nreasoning: compared\n" \
           f"correct: {'yes' if ok else 'no'}\nconfidence: 100%"


def _handler(state: JudgeState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            return

        def do_POST(self) -> None:
            try:
                self._answer()
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (the `hang` mode's point)
                pass

        def _answer(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.calls += 1
            prompt = body["messages"][0]["content"]
            state.prompts.append(prompt)
            if state.mode == "hang":
                time.sleep(state.hang_s)
            if state.mode == "error":
                self.send_response(500)
                self.end_headers()
                self.wfile.write(b"judge is down")
                return
            payload = {"choices": [{"message": {"content": _verdict(prompt)}, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 10, "completion_tokens": 10}}
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


@contextmanager
def judge_server(mode: str = "ok", hang_s: float = 30.0) -> Iterator[tuple[str, JudgeState]]:
    """(base URL up to /v1, state) of a running stand-in judge."""
    state = JudgeState(mode, hang_s)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", state
    finally:
        server.shutdown()
        server.server_close()


def refused_url() -> str:
    """A loopback URL where nothing listens (the port was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
