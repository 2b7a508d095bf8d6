"""What the launcher (torchrun, srun, or nothing) says about the processes of this job."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist

RENDEZVOUS_VARS = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "NODE_RANK",
)
"""What a launcher (or Lightning) exports for torch.distributed's rendezvous."""


def world_size() -> int:
    """Processes in the job: torchrun's WORLD_SIZE, Slurm's SLURM_NTASKS, else 1."""
    return int(os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS") or 1)


def local_world_size() -> int:
    """Processes on this node."""
    value = os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("SLURM_NTASKS_PER_NODE")
    return int(value) if value else world_size()


def global_rank() -> int:
    """This process's rank in the job."""
    return int(os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or 0)


def lightning_devices() -> dict[str, int]:
    """``devices`` and ``num_nodes`` for ``lightning.Trainer`` matching the launched processes."""
    local = local_world_size()
    return {"devices": local, "num_nodes": max(1, world_size() // local)}


@contextmanager
def process_group_scope() -> Iterator[None]:
    """Leave the process as it was found: a process group the body created is destroyed and the
    rendezvous variables Lightning exported are restored, so one process (a test session, a
    notebook) can run several trainings, and its children do not inherit a port it holds."""
    had_group = dist.is_available() and dist.is_initialized()
    saved = {name: os.environ.get(name) for name in RENDEZVOUS_VARS}
    try:
        yield
    finally:
        if not had_group and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def set_timeout(minutes: int) -> None:
    """Give every process group this rank is in the same collective timeout.

    A group made after the world's (a device mesh's dimension, a Megatron group made without
    one) has torch's default timeout for its backend, not the world's (10 minutes for NCCL):
    this sets it once every group exists, as torchtitan does for its mesh."""
    for group in list(dist.distributed_c10d._world.pg_map):
        dist.distributed_c10d._set_pg_timeout(timedelta(minutes=minutes), group)


def group_timeouts() -> list[float] | None:
    """The distinct collective timeouts, in minutes, of the process groups this rank is in (for
    the manifest); None outside a process group or where torch does not say."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    found = set()
    try:  # provenance only: a backend that does not say must not stop the run
        for group in dist.distributed_c10d._world.pg_map:
            for device in group._device_types:
                options = getattr(group._get_backend(torch.device(device)), "options", None)
                found.add(options._timeout.total_seconds() / 60)
    except (AttributeError, RuntimeError, ValueError):
        return None
    return sorted(found)
