"""backend=megatron without processes: config translation and the rules checked before start."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("megatron.core")

import torch.nn.functional as F  # noqa: E402

from recipes.backends import get_backend  # noqa: E402
from recipes.backends.megatron import env, fp8, provider  # noqa: E402
from recipes.config import resolve_auto, validate  # noqa: E402
from recipes.errors import ConfigError  # noqa: E402


def checked(compose_cfg, *overrides, world: int = 1):
    """Compose, resolve and run the generic and the megatron rules, as recipes-train does."""
    cfg = compose_cfg("backend=megatron", *overrides)
    resolve_auto(cfg, cuda_available=False)
    layout = validate(cfg, world_size=world)
    get_backend("megatron").validate(cfg, layout)
    return cfg


def test_llama31_8b_translates_field_by_field(compose_cfg):
    cfg = checked(compose_cfg, "model=llama31_8b", "parallelism.tp=8", world=8)
    config = provider.transformer_config(cfg)
    assert (config.num_layers, config.hidden_size, config.ffn_hidden_size) == (32, 4096, 14336)
    assert (config.num_attention_heads, config.num_query_groups, config.kv_channels) == (32, 8, 128)
    assert config.gated_linear_unit and config.activation_func is F.silu
    assert config.normalization == "RMSNorm" and config.layernorm_epsilon == 1e-5
    assert not config.add_bias_linear and not config.add_qkv_bias
    assert config.tensor_model_parallel_size == 8 and config.params_dtype == torch.float32
    assert config.use_cpu_initialization  # CPU: the layout-independent initialisation


def test_vocab_is_padded_as_megatron_pads_it():
    assert provider.padded_vocab_size(128256, 128, 1) == 128256
    assert provider.padded_vocab_size(128256, 128, 8) == 129024
    assert provider.padded_vocab_size(2000, 128, 1) == 2048


@pytest.mark.parametrize(
    "dtype, expected",
    [
        ("fp8", {"fp8": "hybrid", "fp8_recipe": "tensorwise"}),
        (
            "fp8_delayed",
            {
                "fp8": "hybrid",
                "fp8_recipe": "delayed",
                "fp8_amax_history_len": 1024,
                "fp8_amax_compute_algo": "max",
            },
        ),
        ("fp8_mxfp8", {"fp8": "hybrid", "fp8_recipe": "mxfp8"}),
        ("bf16", {}),
    ],
)
def test_fp8_recipes_map_to_transformer_engine_fields(compose_cfg, dtype, expected):
    cfg = compose_cfg("backend=megatron", f"dtype={dtype}")
    assert fp8.transformer_config_kwargs(cfg.dtype) == expected


@pytest.mark.parametrize(
    "overrides, world, message",
    [
        (
            ["model.rope_scaling.high_freq_factor=2"],
            1,
            r"model.rope_scaling.high_freq_factor=2.0 differs from the 4.0 that Megatron-core",
        ),
        (
            ["parallelism.pp=2", "parallelism.pp_schedule=gpipe"],
            2,
            r"pp_schedule='gpipe' is not a Megatron-core schedule; use pp_schedule=1f1b",
        ),
        (
            [
                "parallelism.dp_replicate=2",
                "backend.use_distributed_optimizer=false",
                "backend.overlap_param_gather=false",
            ],
            2,
            r"dp_replicate=2 on megatron makes that many distributed-optimizer instances",
        ),
        (
            ["backend.overlap_param_gather=true", "backend.use_distributed_optimizer=false"],
            1,
            r"overlap_param_gather=true needs backend.use_distributed_optimizer=true",
        ),
        (["backend.activation_checkpointing=some"], 1, r"activation_checkpointing='some'"),
        (["dtype=fp8_rowwise"], 1, r"fp8_recipe='rowwise' is not a Transformer Engine recipe"),
        (
            ["dtype=fp8_delayed", "dtype.fp8_amax_history_len=0"],
            1,
            r"dtype.fp8_amax_history_len=0 must be >= 1 .*; use 1024",
        ),
    ],
)
def test_bad_settings_stop_before_start(compose_cfg, overrides, world, message):
    with pytest.raises(ConfigError, match=message):
        checked(compose_cfg, *overrides, world=world)


@pytest.mark.skipif(env.te_import_error() is None, reason="Transformer Engine imports here")
@pytest.mark.parametrize("dtype", ["fp8", "fp8_delayed", "fp8_mxfp8"])
def test_fp8_without_transformer_engine_names_the_nemo_container(compose_cfg, dtype):
    with pytest.raises(ConfigError, match=r"Transformer Engine, which does not import here.*NeMo"):
        checked(compose_cfg, f"dtype={dtype}")


def test_a_dry_run_plans_fp8_without_transformer_engine_here(compose_cfg):
    """A dry run plans for another machine: this one's software is not checked."""
    checked(compose_cfg, "dtype=fp8_delayed", "dry_run=true")


def test_the_default_layouts_pass(compose_cfg):
    checked(compose_cfg)
    checked(compose_cfg, "parallelism.tp=2", "parallelism.sequence_parallel=true", world=2)
    checked(compose_cfg, "parallelism.pp=2", "parallelism.vp=2", world=2)
    checked(compose_cfg, "parallelism.cp=2", "parallelism.dp_replicate=2", world=4)
