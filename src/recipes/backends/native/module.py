"""LightningModule of the native backend: one ``training_step`` is one optimizer step.

The step walks this rank's share of the global batch in micro-batches (through the pipeline
schedule when pp > 1), accumulates gradients (manual optimization), clips the global gradient
norm, and steps AdamW and the schedule once, as Megatron and NeMo do.
"""

from __future__ import annotations

from contextlib import nullcontext

import lightning as L
import torch
import torch.distributed as dist
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from torch.distributed.tensor import DTensor

from recipes.backends.native import pipeline
from recipes.backends.native.context_parallel import cp_context
from recipes.backends.native.parallelize import fsdp_enabled, parallelize
from recipes.backends.native.strategy import Meshes
from recipes.models.llama import Llama, num_params, set_sdpa_priority
from recipes.optim import build_optimizer
from recipes.plan.layout import Layout, micro_batches

FULL_INIT_MAX_PARAMS = 2_000_000_000
"""``backend.init=auto`` draws the full model on every rank below this size."""


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss, computed in fp32 whatever the activations' dtype."""
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())


def full_init(cfg: DictConfig) -> bool:
    """Whether every rank draws the whole model (identical weights for every layout)."""
    if cfg.backend.init == "auto":
        return num_params(cfg.model) < FULL_INIT_MAX_PARAMS
    return cfg.backend.init == "full"


def sharded_init_seed(seed: int, stage: int) -> int:
    """The seed pipeline stage ``stage`` draws its shards from (``backend.init=sharded``).

    Each stage holds different blocks but starts its draws afresh: with one seed for all, the
    blocks of two stages without the embedding (the middle ones) would get the same weights.
    Stage 0 (and every layout without pipelining) uses ``seed`` itself; torchtitan also seeds
    each pipeline rank apart."""
    return seed + stage


def unsynced_dtensor_rng(mesh, seed: int) -> None:
    """Create DTensor's RNG tracker without its state sync, where the device has one (GPU).

    Created lazily by the first random op on a DTensor, the tracker broadcasts rank 0's RNG
    state to every rank, which would undo the per-stage seeds of :func:`sharded_init_seed`
    (torchtitan's ``set_determinism`` does the same for PP)."""
    from torch.distributed.tensor import _random

    if mesh.device_type != "cpu" and _random.is_rng_supported_mesh(mesh):
        _random.manual_seed(seed, mesh)


def clip_grad_norm(params: list[nn.Parameter], max_norm: float, pp_group) -> torch.Tensor:
    """Clip by the norm over all ranks' gradients: DTensor shards are gathered into the norm,
    pipeline stages add their squares; returns the norm before clipping."""
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0, foreach=True)
    if isinstance(norm, DTensor):
        norm = norm.full_tensor()
    if pp_group is not None:
        norm = norm**2
        dist.all_reduce(norm, group=pp_group)
        norm = norm.sqrt()
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm, foreach=True)
    return norm


class NativeLlamaModule(L.LightningModule):
    """Llama 3.1 pretraining on pure PyTorch, parallelized by :mod:`.parallelize`."""

    def __init__(self, cfg: DictConfig, layout: Layout) -> None:
        super().__init__()
        self.cfg = cfg
        self.layout = layout
        self.automatic_optimization = False
        self.parts: nn.ModuleList | None = None
        self.schedule = None
        # Compiled, the loss fuses the fp32 upcast into the softmax: no fp32 copy of the
        # [tokens, vocab] logits is held.
        self.loss_fn = torch.compile(cross_entropy) if cfg.backend.compile else cross_entropy

    # -- model -------------------------------------------------------------------------------
    def configure_model(self) -> None:
        if self.parts is not None:
            return
        cfg, layout, meshes = self.cfg, self.layout, self.meshes
        full = full_init(cfg)
        with torch.device(self.device if full else "meta"):
            model = Llama(cfg.model)
        set_sdpa_priority(model, cfg.backend.sdpa_backends)
        if full:
            torch.manual_seed(cfg.seed)
            model.init_weights()
        pp_rank = meshes.pp.get_local_rank()
        parts = pipeline.split_model(model, layout, pp_rank) if layout.pp > 1 else [model]
        stages = pipeline.stage_ids(layout, pp_rank) if layout.pp > 1 else [0]
        if not full and layout.pp > 1:
            unsynced_dtensor_rng(meshes.world, cfg.seed)
        for part, stage in zip(parts, stages, strict=True):
            parallelize(part, meshes, layout, cfg, on_gpu=self.device.type == "cuda")
            if not full:
                part.to_empty(device=self.device)
                torch.manual_seed(sharded_init_seed(cfg.seed, stage))
                part.init_weights(buffer_device=self.device)
            if layout.cp > 1:
                # CP shards the RoPE table with the sequence: it must be exactly seq_len long.
                part.freqs_cis = part.freqs_cis[: cfg.trainer.seq_len].clone()
        self.parts = nn.ModuleList(parts)
        if layout.pp > 1:
            self.schedule = pipeline.build_schedule(
                parts,
                layout,
                meshes.pp,
                self.device,
                n_microbatches=self.micro_batches_per_step,
                loss_fn=self.loss_fn,
            )

    @property
    def meshes(self) -> Meshes:
        return self.trainer.strategy.meshes

    @property
    def micro_batches_per_step(self) -> int:
        return micro_batches(self.cfg.trainer, self.layout)

    def configure_optimizers(self):
        optimizer, schedule = build_optimizer(
            self.parts.parameters(), self.cfg.trainer, self.cfg.backend.optimizer_impl
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # -- step --------------------------------------------------------------------------------
    def training_step(self, batch: torch.Tensor, batch_idx: int) -> dict[str, torch.Tensor]:
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        if self.schedule is not None:
            loss, has_loss = self._pipelined_step(batch)
        else:
            loss, has_loss = self._accumulated_step(batch), True
        pp_group = self.meshes.pp.get_group() if self.layout.pp > 1 else None
        max_norm = self.cfg.trainer.grad_clip or float("inf")
        grad_norm = clip_grad_norm(list(self.parts.parameters()), max_norm, pp_group)
        optimizer.step()
        self.lr_schedulers().step()
        self._after_optimizer_step()
        return {"loss": self._global_mean(loss, has_loss), "grad_norm": grad_norm}

    def _accumulated_step(self, batch: torch.Tensor) -> torch.Tensor:
        model = self.parts[0]
        micro_batches = batch.split(self.cfg.trainer.micro_batch_size)
        loss_sum = torch.zeros((), device=self.device)
        for i, tokens in enumerate(micro_batches):
            # Copies, not views: context parallelism shards these buffers in place.
            inputs, labels = tokens[:, :-1].clone(), tokens[:, 1:].clone()
            if fsdp_enabled(self.layout):
                model.set_requires_gradient_sync(i == len(micro_batches) - 1)
            with self._context(inputs, labels):
                loss = self.loss_fn(model(inputs), labels)
                self.manual_backward(loss / len(micro_batches))
            loss_sum += loss.detach()
        return loss_sum / len(micro_batches)

    def _pipelined_step(self, batch: torch.Tensor) -> tuple[torch.Tensor, bool]:
        pp_rank = self.meshes.pp.get_local_rank()
        first = pipeline.has_first_stage(self.layout, pp_rank)
        last = pipeline.has_last_stage(self.layout, pp_rank)
        inputs, labels = batch[:, :-1].contiguous(), batch[:, 1:].contiguous()
        losses: list[torch.Tensor] = []
        args = (inputs,) if first else ()
        self.schedule.step(*args, target=labels if last else None, losses=losses)
        if not last:
            return torch.zeros((), device=self.device), False
        return torch.stack([x.detach() for x in losses]).mean(), True

    def _context(self, inputs: torch.Tensor, labels: torch.Tensor):
        if self.layout.cp == 1:
            return nullcontext()
        return cp_context(self.meshes.cp, inputs, labels, self.parts[0].freqs_cis)

    def _after_optimizer_step(self) -> None:
        dtype = self.cfg.dtype
        if dtype.name == "fp8" and dtype.fp8_precompute_scale and fsdp_enabled(self.layout):
            from torchao.float8 import precompute_float8_dynamic_scale_for_fsdp

            for part in self.parts:
                precompute_float8_dynamic_scale_for_fsdp(part)

    def _global_mean(self, loss: torch.Tensor, has_loss: bool) -> torch.Tensor:
        """Mean of the step loss over the ranks that hold one (last pipeline stages)."""
        if not dist.is_initialized() or dist.get_world_size() == 1:
            return loss
        total = torch.stack([loss * has_loss, torch.tensor(float(has_loss), device=loss.device)])
        dist.all_reduce(total)
        return total[0] / total[1]
