"""Native backend: pure-PyTorch Llama 3.1 on Lightning with FSDP2/HSDP, DTensor TP+SP,
pipelining (1F1B, GPipe, interleaved 1F1B), context parallelism, torchao float8, compile and
activation checkpointing."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig

from recipes import distributed
from recipes.backends.native.module import NativeLlamaModule
from recipes.backends.native.parallelize import fsdp_enabled
from recipes.backends.native.strategy import NativeParallelStrategy
from recipes.errors import ConfigError
from recipes.models.llama import SDPA_KERNELS
from recipes.optim import ADAMW_IMPLS
from recipes.plan.layout import Layout

FP8_RECIPES = ("tensorwise", "rowwise")
AC_MODES = ("none", "selective", "full")
INIT_MODES = ("auto", "full", "sharded")


def _check(field: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(
            f"{field}={value!r} is not available on backend=native; use one of {list(allowed)}"
        )


def check_sdpa_backends(names: list[str]) -> None:
    """backend.sdpa_backends: known kernels, each once, math (every device and dtype) among them."""
    field = f"backend.sdpa_backends={names}"
    unknown = [name for name in names if name not in SDPA_KERNELS]
    if unknown:
        raise ConfigError(f"{field} names {unknown}; use kernels from {list(SDPA_KERNELS)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"{field} names a kernel twice; list each once")
    if "math" not in names:
        raise ConfigError(
            f"{field} lacks math, the kernel every device and dtype has; append math "
            f"(e.g. {[*names, 'math']})"
        )


RING_KERNELS = {"cpu": ("flash",), "gpu": ("cudnn", "flash", "efficient")}
"""The attention kernels context parallelism has ring-attention handlers for, per accelerator
(on CPU the flash kernel, through the shim in ``context_parallel.py``); math has none."""


def check_cp_kernels(names: list[str], cp: int, accelerator: str) -> None:
    """cp > 1: SDPA must reach a kernel with a ring-attention handler before math, which would
    meet the sequence-sharded q/k/v mid-step and fail ("mixed torch.Tensor and DTensor")."""
    ring = RING_KERNELS.get(accelerator, RING_KERNELS["gpu"])
    if not any(name in ring for name in names):
        raise ConfigError(
            f"parallelism.cp={cp} runs ring attention, which on {accelerator} has handlers for "
            f"{list(ring)} only, and backend.sdpa_backends={names} names none of them; use "
            f"backend.sdpa_backends={[ring[0], *names]} (or cp=1)"
        )


class NativeBackend:
    """Builds :class:`NativeLlamaModule` and :class:`NativeParallelStrategy`."""

    def validate(self, cfg: DictConfig, layout: Layout) -> None:
        _check("backend.activation_checkpointing", cfg.backend.activation_checkpointing, AC_MODES)
        _check("backend.init", cfg.backend.init, INIT_MODES)
        _check("backend.optimizer_impl", cfg.backend.optimizer_impl, ADAMW_IMPLS)
        check_sdpa_backends(list(cfg.backend.sdpa_backends))
        if cfg.dtype.name == "fp8":
            _check("dtype.fp8_recipe", cfg.dtype.fp8_recipe, FP8_RECIPES)
            if cfg.dtype.fp8_fsdp_all_gather and cfg.dtype.fp8_recipe != "tensorwise":
                raise ConfigError(
                    f"dtype.fp8_fsdp_all_gather=true needs fp8_recipe=tensorwise, not "
                    f"{cfg.dtype.fp8_recipe!r}; set dtype.fp8_fsdp_all_gather=false"
                )
        if layout.cp > 1:
            check_cp_kernels(list(cfg.backend.sdpa_backends), layout.cp, cfg.cluster.accelerator)
        if layout.pp > 1 and layout.cp > 1:
            raise ConfigError(
                f"parallelism.pp={layout.pp} with cp={layout.cp} is not supported on "
                "backend=native; use pp or cp, or backend=megatron"
            )

    def build_module(self, cfg: DictConfig, layout: Layout) -> NativeLlamaModule:
        return NativeLlamaModule(cfg, layout)

    def trainer_kwargs(self, cfg: DictConfig, layout: Layout) -> dict[str, Any]:
        on_gpu = cfg.cluster.accelerator == "gpu"
        if on_gpu:
            torch.set_float32_matmul_precision("high")  # TF32 for fp32 runs, as NeMo does
            # bf16 (and fp8's non-fp8 parts): FSDP's mixed-precision policy where it shards,
            # autocast otherwise.
            low = cfg.dtype.name in ("bf16", "fp8")
            autocast = low and not fsdp_enabled(layout)
        else:
            # On CPU bf16 autocasts when asked for; fp8 keeps everything but its matmuls in fp32.
            autocast = cfg.dtype.name == "bf16"
        return {
            "accelerator": cfg.cluster.accelerator,
            "strategy": NativeParallelStrategy(
                layout, cfg.cluster.comm_backend, cfg.cluster.comm_timeout_minutes
            ),
            "precision": "bf16-mixed" if autocast else "32-true",
            **distributed.lightning_devices(),
        }
