"""Native backend: pure-PyTorch Llama 3.1 on Lightning (FSDP2/DTensor/pipelining to come)."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig

from recipes.backends.native.module import NativeLlamaModule
from recipes.errors import ConfigError
from recipes.plan.layout import Layout

PRECISION = {"fp32": "32-true", "bf16": "bf16-mixed"}
"""dtype.name -> Lightning precision: bf16 autocast over fp32 master weights."""


class NativeBackend:
    """Builds :class:`NativeLlamaModule` and a single-device Trainer."""

    def validate(self, cfg: DictConfig, layout: Layout) -> None:
        if cfg.dtype.name not in PRECISION:
            raise ConfigError(
                f"dtype={cfg.dtype.name} is not available on backend=native yet; "
                f"use dtype in {sorted(PRECISION)}"
            )
        if not layout.is_single_process:
            raise ConfigError(
                f"backend=native runs one process in this version, but {layout.world_size} were "
                "launched; run a single process (no torchrun/srun tasks > 1)"
            )

    def build_module(self, cfg: DictConfig, layout: Layout) -> NativeLlamaModule:
        return NativeLlamaModule(cfg)

    def trainer_kwargs(self, cfg: DictConfig, layout: Layout) -> dict[str, Any]:
        if cfg.cluster.accelerator == "gpu":
            torch.set_float32_matmul_precision("high")  # TF32 for fp32 runs, as NeMo does
        return {
            "accelerator": cfg.cluster.accelerator,
            "devices": 1,
            "strategy": "auto",
            "precision": PRECISION[cfg.dtype.name],
        }
