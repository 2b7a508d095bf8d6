"""Megatron backend: Megatron-core's GPTModel, parallelism and optimizer under a Lightning Trainer.

``backend=megatron`` composes the same config groups as the native backend and translates them
onto Megatron-core, as NeMo does, without NeMo. Megatron-core (and Transformer Engine, where
present) is imported only when this backend builds something; ``validate`` needs neither.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig

from recipes.backends.megatron import env, fp8
from recipes.distributed import lightning_devices
from recipes.errors import ConfigError
from recipes.plan.layout import Layout

DTYPES = ("fp32", "bf16", "fp8")

MEGATRON_ROPE = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position": 8192}
"""The Llama 3.1 RoPE scaling constants Megatron-core hard-codes (only ``factor`` is a knob)."""


class MegatronBackend:
    """Builds :class:`MegatronLlamaModule` and a Trainer on :class:`MegatronStrategy`."""

    def validate(self, cfg: DictConfig, layout: Layout) -> None:
        """Raise ConfigError for settings Megatron-core cannot run, before any process starts.

        A dry run plans for another machine, so it skips the checks of this one's software.
        """
        if cfg.dtype.name not in DTYPES:
            raise ConfigError(f"dtype={cfg.dtype.name} is not one of {list(DTYPES)} on megatron")
        _check_rope(cfg.model.rope_scaling)
        _check_backend_fields(cfg)
        _check_layout(cfg, layout)
        if cfg.dtype.name == "fp8":
            fp8.check_recipe(cfg)
        if not cfg.dry_run:
            _check_environment(cfg, layout)

    def build_module(self, cfg: DictConfig, layout: Layout):
        env.quiet_megatron()
        from recipes.backends.megatron.module import MegatronLlamaModule

        return MegatronLlamaModule(cfg)

    def trainer_kwargs(self, cfg: DictConfig, layout: Layout) -> dict[str, Any]:
        env.quiet_megatron()
        from recipes.backends.megatron.strategy import MegatronStrategy

        if cfg.cluster.accelerator == "gpu":
            torch.set_float32_matmul_precision("high")  # TF32 for fp32 runs, as native and NeMo

        # Megatron keeps its own precision (bf16 weights, fp32 main grads and weights in the
        # optimizer; TE for FP8), so Lightning must not add autocast on top.
        return {
            "accelerator": cfg.cluster.accelerator,
            **lightning_devices(),
            "strategy": MegatronStrategy(cfg),
            "precision": "32-true",
        }


def _check_rope(rope) -> None:
    if rope is None:
        return
    for key, value in MEGATRON_ROPE.items():
        if rope[key] != value:
            raise ConfigError(
                f"model.rope_scaling.{key}={rope[key]} differs from the {value} that Megatron-core "
                f"hard-codes for Llama 3.1 RoPE scaling; set model.rope_scaling.{key}={value} or "
                "use backend=native"
            )


def _check_backend_fields(cfg: DictConfig) -> None:
    backend = cfg.backend
    recompute = ("none", "selective", "full")
    if backend.activation_checkpointing not in recompute:
        raise ConfigError(
            f"backend.activation_checkpointing={backend.activation_checkpointing!r} is not one "
            f"of {list(recompute)}; pick one of them"
        )
    if backend.overlap_param_gather and not backend.use_distributed_optimizer:
        raise ConfigError(
            "backend.overlap_param_gather=true needs backend.use_distributed_optimizer=true "
            "(only the distributed optimizer gathers weights); enable it or set "
            "overlap_param_gather=false"
        )
    if backend.make_vocab_size_divisible_by < 1:
        raise ConfigError(
            f"backend.make_vocab_size_divisible_by={backend.make_vocab_size_divisible_by} must "
            "be >= 1; use 128 (Megatron's default)"
        )


def _check_layout(cfg: DictConfig, layout: Layout) -> None:
    schedule = cfg.parallelism.pp_schedule
    if layout.pp > 1 and schedule != "1f1b":
        raise ConfigError(
            f"parallelism.pp_schedule={schedule!r} is not a Megatron-core schedule; use "
            "pp_schedule=1f1b (interleaved 1F1B when vp > 1) or backend=native"
        )
    if layout.dp_replicate > 1 and not cfg.backend.use_distributed_optimizer:
        raise ConfigError(
            f"parallelism.dp_replicate={layout.dp_replicate} on megatron makes that many "
            "distributed-optimizer instances (state sharded within each, replicated across), "
            "which needs backend.use_distributed_optimizer=true; enable it or set dp_replicate=1"
        )


def _check_environment(cfg: DictConfig, layout: Layout) -> None:
    """What this machine must have: megatron-core, and Transformer Engine for FP8 and for CP or
    SP on a GPU (the CPU shims stand in for TE's layers only on CPU)."""
    if env.megatron_version() is None:
        raise ConfigError(
            f"backend=megatron needs megatron-core >= {env.MEGATRON_MIN}, which is not "
            "installed; pip install 'recipes[megatron]' (or run in the NeMo container)"
        )
    if cfg.dtype.name == "fp8":
        fp8.check_runtime(cfg)
    te_error = env.te_import_error()
    if (
        cfg.cluster.accelerator == "gpu"
        and te_error
        and (layout.cp > 1 or layout.sequence_parallel)
    ):
        raise ConfigError(
            "parallelism.cp > 1 and sequence_parallel on a GPU need Transformer Engine's layers "
            f"(Megatron's local spec refuses them), and TE does not import here ({te_error}); "
            f"run in {env.NEMO_CONTAINER}, or set cp=1 and sequence_parallel=false"
        )
