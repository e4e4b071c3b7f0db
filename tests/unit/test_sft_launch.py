"""The environment `sage-rl warmstart` starts verl's SFT trainer (torchrun) with."""

import json
import subprocess
import sys

from sage_rl.train.sft import SFT_MALLOC_ENV, sft_env

HEAP_PROBE = """
import ctypes, json
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
before = libc.mallinfo2().hblks  # blocks glibc took straight from the kernel
block = libc.malloc(64 << 20)  # about one row's logits
print(json.dumps(libc.mallinfo2().hblks - before))
"""


def mapped_blocks(env: dict[str, str]) -> int:
    """How many kernel mappings a process started with `env` makes for one 64 MB block."""
    out = subprocess.run([sys.executable, "-c", HEAP_PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_sft_processes_on_cpu_take_big_blocks_from_the_heap():
    plain = {"PATH": "/usr/bin:/bin"}
    assert mapped_blocks(plain) == 1  # glibc's default: a fresh mapping, unmapped again on free
    env = sft_env(plain, cpu=True)
    assert env == {**plain, **SFT_MALLOC_ENV}
    assert mapped_blocks(env) == 0


def test_sft_env_leaves_accelerators_and_own_malloc_settings_alone():
    assert sft_env({"A": "1"}, cpu=False) == {"A": "1"}
    for own in ({"GLIBC_TUNABLES": ""}, {"MALLOC_ARENA_MAX": "2"}, {"MALLOC_TOP_PAD_": "0"}):
        assert sft_env(own, cpu=True) == own
