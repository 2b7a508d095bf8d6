"""Megatron dist_checkpointing save into the run folder (``backend.save_at_end``).

Every rank writes its own shards of the model chunks and of the distributed optimizer's state
(in the fully reshardable layout, so a later run may load it with other tp/pp/dp degrees);
loading is the resume feature's business.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from megatron.core import dist_checkpointing

from recipes.callbacks.benchmark import BenchmarkCallback

log = logging.getLogger("recipes")

METADATA = {
    "distrib_optim_sharding_type": "fully_reshardable",
    "singleton_local_shards": False,
    "chained_optim_avoid_prefix": True,
}
"""Sharded-state-dict options, as Megatron-LM passes them for a reshardable checkpoint."""


def sharded_state_dict(chunks: list, megatron_optimizer, step: int) -> dict:
    """Model chunks (``model`` or ``model0``, ``model1``, ...), optimizer state and the step.

    Keys are those of the bare GPTModel (``decoder.layers...``, as Megatron-LM saves), so the
    DDP wrappers' ``module.`` prefix is left out.
    """
    models = [chunk.module.sharded_state_dict(metadata=METADATA) for chunk in chunks]
    state = (
        {"model": models[0]} if len(models) == 1 else {f"model{i}": m for i, m in enumerate(models)}
    )
    state["optimizer"] = megatron_optimizer.sharded_state_dict(
        state, is_loading=False, metadata=METADATA
    )
    state["step"] = step
    return state


def save(trainer: L.Trainer, chunks: list) -> Path:
    """Write ``<run folder>/checkpoint/step_<N>`` from every rank; returns its path."""
    (bench,) = [cb for cb in trainer.callbacks if isinstance(cb, BenchmarkCallback)]
    path = bench.run_dir / "checkpoint" / f"step_{trainer.global_step}"
    if trainer.is_global_zero:
        path.mkdir(parents=True)
    trainer.strategy.barrier()
    optimizer = trainer.optimizers[0].megatron
    dist_checkpointing.save(sharded_state_dict(chunks, optimizer, trainer.global_step), str(path))
    trainer.strategy.barrier()
    log.info("checkpoint: %s", path)
    return path
