"""Run ``torchtitan.train`` on CPU (gloo), to check the comparison driver where no GPU is.

Not for figures. torchtitan picks its device module when it is imported (CUDA when no
accelerator is found), so this stands in a small CPU device module before the import: device
name ``cpu``, peak RSS as "memory". Launch it where torchtitan's module would go:

    python -m bench.torchtitan_compare --titan-script bench/titan_cpu_shim.py ...
"""

import resource
import runpy
import sys
import types

import torch
import torch._utils


def _memory_stats(*_args) -> dict:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return {
        "active_bytes.all.peak": peak,
        "reserved_bytes.all.peak": peak,
        "num_alloc_retries": 0,
        "num_ooms": 0,
    }


CPU_MODULE = types.SimpleNamespace(
    get_device_name=lambda *_: "cpu",
    current_device=lambda: 0,
    get_device_properties=lambda *_: types.SimpleNamespace(total_memory=24 * 1024**3),
    reset_peak_memory_stats=lambda *_: None,
    empty_cache=lambda: None,
    memory_stats=_memory_stats,
    set_device=lambda *_: None,
    synchronize=lambda *_: None,
    is_available=lambda: True,
    device_count=lambda: 1,
    manual_seed=torch.manual_seed,
    manual_seed_all=torch.manual_seed,
)

if __name__ == "__main__":
    torch._utils._get_available_device_type = lambda: "cpu"
    torch._utils._get_device_module = lambda *_: CPU_MODULE
    sys.argv[0] = "torchtitan.train"
    runpy.run_module("torchtitan.train", run_name="__main__", alter_sys=True)
