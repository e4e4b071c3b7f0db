"""The offline default models load from installed packages and the cache, never from a hub."""

import json
import subprocess
import sys

import pytest

from sage_rl import models


def test_embedder_is_the_real_all_minilm_l6_v2():
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(models.embedder_path()), device="cpu")
    a, b, c = model.encode(["A man is eating food.", "A man is eating a piece of bread.",
                            "The girl is carrying a baby."], normalize_embeddings=True)
    assert model.get_embedding_dimension() == 384
    assert float(a @ b) == pytest.approx(0.755, abs=0.01)  # the published all-MiniLM-L6-v2 similarity
    assert float(a @ c) < 0.1


def test_tiny_model_is_vllm_cpu_compatible_and_uses_chatml():
    path = models.tiny_model_path()
    config = json.loads((path / "config.json").read_text())
    assert config["head_dim"] == 64  # vLLM CPU attention rejects 16
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    assert tok.eos_token == "<|im_end|>" and config["eos_token_id"] == tok.eos_token_id
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")


def test_build_is_atomic_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SAGE_RL_CACHE", str(tmp_path))
    calls = []

    def build(out):
        calls.append(out)
        (out / "weights").write_text("w")

    first = models.build_once("thing", build)
    assert (first / "weights").read_text() == "w"
    assert models.build_once("thing", build) == first and len(calls) == 1

    def broken(out):
        (out / "partial").write_text("x")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        models.build_once("other", broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thing"]  # nothing half-written is left


def test_unknown_model_name():
    with pytest.raises(ValueError, match="expected one of"):
        models.model_path("gpt-5")


def test_cli_models_prepare_prints_paths():
    out = subprocess.run([sys.executable, "-m", "sage_rl.cli", "models", "prepare", "embedder", "tiny-qwen2"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"embedder: {models.embedder_path()}" in out.stdout
    assert f"tiny-qwen2: {models.tiny_model_path()}" in out.stdout

