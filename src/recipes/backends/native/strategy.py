"""Lightning strategy of the native backend: ModelParallelStrategy on a 5-D device mesh.

Lightning's ``ModelParallelStrategy`` hosts FSDP2 + TP on a (data, tensor) mesh. This subclass
builds torchtitan's (pp, dp_replicate, dp_shard, cp, tp) mesh instead, with the flattened
data-parallel and FSDP views (:class:`Meshes`), so the module can add
pipeline and context parallelism, and saves checkpoints under layout-free names; everything
else (process group, launch, checkpoint files) is Lightning's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.strategies import ModelParallelStrategy
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from recipes import distributed
from recipes.checkpoint import load_loader_state
from recipes.plan.layout import Layout

MESH_DIMS = ("pp", "dp_replicate", "dp_shard", "cp", "tp")

PART = re.compile(r"parts\.\d+\.")
FLAT_OPTIMIZER = StateDictOptions(flatten_optimizer_state_dict=True)
"""Optimizer state keyed by parameter name (``state.<name>.exp_avg``), as DCP reshards it."""


def layout_free(state: dict[str, Any]) -> dict[str, Any]:
    """Drop the ``parts.<i>.`` prefix from every key (also inside flattened optimizer keys).

    A rank holds its pipeline stages as ``parts.0``, ``parts.1``, ...; which stage is part ``i``
    depends on pp and vp, while the names inside a part (``layers.<k>...``) do not. So a
    checkpoint under the stripped names loads into any layout.
    """
    return {PART.sub("", key, count=1): value for key, value in state.items()}


@dataclass(frozen=True)
class Meshes:
    """The meshes each concern works on, all views of one (pp, dp_replicate, dp_shard, cp, tp)
    world mesh."""

    world: DeviceMesh
    pp: DeviceMesh
    tp: DeviceMesh
    cp: DeviceMesh
    dp: DeviceMesh
    """dp_replicate x dp_shard: the ranks that split the global batch."""
    fsdp: DeviceMesh
    """dp_shard x cp (weights are sharded over CP ranks too), 2-D with dp_replicate for HSDP."""


def build_mesh(layout: Layout, device_type: str) -> Meshes:
    """Lay the world out as a (pp, dp_replicate, dp_shard, cp, tp) mesh and cut its views."""
    shape = (layout.pp, layout.dp_replicate, layout.dp_shard, layout.cp, layout.tp)
    world = init_device_mesh(device_type, shape, mesh_dim_names=MESH_DIMS)
    dp_cp = world["dp_replicate", "dp_shard", "cp"]._flatten("dp_cp")
    if layout.dp_replicate > 1:
        sizes = (layout.dp_replicate, layout.dp_shard * layout.cp)
        fsdp = dp_cp._unflatten(0, sizes, ("hsdp_replicate", "hsdp_shard"))
    else:
        fsdp = world["dp_shard", "cp"]._flatten("dp_shard_cp")
    return Meshes(
        world=world,
        pp=world["pp"],
        tp=world["tp"],
        cp=world["cp"],
        dp=world["dp_replicate", "dp_shard"]._flatten("dp"),
        fsdp=fsdp,
    )


class NativeParallelStrategy(ModelParallelStrategy):
    """``ModelParallelStrategy`` extended to pipeline and context parallelism."""

    def __init__(
        self, layout: Layout, process_group_backend: str | None = None, timeout_minutes: int = 30
    ) -> None:
        super().__init__(
            data_parallel_size=layout.dp,
            tensor_parallel_size=layout.tp,
            process_group_backend=process_group_backend,
            timeout=timedelta(minutes=timeout_minutes),
        )
        self.layout = layout
        self.timeout_minutes = timeout_minutes

    def setup_environment(self) -> None:
        self._setup_distributed()  # accelerator setup + process group, as the parent does
        self.meshes = build_mesh(self.layout, self.root_device.type)
        distributed.set_timeout(self.timeout_minutes)  # the mesh's groups too
        self._device_mesh = self.meshes.world
        self.lightning_module._device_mesh = self._device_mesh

    @property
    def distributed_sampler_kwargs(self) -> dict[str, Any]:
        return {"num_replicas": self.meshes.dp.size(), "rank": self.meshes.dp.get_local_rank()}

    # -- checkpoints ---------------------------------------------------------------------------
    def lightning_module_state_dict(self) -> dict[str, Any]:
        return layout_free(super().lightning_module_state_dict())

    def optimizer_state(self, optimizer) -> dict[str, Any]:
        if isinstance(optimizer, LightningOptimizer):
            optimizer = optimizer._optimizer
        return layout_free(get_optimizer_state_dict(self.model, optimizer, options=FLAT_OPTIMIZER))

    def load_checkpoint(self, checkpoint_path, weights_only: bool | None = None) -> dict[str, Any]:
        """Load model and optimizer shards in place, whatever layout saved them; return
        Lightning's loop, schedule and callback state."""
        path = Path(self.broadcast(str(checkpoint_path)))
        (optimizer,) = self.optimizers
        model_state = get_model_state_dict(self.model)
        optimizer_state = get_optimizer_state_dict(self.model, optimizer, options=FLAT_OPTIMIZER)
        loaded = {
            "state_dict": layout_free(model_state),
            "optimizer_0": layout_free(optimizer_state),
        }
        dcp.load(loaded, checkpoint_id=path)
        # Back under this layout's names: the same key order, so zip pairs them up.
        model_state = dict(zip(model_state, loaded["state_dict"].values(), strict=True))
        optimizer_state = dict(zip(optimizer_state, loaded["optimizer_0"].values(), strict=True))
        set_model_state_dict(self.model, model_state)
        set_optimizer_state_dict(self.model, optimizer, optimizer_state, options=FLAT_OPTIMIZER)
        return load_loader_state(path)

    def teardown(self) -> None:
        # Every rank leaves its last collective before any process group is destroyed.
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        super().teardown()
