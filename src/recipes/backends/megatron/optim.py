"""Megatron-core's (distributed) AdamW with the shared warmup-cosine schedule, in Lightning's shape.

The optimizer is Megatron's own (fp32 main weights and grads, sharded across data-parallel ranks
with the distributed optimizer, clipping by the global norm); Lightning accepts it only as a
``torch.optim.Optimizer``, so :class:`LightningMegatronOptimizer` is a thin face over it, as
NeMo's ``McoreDistributedOptimizer`` is.
"""

from __future__ import annotations

import torch
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
from omegaconf import DictConfig

from recipes.optim import build_schedule


class LightningMegatronOptimizer(torch.optim.Optimizer):
    """A Megatron optimizer as Lightning and LR schedulers expect to see it.

    ``step`` runs Megatron's whole update (unscale, clip by the global norm, AdamW, copy to the
    model weights) and keeps the global grad norm it measured in :attr:`grad_norm`.
    """

    def __init__(self, megatron_optimizer) -> None:
        # No super().__init__: the parameters and their state belong to the Megatron optimizer.
        self.megatron = megatron_optimizer
        self.defaults = {}
        self.grad_norm: float | None = None
        self._optimizer_step_pre_hooks = {}
        self._optimizer_step_post_hooks = {}

    @property
    def param_groups(self) -> list[dict]:
        return self.megatron.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict]) -> None:
        self.megatron.param_groups = value

    @property
    def state(self):
        return self.megatron.state

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.megatron.zero_grad(set_to_none)

    def step(self, closure=None):
        loss = closure() if closure is not None else None
        _, self.grad_norm, _ = self.megatron.step()
        return loss

    def state_dict(self) -> dict:
        return self.megatron.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.megatron.load_state_dict(state_dict)


def optimizer_config(cfg: DictConfig) -> OptimizerConfig:
    """The shared AdamW settings (betas 0.9/0.95, eps 1e-8) in Megatron's terms."""
    trainer = cfg.trainer
    bf16 = cfg.dtype.name in ("bf16", "fp8")
    return OptimizerConfig(
        optimizer="adam",
        lr=trainer.lr,
        min_lr=trainer.lr * trainer.min_lr_ratio,
        weight_decay=trainer.weight_decay,
        adam_beta1=0.9,
        adam_beta2=0.95,
        adam_eps=1e-8,
        clip_grad=trainer.grad_clip or float("inf"),  # inf: measure the norm, never clip
        bf16=bf16,
        params_dtype=torch.bfloat16 if bf16 else torch.float32,
        use_distributed_optimizer=cfg.backend.use_distributed_optimizer,
        overlap_param_gather=cfg.backend.overlap_param_gather,
    )


def build_optimizer(chunks: list[torch.nn.Module], cfg: DictConfig):
    """Megatron's optimizer over the DDP-wrapped ``chunks`` and its per-step LambdaLR schedule.

    Weight decay applies to every parameter, norms included, as on the native backend (an empty
    override map turns off Megatron's default exemption of 1-D parameters).
    """
    megatron_optimizer = get_megatron_optimizer(
        optimizer_config(cfg), list(chunks), config_overrides={}
    )
    optimizer = LightningMegatronOptimizer(megatron_optimizer)
    return optimizer, build_schedule(optimizer, cfg.trainer)
