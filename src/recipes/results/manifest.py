"""Provenance of a run: code version, package versions, hardware, command line, environment."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

import torch

PACKAGES = ("recipes", "torch", "lightning", "hydra-core", "omegaconf", "torchao", "megatron-core")
ENV_PREFIXES = ("SLURM_", "CUDA_", "NCCL_", "HIP_", "ROCR_", "TORCH_", "RECIPES_", "STAGE_PATH")
ENV_NAMES = ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GSW_VERSION")


def git_sha() -> str | None:
    """Commit of the code that runs: RECIPES_GIT_SHA (set when staged), else the source checkout."""
    if sha := os.environ.get("RECIPES_GIT_SHA"):
        return sha
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


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


def build_manifest(world_size: int) -> dict:
    """Everything needed to say which code ran where and how."""
    return {
        "git_sha": git_sha(),
        "versions": package_versions(),
        "accelerator": accelerator_info(),
        "host": socket.gethostname(),
        "nodes": os.environ.get("SLURM_JOB_NODELIST", socket.gethostname()),
        "world_size": world_size,
        "container_image": os.environ.get("RECIPES_CONTAINER_IMAGE"),
        "container_digest": os.environ.get("RECIPES_CONTAINER_DIGEST"),
        "command": sys.argv,
        "env": {
            k: v
            for k, v in sorted(os.environ.items())
            if k.startswith(ENV_PREFIXES) or k in ENV_NAMES
        },
    }
