"""Context parallelism (load-balanced ring attention) for the native backend, and its CPU shim.

``torch.distributed.tensor.experimental.context_parallel`` shards the inputs, labels and RoPE
table along the sequence and routes SDPA to ring attention. On CUDA, SDPA lowers to the flash /
efficient / cuDNN kernels that torch registers handlers for. On CPU it lowers to
``aten._scaled_dot_product_flash_attention_for_cpu``, which has neither a sharding rule nor a
ring handler, so :func:`register_cpu_ring_attention` adds both, built from torch's own
ring-attention templates; it runs only when the device is the CPU (tests, CPU runs).
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.distributed.tensor._op_schema import OpSchema, OpStrategy, RuntimeSchemaInfo
from torch.distributed.tensor._ops.utils import (
    expand_to_full_mesh_op_strategy,
    register_op_strategy,
)
from torch.distributed.tensor.experimental import context_parallel
from torch.distributed.tensor.experimental._context_parallel import _attention

aten = torch.ops.aten
SEQ_DIM = 2  # q, k, v are [batch, heads, seq, head_dim] inside SDPA
CPU_FLASH = aten._scaled_dot_product_flash_attention_for_cpu.default
CPU_FLASH_BACKWARD = aten._scaled_dot_product_flash_attention_for_cpu_backward.default


def _cpu_flash_strategy(op_schema: OpSchema) -> OpStrategy:
    # outputs (out, logsumexp), then inputs (q, k, v): all sharded along the sequence, or all
    # replicated.
    strategies = [[Shard(SEQ_DIM)] * 5, [Replicate()] * 5]
    return expand_to_full_mesh_op_strategy(
        op_schema.get_mesh_from_args(), op_schema, strategies, input_index=2
    )


def _cpu_flash_backward_strategy(op_schema: OpSchema) -> OpStrategy:
    # outputs (dq, dk, dv), then inputs (grad_out, q, k, v, out, logsumexp).
    strategies = [[Shard(SEQ_DIM)] * 9, [Replicate()] * 9]
    return expand_to_full_mesh_op_strategy(
        op_schema.get_mesh_from_args(validate=False), op_schema, strategies, input_index=3
    )


def _ring_cpu_flash(
    mesh, query, key, value, dropout_p=0.0, is_causal=False, attn_mask=None, *, scale=None
):
    return _attention._templated_ring_attention(
        mesh.get_group(),
        SEQ_DIM,
        CPU_FLASH,
        query=query,
        key=key,
        value=value,
        is_causal=is_causal,
        dropout_p=dropout_p,
        scale=scale,
    )


def _ring_cpu_flash_backward(
    mesh,
    grad_out,
    query,
    key,
    value,
    out,
    logsumexp,
    dropout_p,
    is_causal,
    attn_mask=None,
    *,
    scale=None,
):
    return _attention._templated_ring_attention_backward(
        mesh.get_group(),
        SEQ_DIM,
        CPU_FLASH_BACKWARD,
        grad_out=grad_out,
        grad_out_name="grad_out",
        query=query,
        key=key,
        value=value,
        out=out,
        logsumexp=logsumexp,
        is_causal=is_causal,
        dropout_p=dropout_p,
        scale=scale,
    )


def _handler(ring_fn):
    def handle(op_call, args, kwargs):
        op_info = DTensor._op_dispatcher.unwrap_to_op_info(op_call, args, kwargs)
        DTensor._op_dispatcher.sharding_propagator.propagate(op_info)
        local = ring_fn(op_info.compute_mesh, *op_info.local_args, **op_info.local_kwargs)
        return DTensor._op_dispatcher.wrap(local, op_info.output_sharding.output_spec)

    return handle


_registered = False


def register_cpu_ring_attention() -> None:
    """Teach DTensor to shard the CPU flash-attention op along the sequence and run it as ring
    attention (idempotent)."""
    global _registered
    if _registered:
        return
    register_op_strategy(CPU_FLASH, schema_info=RuntimeSchemaInfo(3))(_cpu_flash_strategy)
    register_op_strategy(CPU_FLASH_BACKWARD)(_cpu_flash_backward_strategy)
    # context_parallel installs `custom_ops` into DTensor's dispatcher while it is active.
    _attention.custom_ops[CPU_FLASH] = _handler(_ring_cpu_flash)
    _attention.custom_ops[CPU_FLASH_BACKWARD] = _handler(_ring_cpu_flash_backward)
    _registered = True


def cp_context(
    cp_mesh: DeviceMesh, inputs: torch.Tensor, labels: torch.Tensor, freqs_cis: torch.Tensor
) -> AbstractContextManager:
    """Shard this micro-batch's inputs and labels and the RoPE table along the sequence for
    the forward and backward run inside the context (head-tail load balancing)."""
    if inputs.device.type == "cpu":
        register_cpu_ring_attention()
    return context_parallel(
        cp_mesh,
        buffers=[inputs, labels, freqs_cis],
        buffer_seq_dims=[1, 1, 0],
        no_restore_buffers={inputs, labels},
    )
