"""Provenance of a run: code version, package versions, hardware, command line, environment."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import torch

from recipes import distributed
from recipes.stage import checkout_head

PACKAGES = ("recipes", "torch", "lightning", "hydra-core", "omegaconf", "torchao", "megatron-core")
ENV_PREFIXES = (
    "SLURM_",
    "CUDA_",
    "NCCL_",
    "HIP_",
    "ROCR_",
    "TORCH_",
    "PYTORCH_",  # the caching allocator's setting (PYTORCH_ALLOC_CONF)
    "NVTE_",  # Transformer Engine's switches
    "RECIPES_",
    "STAGE_PATH",
)
ENV_NAMES = (
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "GSW_VERSION",
    "OMP_NUM_THREADS",
)


def git_sha() -> str | None:
    """Commit of the code that runs: RECIPES_GIT_SHA (set when staged), else that of the source
    checkout this package runs from (an editable install); None for an installed copy."""
    if sha := os.environ.get("RECIPES_GIT_SHA"):
        return sha
    return checkout_head(Path(__file__).resolve().parents[3])  # <root>/src/recipes/results


def package_versions() -> dict[str, str | None]:
    """Installed version of each package that shapes the numbers (None when absent)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def accelerator_info() -> dict[str, str | int | None]:
    """The device as torch sees it (CUDA or ROCm alike), with runtime versions."""
    info: dict[str, str | int | None] = {
        "cuda": torch.version.cuda,
        "hip": torch.version.hip,
        "device_count": torch.cuda.device_count(),
    }
    if torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name()
        if torch.cuda.nccl.is_available(torch.zeros(1, device="cuda")):
            info["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
    else:
        info["device_name"] = "cpu"
    return info


def driver_version() -> str | None:
    """The GPU driver's version, from the vendor tool where it is installed (None elsewhere)."""
    if torch.version.hip:
        amdgpu = Path("/sys/module/amdgpu/version")
        return amdgpu.read_text().strip() if amdgpu.is_file() else None
    if torch.version.cuda and shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        try:
            out = subprocess.run(query, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        lines = out.stdout.strip().splitlines()
        return lines[0].strip() if out.returncode == 0 and lines else None
    return None


def gpu_info() -> dict[str, str | int | None]:
    """GPU model, count per node and driver: from torch (CUDA or ROCm alike), else the scheduler."""
    scheduler = os.environ.get("RECIPES_GPUS_PER_NODE") or os.environ.get("SLURM_GPUS_ON_NODE")
    if torch.cuda.is_available():
        model, count = torch.cuda.get_device_name(), torch.cuda.device_count()
    else:
        model, count = None, int(scheduler) if scheduler and scheduler.isdigit() else 0
    return {"model": model, "count_per_node": count, "driver": driver_version()}


def stage_info() -> dict | None:
    """What setup.sh staged for this run (image, digest, code), from launch.sh's stage.json."""
    path = os.environ.get("RECIPES_STAGE_JSON")
    if not path:
        return None
    try:
        stage = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    keys = ("stage_path", "staged_at", "runtime", "image", "digest", "git_sha", "git_dirty")
    return {k: stage.get(k) for k in keys} | {"versions": stage.get("versions")}


def node_list() -> list[str]:
    """Every node: launch.sh's expanded list, else Slurm's (compressed), else this host."""
    nodes = os.environ.get("RECIPES_NODES") or os.environ.get("SLURM_JOB_NODELIST")
    return nodes.split(",") if nodes else [socket.gethostname()]


def build_manifest(world_size: int) -> dict:
    """Everything needed to say which code ran where and how."""
    stage = stage_info()
    return {
        "git_sha": git_sha(),
        "versions": package_versions(),
        "accelerator": accelerator_info(),
        "gpu": gpu_info(),
        "host": socket.gethostname(),
        "nodes": node_list(),
        "world_size": world_size,
        # As the process groups hold it, the mesh's and Megatron's groups included.
        "comm_timeout_minutes": distributed.group_timeouts(),
        "job_total_gpus": int(os.environ.get("RECIPES_JOB_TOTAL_GPUS") or world_size),
        "container_image": os.environ.get("RECIPES_CONTAINER_IMAGE") or (stage or {}).get("image"),
        "container_digest": (
            os.environ.get("RECIPES_CONTAINER_DIGEST") or (stage or {}).get("digest")
        ),
        "stage": stage,
        "command": sys.argv,
        "env": {
            k: v
            for k, v in sorted(os.environ.items())
            if k.startswith(ENV_PREFIXES) or k in ENV_NAMES
        },
    }
