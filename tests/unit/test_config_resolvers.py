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


def test_unknown_dataset_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SAGE_RL_CACHE", str(tmp_path))
    cfg = OmegaConf.create({"x": "${sage_rl.data:nq-train}"})
    with pytest.raises(Exception, match="unknown embedded dataset 'nq-train'"):
        resolve_own_interpolations(cfg)
