"""The encoder leaves the process environment alone: offline mode is the caller's choice, not the library's."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest

from retrieval_server.config import EncoderConfig
from retrieval_server.encoder import SentenceTransformerEncoder, resolve_model_path


class _FakeSentenceTransformer:
    """Records how it was constructed; no torch, no download."""

    calls: list[dict] = []

    def __init__(self, path: str, **kwargs) -> None:
        self.calls.append({"path": path, **kwargs})
        self.max_seq_length = 512

    def get_embedding_dimension(self) -> int:
        return 768


@pytest.fixture
def fake_st(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Stand in for the sentence_transformers module and start from an environment without offline flags."""
    _FakeSentenceTransformer.calls = []
    module = types.ModuleType("sentence_transformers")
    module.SentenceTransformer = _FakeSentenceTransformer
    monkeypatch.setitem(sys.modules, "sentence_transformers", module)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # tests/conftest.py sets it for every test
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    return _FakeSentenceTransformer.calls


def test_hub_model_does_not_touch_the_environment(fake_st: list[dict]) -> None:
    before = dict(os.environ)
    enc = SentenceTransformerEncoder(EncoderConfig(model="intfloat/e5-base-v2"))
    assert dict(os.environ) == before and "HF_HUB_OFFLINE" not in os.environ
    assert fake_st == [{"path": "intfloat/e5-base-v2", "device": "cpu", "local_files_only": False}]
    assert (enc.dim, enc.query_prefix, enc.passage_prefix) == (768, "query: ", "passage: ")


def test_embedded_default_loads_local_files_only(fake_st: list[dict]) -> None:
    before = dict(os.environ)
    SentenceTransformerEncoder(EncoderConfig())
    assert dict(os.environ) == before
    [call] = fake_st
    assert call["local_files_only"] is True
    assert call["path"] == resolve_model_path("all-MiniLM-L6-v2") and Path(call["path"]).is_dir()
