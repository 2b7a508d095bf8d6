"""LightningModule of the megatron backend: one ``training_step`` is one optimizer step.

The module owns what is model-specific (building the chunks, the forward step and its loss);
:class:`~recipes.backends.megatron.strategy.MegatronStrategy` owns the parallel machinery.
"""

from __future__ import annotations

import functools
import logging

import lightning as L
import torch
from megatron.core import parallel_state
from megatron.core.utils import get_batch_on_this_cp_rank
from omegaconf import DictConfig

from recipes.backends.megatron import provider
from recipes.backends.megatron.optim import build_optimizer

log = logging.getLogger("recipes")


def loss_report(per_token_loss: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Megatron's loss-function contract: ``(sum, num_tokens, report)``.

    The 3-tuple form lets the schedule divide by the tokens of each micro-batch; under context
    parallelism each rank sums its share of the sequence and the gradient reduction over data
    x context ranks completes the mean (the 2-tuple form would scale the loss by the CP size).
    """
    loss_sum = per_token_loss.float().sum()
    num_tokens = torch.tensor(per_token_loss.numel(), dtype=torch.int, device=loss_sum.device)
    report = torch.stack([loss_sum.detach(), num_tokens.to(loss_sum)])
    return loss_sum, num_tokens, {"loss": report}


def forward_step(data_iterator, model) -> tuple[torch.Tensor, functools.partial]:
    """One micro-batch through one model chunk: token ids in, per-token loss out (last stage)."""
    tokens = next(data_iterator)
    batch = {"tokens": tokens[:, :-1], "labels": tokens[:, 1:]}
    if parallel_state.get_context_parallel_world_size() > 1:
        batch = get_batch_on_this_cp_rank(batch)  # chunks r and 2cp-1-r of the sequence
    output = model(
        input_ids=batch["tokens"], position_ids=None, attention_mask=None, labels=batch["labels"]
    )
    return output, loss_report


class MegatronLlamaModule(L.LightningModule):
    """Llama 3.1 pretraining on Megatron-core."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.automatic_optimization = False
        self.chunks: torch.nn.ModuleList | None = None

    def configure_model(self) -> None:
        if self.chunks is not None:
            return
        config = provider.transformer_config(self.cfg)
        self.chunks = torch.nn.ModuleList(provider.build_chunks(self.cfg, config))

    def configure_optimizers(self):
        optimizer, schedule = build_optimizer(self.chunks, self.cfg)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> dict[str, torch.Tensor]:
        optimizer = self.optimizers()
        optimizer.zero_grad()
        loss = self.trainer.strategy.forward_backward(batch, forward_step)
        optimizer.step()
        self.lr_schedulers().step()
        grad_norm = optimizer.optimizer.grad_norm
        return {"loss": loss, "grad_norm": torch.tensor(float(grad_norm))}
