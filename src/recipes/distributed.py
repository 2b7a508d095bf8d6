"""What the launcher (torchrun, srun, or nothing) says about the processes of this job."""

from __future__ import annotations

import os


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
