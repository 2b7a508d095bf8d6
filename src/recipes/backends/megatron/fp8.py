"""``dtype=fp8`` on the megatron backend: the named recipes and their Transformer Engine mapping.

Megatron-core builds the TE recipe object itself from ``TransformerConfig.fp8*``; this module
names the recipes, maps ``cfg.dtype`` onto those fields, and checks before anything starts that
TE imports and the GPU can run the recipe.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from recipes.backends.megatron import env
from recipes.errors import ConfigError


@dataclass(frozen=True)
class Recipe:
    """One FP8 scaling recipe as Transformer Engine implements it."""

    te_class: str
    """The ``transformer_engine.common.recipe`` class Megatron-core builds."""
    min_te: tuple[int, int]
    """Oldest Transformer Engine that has it."""
    min_capability: tuple[int, int]
    """Oldest CUDA compute capability that runs it (8.9 Ada/9.0 Hopper, 10.0 Blackwell)."""


RECIPES = {
    # Seed 003 (NeMo 24.09): scales from a 1024-step amax history, taking its max.
    "delayed": Recipe("DelayedScaling", (1, 0), (8, 9)),
    # Per-tensor scales from the current amax (torchao's "tensorwise" on the native backend).
    "tensorwise": Recipe("Float8CurrentScaling", (2, 2), (8, 9)),
    # Microscaling: one E8M0 scale per 32 values, in Blackwell's tensor cores.
    "mxfp8": Recipe("MXFP8BlockScaling", (2, 1), (10, 0)),
}
"""dtype.fp8_recipe -> the TE recipe (Megatron-core's ``fp8_recipe`` of the same name)."""

AMAX_ALGOS = ("max", "most_recent")


def transformer_config_kwargs(dtype: DictConfig) -> dict:
    """``TransformerConfig`` FP8 fields for ``cfg.dtype``: e4m3 forward, e5m2 gradients (hybrid)."""
    if dtype.name != "fp8":
        return {}
    kwargs = {"fp8": "hybrid", "fp8_recipe": dtype.fp8_recipe}
    if dtype.fp8_recipe == "delayed":
        kwargs["fp8_amax_history_len"] = dtype.fp8_amax_history_len
        kwargs["fp8_amax_compute_algo"] = dtype.fp8_amax_compute_algo
    return kwargs


def check_recipe(cfg: DictConfig) -> None:
    """Raise ConfigError unless ``cfg.dtype`` names a Transformer Engine recipe correctly."""
    recipe_name = cfg.dtype.fp8_recipe
    if recipe_name not in RECIPES:
        raise ConfigError(
            f"dtype.fp8_recipe={recipe_name!r} is not a Transformer Engine recipe of "
            f"backend=megatron; use dtype.fp8_recipe in {sorted(RECIPES)} (or dtype=fp8, "
            "dtype=fp8_delayed, dtype=fp8_mxfp8), or backend=native for torchao's rowwise"
        )
    if cfg.dtype.fp8_amax_history_len < 1:
        raise ConfigError(
            f"dtype.fp8_amax_history_len={cfg.dtype.fp8_amax_history_len} must be >= 1 (the "
            "steps of amax history the FP8 scales come from); use 1024 (NeMo's setting)"
        )
    if cfg.dtype.fp8_amax_compute_algo not in AMAX_ALGOS:
        raise ConfigError(
            f"dtype.fp8_amax_compute_algo={cfg.dtype.fp8_amax_compute_algo!r} is not one of "
            f"{list(AMAX_ALGOS)}; pick one of them"
        )


def check_runtime(cfg: DictConfig) -> None:
    """Raise ConfigError unless Transformer Engine and this GPU can run the FP8 recipe."""
    recipe_name = cfg.dtype.fp8_recipe
    error = env.te_import_error()
    if error is not None:
        raise ConfigError(
            f"dtype=fp8 with backend=megatron runs FP8 through NVIDIA Transformer Engine, which "
            f"does not import here ({error}); run in {env.NEMO_CONTAINER}, or use "
            "backend=native for torchao float8"
        )
    recipe = RECIPES[recipe_name]
    if env.te_version() < recipe.min_te:
        raise ConfigError(
            f"dtype.fp8_recipe={recipe_name} ({recipe.te_class}) needs Transformer Engine >= "
            f"{'.'.join(map(str, recipe.min_te))}, found {env.te_version()}; update TE (a newer "
            "NeMo container) or pick dtype=fp8_delayed"
        )
    if cfg.cluster.accelerator != "gpu":
        raise ConfigError(
            "dtype=fp8 with backend=megatron needs a GPU; use cluster.accelerator=gpu"
        )
    capability = torch.cuda.get_device_capability()
    if capability < recipe.min_capability:
        raise ConfigError(
            f"dtype.fp8_recipe={recipe_name} ({recipe.te_class}) needs compute capability >= "
            f"{recipe.min_capability}, this GPU has {capability}; pick dtype=fp8 or "
            "dtype=fp8_delayed on Hopper/Ada"
        )
