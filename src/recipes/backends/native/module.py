"""LightningModule of the native backend: one ``training_step`` is one optimizer step.

The step walks the rank's share of the global batch in micro-batches, accumulates gradients
(manual optimization), clips, and steps AdamW and the schedule once, as Megatron and NeMo do.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from recipes.models.llama import Llama
from recipes.optim import build_optimizer


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss, computed in fp32 whatever the activations' dtype."""
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())


def grad_norm_value(norm: torch.Tensor) -> torch.Tensor:
    """A plain tensor of the global gradient norm (DTensor norms are gathered)."""
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


class NativeLlamaModule(L.LightningModule):
    """Llama 3.1 pretraining on pure PyTorch."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.automatic_optimization = False
        self.model: Llama | None = None

    def configure_model(self) -> None:
        # Built on meta so the full-size models cost nothing until the strategy places them.
        if self.model is not None:
            return
        with torch.device("meta"):
            model = Llama(self.cfg.model)
        model.to_empty(device=self.device)
        torch.manual_seed(self.cfg.seed)
        model.init_weights()
        self.model = model

    def configure_optimizers(self):
        optimizer, schedule = build_optimizer(self.model.parameters(), self.cfg.trainer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> dict[str, torch.Tensor]:
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        micro_batches = batch.split(self.cfg.trainer.micro_batch_size)
        loss_sum = torch.zeros((), device=self.device)
        for tokens in micro_batches:
            loss = cross_entropy(self.model(tokens[:, :-1]), tokens[:, 1:])
            self.manual_backward(loss / len(micro_batches))
            loss_sum += loss.detach()
        max_norm = self.cfg.trainer.grad_clip or float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        optimizer.step()
        self.lr_schedulers().step()
        loss = self.trainer.strategy.reduce(loss_sum / len(micro_batches), reduce_op="mean")
        return {"loss": loss, "grad_norm": grad_norm_value(grad_norm)}
