"""Megatron-core on CPU: the few shims that let its real parallel code run under gloo.

Megatron-core assumes CUDA in many places: tensors created with ``device="cuda"`` or
``torch.cuda.current_device()``, ``.cuda()`` calls, streams and events, ``.type()`` checks for
``torch.cuda.FloatTensor`` in the optimizer, and the CUDA RNG tracker. :func:`enable` maps all of
them onto the CPU for this process, and this module also provides the two layers the local spec
lacks on CPU: a sequence-parallel RMSNorm and a context-parallel core attention.

Used only by runs on the CPU (``cluster.accelerator=cpu``: tests, the embedded default run on
a machine without GPU); a GPU run never enables it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math

import torch
import torch.nn.functional as F
from megatron.core.tensor_parallel.random import CudaRNGStatesTracker
from torch.overrides import TorchFunctionMode


def _is_cuda(device) -> bool:
    if isinstance(device, str):
        return device.startswith("cuda")
    return isinstance(device, torch.device) and device.type == "cuda"


def _cpu(device):
    return torch.device("cpu") if _is_cuda(device) else device


class _CudaOnCpu(TorchFunctionMode):
    """Send every CUDA placement to the CPU and let CPU tensors pass CUDA type checks.

    A torch function mode is not active inside autograd's backward, so sites that run there call
    ``torch.cuda.current_device()``, which :func:`enable` patches to return the CPU device.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if "device" in kwargs:
            kwargs["device"] = _cpu(kwargs["device"])
        if kwargs.get("pin_memory"):
            kwargs["pin_memory"] = False  # no pinned host memory without an accelerator
        if func is torch.Tensor.cuda:
            return args[0]
        if func is torch.Tensor.to and len(args) > 1 and _is_cuda(args[1]):
            args = (args[0], torch.device("cpu"), *args[2:])
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            # The distributed optimizer and grad clipping accept only 'torch.cuda.*Tensor'.
            return func(*args).replace("torch.", "torch.cuda.", 1)
        return func(*args, **kwargs)


class _Stream(torch.cpu.Stream):
    """A CUDA stream stand-in: CPU work runs in order on the calling thread."""

    def __init__(self, device=None, priority: int = 0, **kwargs) -> None:
        super().__init__()

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True


class _Event:
    """A CUDA event stand-in: CPU work is synchronous, so there is nothing to wait for."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def record(self, stream=None) -> None:
        pass

    def wait(self, stream=None) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True


_CUDA_STANDINS = {
    "current_device": lambda: torch.device("cpu"),
    "synchronize": lambda device=None: None,
    "Stream": _Stream,
    "current_stream": lambda device=None: _Stream(),
    "default_stream": lambda device=None: _Stream(),
    "stream": torch.cpu.stream,
    "Event": _Event,
}
"""torch.cuda names Megatron-core calls, and what they mean on a CPU."""


def _install_rng_tracker() -> None:
    from megatron.core.tensor_parallel import random

    random._get_cuda_rng_state = lambda *args, **kwargs: torch.get_rng_state()
    random._set_cuda_rng_state = lambda state, *args, **kwargs: torch.set_rng_state(state)
    random._CUDA_RNG_STATE_TRACKER = CpuRNGStatesTracker()
    random._CUDA_RNG_STATE_TRACKER_INITIALIZED = True


@contextlib.contextmanager
def patched():
    """The CPU shims for the duration of a block (tests); ``torch.cuda`` is restored after."""
    saved = {name: getattr(torch.cuda, name) for name in _CUDA_STANDINS}
    saved_record_stream = torch.Tensor.record_stream
    for name, standin in _CUDA_STANDINS.items():
        setattr(torch.cuda, name, standin)
    torch.Tensor.record_stream = lambda self, stream: None
    _install_rng_tracker()
    mode = _CudaOnCpu()
    mode.__enter__()
    try:
        yield
    finally:
        mode.__exit__(None, None, None)
        for name, original in saved.items():
            setattr(torch.cuda, name, original)
        torch.Tensor.record_stream = saved_record_stream


_PROCESS_WIDE: contextlib.AbstractContextManager | None = None


def enable() -> None:
    """The CPU shims for the rest of this process (a CPU-only training run); idempotent."""
    global _PROCESS_WIDE
    if _PROCESS_WIDE is None:
        shims = patched()
        shims.__enter__()
        _PROCESS_WIDE = shims  # keep it referenced: collecting it would undo the patches


class CpuRNGStatesTracker(CudaRNGStatesTracker):
    """Megatron's RNG tracker (model-parallel, data-parallel, expert streams) on CPU generators.

    Attention forks the tracker even with dropout 0, so one must exist; the streams are seeded
    exactly as ``model_parallel_cuda_manual_seed`` seeds the CUDA ones.
    """

    def add(self, name: str, seed: int) -> None:
        if seed in self.seeds_ or name in self.states_:
            raise ValueError(f"rng state {name!r} or seed {seed} already tracked")
        self._is_initialized = True
        self.seeds_.add(seed)
        self.states_[name] = torch.Generator().manual_seed(seed).get_state()

    @contextlib.contextmanager
    def fork(self, name: str = "model-parallel-rng"):
        if name not in self.states_:
            raise KeyError(f"rng state {name!r} is not tracked")
        outer = torch.get_rng_state()
        torch.set_rng_state(self.states_[name])
        try:
            yield
        finally:
            self.states_[name] = torch.get_rng_state()
            torch.set_rng_state(outer)


class RMSNorm(torch.nn.Module):
    """RMSNorm for the local spec with sequence parallelism (``torch_norm`` refuses SP).

    Normalises in float32 and casts back before the gain, as the native model does. Under
    sequence parallelism the weight is tagged so ``finalize_model_grads`` all-reduces its grad
    across the tensor-parallel group.
    """

    def __init__(self, config, hidden_size: int, eps: float = 1e-5, **kwargs) -> None:
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(hidden_size, dtype=config.params_dtype))
        self.weight.sequence_parallel = config.sequence_parallel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


def local_spec(layer, *, context_parallel: bool):
    """Megatron's local layer spec with this module's norm and, with CP, its core attention.

    Returns the layer spec and the norm for the block's final layer norm.
    """
    sub = dataclasses.replace(layer.submodules, input_layernorm=RMSNorm, pre_mlp_layernorm=RMSNorm)
    if context_parallel:
        attention = layer.submodules.self_attention
        attention_sub = dataclasses.replace(
            attention.submodules, core_attention=AllGatherKVAttention
        )
        sub = dataclasses.replace(
            sub, self_attention=dataclasses.replace(attention, submodules=attention_sub)
        )
    return dataclasses.replace(layer, submodules=sub), RMSNorm


def _chunk_positions(rank: int, cp: int, chunk: int, device) -> torch.Tensor:
    """Sequence positions held by context-parallel ``rank``: chunks ``rank`` and ``2cp-1-rank``."""
    first = torch.arange(rank * chunk, (rank + 1) * chunk, device=device)
    second = torch.arange((2 * cp - 1 - rank) * chunk, (2 * cp - rank) * chunk, device=device)
    return torch.cat([first, second])


class AllGatherKVAttention(torch.nn.Module):
    """Causal core attention for context parallelism on the local spec (CPU only).

    Megatron's local ``DotProductAttention`` refuses CP ("only supported by
    TEDotProductAttention"). This one all-gathers K and V over the context-parallel group
    (reduce-scattering their grads in backward) and masks by true sequence position, so the
    rest of Megatron's CP code (load-balanced sequence split, RoPE offsets, gradient reduction
    over data x context ranks) runs for real.
    """

    def __init__(
        self,
        config,
        layer_number: int,
        attn_mask_type,
        attention_type: str,
        attention_dropout: float | None = None,
        softmax_scale: float | None = None,
        **kwargs,  # cp_comm_type, pg_collection, ...: the CP group comes from parallel_state
    ) -> None:
        super().__init__()
        from megatron.core import parallel_state

        self.config = config
        self.cp_group = parallel_state.get_context_parallel_group()
        head_dim = config.kv_channels
        self.softmax_scale = softmax_scale or 1.0 / math.sqrt(head_dim)
        self.dropout = config.attention_dropout if attention_dropout is None else attention_dropout

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        attn_mask_type=None,
        attention_bias=None,
        packed_seq_params=None,
        **kwargs,
    ) -> torch.Tensor:
        """``query[sq, b, np, hn]``, ``key/value[sk, b, ng, hn]`` -> ``context[sq, b, np*hn]``."""
        from megatron.core.tensor_parallel.mappings import gather_from_sequence_parallel_region

        if packed_seq_params is not None or attention_bias is not None:
            raise NotImplementedError("packed sequences and attention bias need TE attention")
        cp = torch.distributed.get_world_size(self.cp_group)
        rank = torch.distributed.get_rank(self.cp_group)
        key = gather_from_sequence_parallel_region(key, True, group=self.cp_group)
        value = gather_from_sequence_parallel_region(value, True, group=self.cp_group)
        chunk = query.shape[0] // 2
        q_pos = _chunk_positions(rank, cp, chunk, query.device)
        k_pos = torch.cat([_chunk_positions(r, cp, chunk, query.device) for r in range(cp)])
        allowed = k_pos[None, :] <= q_pos[:, None]
        rep = query.shape[2] // key.shape[2]
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))  # [b, heads, s, hn]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=allowed,
            dropout_p=self.dropout if self.training else 0.0,
            scale=self.softmax_scale,
        )
        return out.permute(2, 0, 1, 3).reshape(query.shape[0], query.shape[1], -1)
