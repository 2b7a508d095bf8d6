"""Megatron ``dist_checkpointing`` checkpoints behind Lightning's save and load calls.

Every rank writes its own shards of the model chunks and of the distributed optimizer's state,
in the fully reshardable layout, so a later run loads them with other tp/pp/vp/dp degrees;
rank 0 adds Lightning's loop, schedule and callback state (``meta.pt``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from megatron.core import dist_checkpointing

from recipes.checkpoint import LOADER_STATE, load_loader_state

METADATA = {
    "distrib_optim_sharding_type": "fully_reshardable",
    "singleton_local_shards": False,
    "chained_optim_avoid_prefix": True,
}
"""Sharded-state-dict options, as Megatron-LM passes them for a reshardable checkpoint."""


def sharded_state_dict(chunks: list, megatron_optimizer, *, is_loading: bool) -> dict:
    """Model chunks (``model`` or ``model0``, ``model1``, ...) and optimizer state.

    Keys are those of the bare GPTModel (``decoder.layers...``, as Megatron-LM saves), so the
    DDP wrappers' ``module.`` prefix is left out.
    """
    models = [chunk.module.sharded_state_dict(metadata=METADATA) for chunk in chunks]
    state = {model_key(i, len(models)): m for i, m in enumerate(models)}
    state["optimizer"] = megatron_optimizer.sharded_state_dict(
        state, is_loading=is_loading, metadata=METADATA
    )
    return state


def model_key(index: int, num_chunks: int) -> str:
    return "model" if num_chunks == 1 else f"model{index}"


def save(strategy, loader_state: dict[str, Any], path: Path) -> None:
    """Write ``path`` from every rank: the shards, then (rank 0) Lightning's state, last, so a
    folder holding ``meta.pt`` is a finished checkpoint."""
    chunks, optimizer = _parts(strategy)
    if strategy.is_global_zero:
        path.mkdir(parents=True)
    strategy.barrier()
    dist_checkpointing.save(sharded_state_dict(chunks, optimizer, is_loading=False), str(path))
    strategy.barrier()
    if strategy.is_global_zero:
        torch.save(loader_state, path / LOADER_STATE)
    strategy.barrier()


def load(strategy, path: Path) -> dict[str, Any]:
    """Load the shards this layout needs into the chunks and the optimizer; return Lightning's
    state."""
    chunks, optimizer = _parts(strategy)
    with _torch_adam_loading(optimizer):
        loaded = dist_checkpointing.load(
            sharded_state_dict(chunks, optimizer, is_loading=True), str(path)
        )
        for index, chunk in enumerate(chunks):
            chunk.module.load_state_dict(loaded[model_key(index, len(chunks))])
        optimizer.load_state_dict(loaded["optimizer"])
    return load_loader_state(path)


def _torch_adams(megatron_optimizer) -> list:
    """The Megatron optimizers in the chain that step torch's Adam(W) (no TE or Apex here)."""
    chain = getattr(megatron_optimizer, "chained_optimizers", [megatron_optimizer])
    return [m for m in chain if isinstance(m.optimizer, (torch.optim.Adam, torch.optim.AdamW))]


@contextmanager
def _torch_adam_loading(megatron_optimizer) -> Iterator[None]:
    """Three gaps of megatron-core 0.16's distributed optimizer when it steps torch's AdamW (no
    TE or Apex; NeMo's TE FusedAdam never meets them), worked around while loading:

    - its state dict asserts on AdamW's ``step``, which exists only after a first step: one step
      with zero gradients at lr 0 and no weight decay creates the state and changes no weight
      (torch DCP does the same); loading overwrites every value;
    - loading copies each per-parameter state tensor, ``step`` included, from checkpoint tensors
      that leave ``step`` out (it is restored separately): the copy is made to skip it;
    - the restored ``step`` is one tensor shared by every parameter, which AdamW increments in
      place once per parameter: each parameter gets its own copy back.
    """
    adams = _torch_adams(megatron_optimizer)
    for megatron in adams:
        if not megatron.optimizer.state:
            _zero_step(megatron.optimizer)
        if hasattr(megatron, "_set_main_param_and_optimizer_states"):
            megatron._set_main_param_and_optimizer_states = _without_step(megatron)
    try:
        yield
    finally:
        _restore(adams)


def _restore(adams: list) -> None:
    for megatron in adams:
        megatron.__dict__.pop("_set_main_param_and_optimizer_states", None)
        for state in megatron.optimizer.state.values():
            state["step"] = state["step"].clone()


def _zero_step(adam: torch.optim.Optimizer) -> None:
    saved = [(group["lr"], group["weight_decay"]) for group in adam.param_groups]
    for group in adam.param_groups:
        group["lr"], group["weight_decay"] = 0.0, 0.0
        for param in group["params"]:
            param.grad = torch.zeros_like(param)
    adam.step()
    adam.zero_grad(set_to_none=True)
    for group, (lr, weight_decay) in zip(adam.param_groups, saved, strict=True):
        group["lr"], group["weight_decay"] = lr, weight_decay


def _without_step(megatron):
    copy_states = type(megatron)._set_main_param_and_optimizer_states

    def set_states(model_param, tensors) -> None:
        group_index, group_order = megatron.model_param_group_index_map[model_param]
        main_param = megatron.optimizer.param_groups[group_index]["params"][group_order]
        state = megatron.optimizer.state[main_param]
        step = state.pop("step", None)
        try:
            copy_states(megatron, model_param, tensors)
        finally:
            if step is not None:
                state["step"] = step

    return set_states


def _parts(strategy) -> tuple[list, Any]:
    return list(strategy.lightning_module.chunks), strategy.optimizers[0].megatron
