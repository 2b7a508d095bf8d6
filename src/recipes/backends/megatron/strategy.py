"""A Lightning strategy that hands the parallel work to Megatron-core, as NeMo's MegatronStrategy.

It initialises Megatron's parallel state (tp, pp, vp, cp, and data parallel over the rest),
wraps the module's model chunks in Megatron's DDP, wires the schedule hooks (gradient
finalisation, overlapped reduce/gather), and runs one global batch per step through
``get_forward_backward_func``: 1F1B with pipeline parallelism, interleaved 1F1B when vp > 1.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.strategies import DDPStrategy
from megatron.core import parallel_state, tensor_parallel
from megatron.core.distributed import (
    DistributedDataParallel,
    DistributedDataParallelConfig,
    finalize_model_grads,
)
from megatron.core.pipeline_parallel import get_forward_backward_func
from megatron.core.transformer.module import Float16Module
from megatron.core.utils import get_model_config
from omegaconf import DictConfig

from recipes import distributed
from recipes.backends.megatron import env
from recipes.backends.megatron.checkpoint import load, save
from recipes.backends.megatron.provider import uses_transformer_engine

log = logging.getLogger("recipes")


class MegatronStrategy(DDPStrategy):
    """Megatron-core parallelism inside a Lightning ``Trainer`` (one process per device)."""

    strategy_name = "megatron"

    def __init__(self, cfg: DictConfig, **kwargs: Any) -> None:
        super().__init__(
            process_group_backend=cfg.cluster.comm_backend,
            timeout=timedelta(minutes=cfg.cluster.comm_timeout_minutes),
            **kwargs,
        )
        self.cfg = cfg

    # -- process groups -----------------------------------------------------------------------
    def setup_environment(self) -> None:
        if self.cfg.cluster.accelerator == "cpu":
            from recipes.backends.megatron import cpu

            cpu.enable()
        super().setup_environment()  # torch.distributed's default group
        par = self.cfg.parallelism
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=par.tp,
            pipeline_model_parallel_size=par.pp,
            virtual_pipeline_model_parallel_size=par.vp if par.vp > 1 else None,
            context_parallel_size=par.cp,
            num_distributed_optimizer_instances=par.dp_replicate,
            distributed_timeout_minutes=self.cfg.cluster.comm_timeout_minutes,
        )
        # megatron-core 0.16 makes its expert-data-parallel gloo group with torch's default.
        distributed.set_timeout(self.cfg.cluster.comm_timeout_minutes)
        tensor_parallel.model_parallel_cuda_manual_seed(self.cfg.seed)

    @property
    def distributed_sampler_kwargs(self) -> dict[str, int]:
        """Data-parallel rank and size: ranks sharing a batch slice differ in tp, pp or cp."""
        return {
            "num_replicas": parallel_state.get_data_parallel_world_size(),
            "rank": parallel_state.get_data_parallel_rank(),
        }

    # -- model --------------------------------------------------------------------------------
    def configure_ddp(self) -> None:
        """Wrap each model chunk in Megatron's DDP (contiguous fp32 grad buffers, bucketed
        reduce-scatter for the distributed optimizer); the LightningModule itself stays bare."""
        module = self.lightning_module
        backend = self.cfg.backend
        ddp_config = DistributedDataParallelConfig(
            grad_reduce_in_fp32=backend.grad_reduce_in_fp32,
            overlap_grad_reduce=backend.overlap_grad_reduce,
            overlap_param_gather=backend.overlap_param_gather,
            # As Megatron-LM: the schedule starts each chunk's gather (param_sync_func below).
            align_param_gather=backend.overlap_param_gather,
            use_distributed_optimizer=backend.use_distributed_optimizer,
            num_distributed_optimizer_instances=self.cfg.parallelism.dp_replicate,
        )
        for index, chunk in enumerate(module.chunks):
            config = get_model_config(chunk)
            if config.bf16:
                chunk = Float16Module(config, chunk)
            module.chunks[index] = DistributedDataParallel(
                config, ddp_config, chunk, disable_bucketing=index > 0
            )

    def setup(self, trainer) -> None:
        super().setup(trainer)  # moves the chunks, wraps them (configure_ddp), builds the optimizer
        self._wire_schedule_hooks()
        log.info("%s", self.describe())

    def describe(self) -> str:
        """One line on what runs: Megatron version, layer spec, layout, optimizer."""
        par, backend = self.cfg.parallelism, self.cfg.backend
        te_error = env.te_import_error()
        if uses_transformer_engine(self.cfg):
            spec = "Transformer Engine"
        elif self.cfg.cluster.accelerator == "cpu":
            spec = "local (CPU shims)"
        else:
            spec = f"local (no TE: {te_error})"
        optimizer = "distributed" if backend.use_distributed_optimizer else "replicated"
        return (
            f"megatron-core {env.megatron_version()}, {spec} layer spec; tp={par.tp}"
            f"{'+sp' if par.sequence_parallel else ''} pp={par.pp} vp={par.vp} cp={par.cp} "
            f"dp={parallel_state.get_data_parallel_world_size()}; {optimizer} optimizer"
        )

    def _wire_schedule_hooks(self) -> None:
        """What Megatron's schedules read from the model config (as Megatron-LM's training loop
        sets it): loss scaling, the end-of-step gradient reduction, and overlap hooks."""
        chunks = list(self.lightning_module.chunks)
        config = get_model_config(chunks[0])
        backend = self.cfg.backend

        def one_or_list(hooks: list[Callable]) -> Callable | list[Callable]:
            return hooks[0] if len(hooks) == 1 else hooks

        config.grad_scale_func = self.optimizers[0].megatron.scale_loss
        config.finalize_model_grads_func = finalize_model_grads
        if backend.overlap_grad_reduce:
            config.no_sync_func = one_or_list([chunk.no_sync for chunk in chunks])
            config.grad_sync_func = one_or_list([chunk.start_grad_sync for chunk in chunks])
        if backend.overlap_param_gather:
            config.param_sync_func = one_or_list([chunk.start_param_sync for chunk in chunks])

    # -- one global batch ---------------------------------------------------------------------
    def forward_backward(self, batch: torch.Tensor, forward_step: Callable) -> torch.Tensor:
        """Forward and backward over every micro-batch of this rank's slice of the global batch.

        ``forward_step(data_iterator, model)`` returns the chunk's output and a loss function
        giving ``(loss_sum, num_tokens, {"loss": [loss_sum, num_tokens]})`` per micro-batch.
        Returns the global-batch mean loss on every rank (reduced over data and context
        parallel ranks, then broadcast from the last pipeline stage).
        """
        chunks = list(self.lightning_module.chunks)
        for chunk in chunks:
            chunk.zero_grad_buffer()
        micro_batch_size = self.cfg.trainer.micro_batch_size
        micro_batches = batch.split(micro_batch_size)
        iterators = [iter(micro_batches) for _ in chunks]
        reports = get_forward_backward_func()(
            forward_step_func=forward_step,
            data_iterator=iterators if len(chunks) > 1 else iterators[0],
            model=chunks,
            num_microbatches=len(micro_batches),
            seq_length=batch.shape[1] - 1,
            micro_batch_size=micro_batch_size,
            forward_only=False,
        )
        return self._global_mean_loss(reports)

    def _global_mean_loss(self, reports: list[dict]) -> torch.Tensor:
        totals = torch.zeros(2, dtype=torch.float64, device=self.root_device)
        if parallel_state.is_pipeline_last_stage(ignore_virtual=True):
            for report in reports:
                totals += report["loss"].to(totals)
            dp_cp = parallel_state.get_data_parallel_group(with_context_parallel=True)
            torch.distributed.all_reduce(totals, group=dp_cp)
        torch.distributed.broadcast(
            totals,
            src=parallel_state.get_pipeline_model_parallel_last_rank(),
            group=parallel_state.get_pipeline_model_parallel_group(),
        )
        return (totals[0] / totals[1]).float()

    # -- checkpoints (Megatron dist_checkpointing; see .checkpoint) ----------------------------
    @property
    def restore_checkpoint_after_setup(self) -> bool:
        return True  # the chunks and the optimizer must exist to load shards into them

    @property
    def lightning_restore_optimizer(self) -> bool:
        return False  # load_checkpoint has restored it

    def lightning_module_state_dict(self) -> dict[str, Any]:
        return {}  # the shards are written by save_checkpoint; nothing is gathered

    def optimizer_state(self, optimizer) -> dict[str, Any]:
        return {}

    def save_checkpoint(self, checkpoint: dict, filepath, storage_options=None) -> None:
        checkpoint.pop("state_dict", None)
        checkpoint.pop("optimizer_states", None)
        save(self, checkpoint, Path(filepath))

    def load_checkpoint(self, checkpoint_path, weights_only: bool | None = None) -> dict[str, Any]:
        return load(self, Path(checkpoint_path))

    def load_model_state_dict(self, checkpoint, strict: bool = True) -> None:
        pass  # load_checkpoint has loaded the shards

    # -- end ----------------------------------------------------------------------------------
    def teardown(self) -> None:
        super().teardown()
        if parallel_state.model_parallel_is_initialized():
            parallel_state.destroy_model_parallel()
