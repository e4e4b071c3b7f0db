"""sage_rl's own interpolations are resolved in the driver; verl's are left for verl."""

import pytest
from omegaconf import OmegaConf

from sage_rl.config import resolve_own_interpolations


def test_only_sage_rl_interpolations_are_resolved(tmp_path, monkeypatch):
    monkeypatch.setenv("SAGE_RL_CACHE", str(tmp_path))
    cfg = OmegaConf.create({
        "data": {"files": ["${sage_rl.data:hotpotqa-dev}"], "copy": "${data.files}"},
        "batch": 4, "micro": "${batch}",
    })
    resolve_own_interpolations(cfg)
    assert cfg.data.files[0].startswith(str(tmp_path)) and cfg.data.files[0].endswith(".parquet")
    assert OmegaConf.is_interpolation(cfg, "micro")
    assert OmegaConf.is_interpolation(cfg.data, "copy")


def test_only_the_models_a_composed_recipe_ends_with_are_prepared(monkeypatch):
    # cpu/tiny.yaml names tiny-qwen2 and cpu/smollm2.yaml overrides it: OmegaConf's merge evaluated the first value
    from sage_rl.config import register_resolvers
    from sage_rl.train.launch import load_train_config

    prepared = []
    monkeypatch.setattr("sage_rl.models.model_path", lambda name: prepared.append(name) or f"/cache/{name}")
    register_resolvers()  # registered before composing, as a second command in one process finds them
    cfg = load_train_config("grpo_search_smollm2_cpu")
    assert prepared == ["smollm2"] and cfg.actor_rollout_ref.model.path == "/cache/smollm2"


def test_unknown_dataset_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SAGE_RL_CACHE", str(tmp_path))
    cfg = OmegaConf.create({"x": "${sage_rl.data:nq-train}"})
    with pytest.raises(Exception, match="unknown embedded dataset 'nq-train'"):
        resolve_own_interpolations(cfg)


@pytest.mark.parametrize(("flags", "dtype"), [
    ("fpu sse avx2 fma", "float32"),                        # plain AVX2: bf16 is emulated, slow
    ("avx2 avx512f avx512_bf16", "bfloat16"),
    ("avx2 avx512f amx_bf16 amx_tile", "bfloat16"),
])
def test_cpu_dtype_follows_the_cpu_flags(tmp_path, flags, dtype):
    from sage_rl.serving import cpu_dtype

    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: x\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    assert cpu_dtype(info) == dtype
    assert cpu_dtype(tmp_path / "missing") == "float32"
    cfg = OmegaConf.create({"args": ["--dtype", "${sage_rl.cpu_dtype:}"]})
    resolve_own_interpolations(cfg)
    assert cfg.args[1] == cpu_dtype()


def test_hydra_list_round_trips_through_hydras_override_parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from sage_rl.config import hydra_list

    items = ["a.b=1", "retrieval.url=http://127.0.0.1:8000", "data.path=/x/y.parquet", "k=[1,2]"]
    (override,) = OverridesParser.create().parse_overrides([f"stage.overrides={hydra_list(items)}"])
    assert override.value() == items
