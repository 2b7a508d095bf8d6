"""Apply the native backend's parallelisms to a Llama (or a pipeline stage of one).

One function per concern, called by :func:`parallelize` in this fixed order:

1. ``apply_float8``  swap Linear layers for torchao Float8Linear (before TP, so TP shards them)
2. ``apply_tp``      DTensor tensor parallelism, with sequence parallelism for the norms
3. ``apply_ac``      activation checkpointing per block (none / selective / full)
4. ``apply_compile`` ``torch.compile`` per block, in place, so state-dict keys are unchanged
5. ``apply_fsdp``    FSDP2 ``fully_shard`` per block then the root (HSDP on a 2-D mesh)
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import TYPE_CHECKING

import torch
from omegaconf import DictConfig
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_module
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    PrepareModuleInput,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

from recipes.plan.layout import Layout

if TYPE_CHECKING:
    from recipes.backends.native.strategy import Meshes

aten = torch.ops.aten

SAVED_BY_SELECTIVE_AC = {
    aten.mm.default,
    aten._scaled_dot_product_flash_attention.default,
    aten._scaled_dot_product_efficient_attention.default,
    aten._scaled_dot_product_cudnn_attention.default,
    aten._scaled_dot_product_flash_attention_for_cpu.default,
}
"""Selective AC keeps matmul and attention outputs and recomputes the cheap elementwise ops."""


def parallelize(
    model: nn.Module, meshes: Meshes, layout: Layout, cfg: DictConfig, *, on_gpu: bool
) -> None:
    """Apply every configured parallelism to ``model`` in place, in the module's fixed order."""
    if cfg.dtype.name == "fp8":
        apply_float8(model, cfg.dtype, fsdp=fsdp_enabled(layout))
    if layout.tp > 1:
        # gloo cannot all-gather fp8: the float8 TP styles (fp8 collectives) are a GPU path;
        # on CPU, plain TP styles shard the Float8Linear layers.
        float8_tp = on_gpu and cfg.dtype.name == "fp8" and cfg.dtype.fp8_recipe == "tensorwise"
        apply_tp(model, meshes.tp, layout.sequence_parallel, float8=float8_tp)
    if cfg.backend.activation_checkpointing != "none":
        apply_ac(model, cfg.backend.activation_checkpointing)
    if cfg.backend.compile:
        if cfg.dtype.name == "fp8" and cfg.dtype.fp8_recipe == "rowwise":
            # pytorch/pytorch#150859: compiled RMSNorm with rowwise-scaled fp8 drifts to NaN
            # unless inductor rounds its casts as eager does (torchtitan sets the same).
            from torch._inductor import config as inductor_config

            inductor_config.emulate_precision_casts = True
        apply_compile(model, tp=layout.tp > 1)
    if fsdp_enabled(layout):
        apply_fsdp(
            model,
            meshes.fsdp,
            mixed_precision=on_gpu and cfg.dtype.name in ("bf16", "fp8"),
            reshard_after_forward=layout.pp == 1,
        )


def fsdp_enabled(layout: Layout) -> bool:
    """FSDP2 runs whenever parameters are sharded or replicated over more than one rank."""
    return layout.dp_shard * layout.cp > 1 or layout.dp_replicate > 1


# -- 1. float8 --------------------------------------------------------------------------------
def float8_eligible(module: nn.Module, fqn: str) -> bool:
    """Float8 serves Linear layers with both dims divisible by 16, except the output head."""
    if not isinstance(module, nn.Linear) or fqn.split(".")[-1] == "output":
        return False
    return module.in_features % 16 == 0 and module.out_features % 16 == 0


def apply_float8(model: nn.Module, dtype_cfg: DictConfig, *, fsdp: bool) -> None:
    """Swap eligible Linear layers for torchao Float8Linear with the configured recipe; the fp8
    all-gather only where FSDP will gather (it wraps weights, a cost with nothing to gather)."""
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    config = Float8LinearConfig.from_recipe_name(dtype_cfg.fp8_recipe)
    if dtype_cfg.fp8_fsdp_all_gather and fsdp:
        config = dataclasses.replace(config, enable_fsdp_float8_all_gather=True)
    convert_to_float8_training(model, config=config, module_filter_fn=float8_eligible)


# -- 2. tensor parallelism --------------------------------------------------------------------
def _replicated_norm(norm: nn.Module, tp_mesh: DeviceMesh) -> None:
    """Without SP a norm runs on the full sequence: keep its weight a replicated DTensor so
    every parameter is a DTensor (grad clipping and foreach AdamW cannot mix the two)."""
    distribute_module(
        norm,
        tp_mesh,
        input_fn=lambda _mod, inputs, mesh: tuple(
            DTensor.from_local(x, mesh, [Replicate()], run_check=False) for x in inputs
        ),
        output_fn=lambda _mod, output, _mesh: output.to_local(),
    )


def _tp_styles(float8: bool) -> tuple[type, type, type]:
    """Column, row and input-preparation styles; the float8 ones all-gather in fp8."""
    if not float8:
        return ColwiseParallel, RowwiseParallel, PrepareModuleInput
    from torchao.float8.float8_tensor_parallel import (
        Float8ColwiseParallel,
        Float8RowwiseParallel,
        PrepareFloat8ModuleInput,
    )

    return Float8ColwiseParallel, Float8RowwiseParallel, PrepareFloat8ModuleInput


def apply_tp(
    model: nn.Module, tp_mesh: DeviceMesh, sequence_parallel: bool, *, float8: bool = False
) -> None:
    """Megatron-style TP: q/k/v and w1/w3 column-parallel, wo and w2 row-parallel; with SP the
    residual stream between blocks is sharded along the sequence (Shard(1)). ``float8`` uses
    torchao's float8 styles inside the blocks (fp8 collectives, tensorwise scaling)."""
    seq = Shard(1) if sequence_parallel else Replicate()
    colwise, rowwise, prepare_input = _tp_styles(float8)
    top = {}
    if model.tok_embeddings is not None:
        top["tok_embeddings"] = RowwiseParallel(input_layouts=Replicate(), output_layouts=seq)
    if model.output is not None:
        top["output"] = ColwiseParallel(input_layouts=seq, output_layouts=Replicate())
    if model.norm is not None and sequence_parallel:
        top["norm"] = SequenceParallel()
    parallelize_module(model, tp_mesh, top)
    if model.norm is not None and not sequence_parallel:
        _replicated_norm(model.norm, tp_mesh)
    for block in model.layers.values():
        plan = {
            "attention": prepare_input(
                input_layouts=(seq, None), desired_input_layouts=(Replicate(), None)
            ),
            "attention.wq": colwise(),
            "attention.wk": colwise(),
            "attention.wv": colwise(),
            "attention.wo": rowwise(output_layouts=seq),
            "feed_forward": prepare_input(
                input_layouts=(seq,), desired_input_layouts=(Replicate(),)
            ),
            "feed_forward.w1": colwise(),
            "feed_forward.w2": rowwise(output_layouts=seq),
            "feed_forward.w3": colwise(),
        }
        if sequence_parallel:
            plan |= {"attention_norm": SequenceParallel(), "ffn_norm": SequenceParallel()}
        parallelize_module(block, tp_mesh, plan)
        if not sequence_parallel:
            _replicated_norm(block.attention_norm, tp_mesh)
            _replicated_norm(block.ffn_norm, tp_mesh)


# -- 3. activation checkpointing ----------------------------------------------------------------
def _selective_policy(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return (
        CheckpointPolicy.MUST_SAVE
        if op in SAVED_BY_SELECTIVE_AC
        else CheckpointPolicy.PREFER_RECOMPUTE
    )


def apply_ac(model: nn.Module, mode: str) -> None:
    """Wrap each block; the wrapper strips its own prefix from state-dict keys."""
    context_fn = partial(create_selective_checkpoint_contexts, _selective_policy)
    for name, block in model.layers.named_children():
        if mode == "full":
            wrapped = checkpoint_wrapper(block, preserve_rng_state=False)
        else:
            wrapped = checkpoint_wrapper(block, preserve_rng_state=False, context_fn=context_fn)
        model.layers.register_module(name, wrapped)


# -- 4. compile ---------------------------------------------------------------------------------
def _own_storage(_module: nn.Module, _inputs, output: torch.Tensor) -> torch.Tensor:
    return output.clone()


def apply_compile(model: nn.Module, *, tp: bool = False) -> None:
    """Compile each block in place (``module.compile()``), keeping parameter names. A block is
    one graph (``fullgraph=True``): a graph break would fail here instead of splitting the
    block into slower pieces unnoticed.

    Under TP the embedding hands the first block ``DTensor.to_local()``, a view of the DTensor's
    local tensor; a compiled graph given that view as input returns no gradient for it (torch
    2.13: the backward then fails in ``Redistribute``), so the embedding's output is copied
    (one ``[batch, seq, dim]`` copy a micro-batch)."""
    if tp and model.tok_embeddings is not None:
        model.tok_embeddings.register_forward_hook(_own_storage)
    for block in model.layers.values():
        block.compile(fullgraph=True)


# -- 5. FSDP2 -----------------------------------------------------------------------------------
def apply_fsdp(
    model: nn.Module,
    mesh: DeviceMesh,
    *,
    mixed_precision: bool,
    reshard_after_forward: bool,
) -> None:
    """Shard each block, then the root (embedding, final norm and head in one group)."""
    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if mixed_precision
        else MixedPrecisionPolicy()
    )
    for block in model.layers.values():
        fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
