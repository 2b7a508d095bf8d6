"""Pipeline parallelism with ``torch.distributed.pipelining``.

The model is cut into ``pp * vp`` stages of equal block counts. Pipeline rank ``r`` owns stages
``r, r + pp, ...`` (one stage when vp = 1): the first stage keeps the embedding, the last the
final norm and output head. Each rank's global-batch share becomes the schedule's
micro-batches, so one schedule step is one optimizer step.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.pipelining import PipelineStage
from torch.distributed.pipelining.schedules import (
    Schedule1F1B,
    ScheduleGPipe,
    ScheduleInterleaved1F1B,
)

from recipes.plan.layout import Layout

SCHEDULES = {"1f1b": Schedule1F1B, "gpipe": ScheduleGPipe}


def stage_ids(layout: Layout, pp_rank: int) -> list[int]:
    """Stage indices owned by ``pp_rank`` (looped placement for interleaved schedules)."""
    return [pp_rank + k * layout.pp for k in range(layout.vp)]


def split_stage(model: nn.Module, stage: int, num_stages: int) -> nn.Module:
    """A copy of ``model`` holding only stage ``stage``'s blocks (names kept) and ends."""
    part = copy.deepcopy(model)
    per_stage = len(model.layers) // num_stages
    keep = {str(i) for i in range(stage * per_stage, (stage + 1) * per_stage)}
    for name in list(part.layers.keys()):
        if name not in keep:
            del part.layers[name]
    if stage != 0:
        part.tok_embeddings = None
    if stage != num_stages - 1:
        part.norm = None
        part.output = None
    return part


def split_model(model: nn.Module, layout: Layout, pp_rank: int) -> list[nn.Module]:
    """This pipeline rank's stage modules, in schedule order."""
    num_stages = layout.pp * layout.vp
    return [split_stage(model, s, num_stages) for s in stage_ids(layout, pp_rank)]


def build_schedule(
    parts: list[nn.Module],
    layout: Layout,
    pp_mesh: DeviceMesh,
    device: torch.device,
    n_microbatches: int,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
):
    """The pipeline schedule driving this rank's stages; it averages gradients over the
    micro-batches (``scale_grads``), as the non-pipelined step does."""
    pp_rank = pp_mesh.get_local_rank()
    num_stages = layout.pp * layout.vp
    stages = [
        PipelineStage(
            part, stage_index=s, num_stages=num_stages, device=device, group=pp_mesh.get_group()
        )
        for part, s in zip(parts, stage_ids(layout, pp_rank), strict=True)
    ]
    if layout.vp > 1:
        return ScheduleInterleaved1F1B(stages, n_microbatches, loss_fn=loss_fn, scale_grads=True)
    schedule_class = SCHEDULES[layout.pp_schedule]
    return schedule_class(stages[0], n_microbatches, loss_fn=loss_fn, scale_grads=True)


def has_first_stage(layout: Layout, pp_rank: int) -> bool:
    return 0 in stage_ids(layout, pp_rank)


def has_last_stage(layout: Layout, pp_rank: int) -> bool:
    return layout.pp * layout.vp - 1 in stage_ids(layout, pp_rank)
