"""Lightning strategy of the native backend: ModelParallelStrategy on a 5-D device mesh.

Lightning's ``ModelParallelStrategy`` hosts FSDP2 + TP on a (data, tensor) mesh. This subclass
builds torchtitan's (pp, dp_replicate, dp_shard, cp, tp) mesh instead, with the flattened
``dp`` (data loading), ``dp_shard_cp`` (FSDP) and ``dp_cp`` (loss) views, so the module can add
pipeline and context parallelism; everything else (process group, launch, checkpoint I/O) is
Lightning's.
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist
from lightning.pytorch.strategies import ModelParallelStrategy
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from recipes.plan.layout import Layout

MESH_DIMS = ("pp", "dp_replicate", "dp_shard", "cp", "tp")


def build_mesh(layout: Layout, device_type: str) -> DeviceMesh:
    """The world as a (pp, dp_replicate, dp_shard, cp, tp) mesh plus its flattened views."""
    shape = (layout.pp, layout.dp_replicate, layout.dp_shard, layout.cp, layout.tp)
    mesh = init_device_mesh(device_type, shape, mesh_dim_names=MESH_DIMS)
    mesh["dp_replicate", "dp_shard"]._flatten("dp")
    mesh["dp_shard", "cp"]._flatten("dp_shard_cp")
    mesh["dp_replicate", "dp_shard", "cp"]._flatten("dp_cp")
    return mesh


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
        self._device_mesh = build_mesh(self.layout, self.root_device.type)
        self.lightning_module._device_mesh = self._device_mesh

    @property
    def distributed_sampler_kwargs(self) -> dict[str, Any]:
        dp = self.device_mesh["dp"]
        return {"num_replicas": dp.size(), "rank": dp.get_local_rank()}

    def teardown(self) -> None:
        # Every rank leaves its last collective before any process group is destroyed.
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        super().teardown()
