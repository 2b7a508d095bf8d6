"""Lightning strategy of the native backend: ModelParallelStrategy on a 5-D device mesh.

Lightning's ``ModelParallelStrategy`` hosts FSDP2 + TP on a (data, tensor) mesh. This subclass
builds torchtitan's (pp, dp_replicate, dp_shard, cp, tp) mesh instead, with the flattened
data-parallel and FSDP views (:class:`Meshes`), so the module can add
pipeline and context parallelism; everything else (process group, launch, checkpoint I/O) is
Lightning's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.distributed as dist
from lightning.pytorch.strategies import ModelParallelStrategy
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from recipes.plan.layout import Layout

MESH_DIMS = ("pp", "dp_replicate", "dp_shard", "cp", "tp")


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

    def __init__(self, layout: Layout, process_group_backend: str | None = None) -> None:
        super().__init__(
            data_parallel_size=layout.dp,
            tensor_parallel_size=layout.tp,
            process_group_backend=process_group_backend,
        )
        self.layout = layout

    def setup_environment(self) -> None:
        self._setup_distributed()  # accelerator setup + process group, as the parent does
        self.meshes = build_mesh(self.layout, self.root_device.type)
        self._device_mesh = self.meshes.world
        self.lightning_module._device_mesh = self._device_mesh

    @property
    def distributed_sampler_kwargs(self) -> dict[str, Any]:
        return {"num_replicas": self.meshes.dp.size(), "rank": self.meshes.dp.get_local_rank()}

    def teardown(self) -> None:
        # Every rank leaves its last collective before any process group is destroyed.
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        super().teardown()
