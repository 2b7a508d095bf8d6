"""launch.sh's scale logic: which pinned configuration a job of N GPUs runs (plan/scale.py)."""

from __future__ import annotations

import pytest

from recipes.config import conf_dir, resolve_auto, validate
from recipes.errors import ConfigError
from recipes.plan.scale import DTYPES, pick


def composed(compose_cfg, scale, *extra):
    cfg = compose_cfg(*scale.overrides(), *extra)
    resolve_auto(cfg, cuda_available=False)
    return cfg, validate(cfg, scale.num_gpus)


# Seed 003's table: GPUs -> (layers, GBS, PP, VP); TP8 CP2 MBS1 sequence 8192 throughout.
SEED_003 = {
    32: (7, 126, 1, 1),
    96: (21, 126, 3, 7),
    192: (42, 252, 3, 7),
    576: (126, 252, 9, 7),
    1152: (126, 504, 9, 7),
    2304: (126, 1008, 9, 7),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gpus", sorted(SEED_003))
def test_405b_follows_seed_003_at_every_published_scale(compose_cfg, gpus, dtype):
    scale = pick("405b", dtype, gpus)
    cfg, layout = composed(compose_cfg, scale)
    layers, gbs, pp, vp = SEED_003[gpus]
    assert (cfg.model.n_layers, cfg.trainer.global_batch_size) == (layers, gbs)
    assert (layout.tp, layout.pp, layout.vp, layout.cp) == (8, pp, vp, 2)
    assert (cfg.trainer.micro_batch_size, cfg.trainer.seq_len, cfg.trainer.max_steps) == (
        1,
        8192,
        50,
    )
    assert cfg.dtype.name == dtype and cfg.model.dim == 16384
    assert cfg.backend.name == "megatron"  # NeMo's engine; native refuses PP with CP
    # Proxy results are labelled as such, in the config and so in summary.json.
    assert cfg.proxy is scale.proxy is (gpus < 576)
    assert "seed 003" in scale.source


@pytest.mark.parametrize("gpus", [576, 720, 1152, 2304, 4608])
def test_405b_from_576_gpus_scales_gbs_as_gpus_times_252_over_576(compose_cfg, gpus):
    cfg, layout = composed(compose_cfg, pick("405b", "fp8", gpus))
    assert cfg.trainer.global_batch_size == gpus * 252 // 576
    assert layout.dp == gpus // 144 and cfg.model.n_layers == 126


@pytest.mark.parametrize("gpus", [1, 8, 16, 64, 128, 200, 288, 600, 1000])
def test_405b_unknown_scales_name_the_supported_ones(gpus):
    with pytest.raises(ConfigError) as err:
        pick("405b", "bf16", gpus)
    message = str(err.value)
    assert f"no configuration for {gpus} GPUs" in message
    assert "32, 96 or 192" in message and "multiple of 144 from 576" in message


@pytest.mark.parametrize("gpus, gbs, dp", [(8, 128, 4), (16, 256, 8), (64, 1024, 32)])
def test_8b_follows_nemo_h100_recipe(compose_cfg, gpus, gbs, dp):
    scale = pick("8b", "bf16", gpus)
    cfg, layout = composed(compose_cfg, scale)
    assert (layout.tp, layout.pp, layout.cp, layout.dp) == (1, 1, 2, dp)
    assert (cfg.trainer.global_batch_size, cfg.trainer.seq_len) == (gbs, 8192)
    assert not cfg.proxy and "model_configs_h100.csv" in scale.source


@pytest.mark.parametrize("dtype, layout_expected", [("bf16", (4, 4, 5, 2)), ("fp8", (4, 8, 5, 1))])
def test_70b_layout_depends_on_dtype_as_published(compose_cfg, dtype, layout_expected):
    cfg, layout = composed(compose_cfg, pick("70b", dtype, 64))
    assert (layout.tp, layout.pp, layout.vp, layout.cp) == layout_expected
    assert layout.sequence_parallel and cfg.trainer.global_batch_size == 128
    assert cfg.dtype.name == dtype and cfg.model.n_layers == 80
    assert cfg.backend.name == "megatron"
    cfg, layout = composed(compose_cfg, pick("70b", dtype, 128))
    assert (cfg.trainer.global_batch_size, layout.dp) == (256, 4)  # 32 GPUs per replica


@pytest.mark.parametrize("size, gpus", [("8b", 4), ("8b", 12), ("70b", 32), ("70b", 96)])
def test_8b_70b_unknown_scales_fail(size, gpus):
    with pytest.raises(ConfigError, match=f"MODEL_SIZE={size} has no configuration for {gpus}"):
        pick(size, "bf16", gpus)


@pytest.mark.parametrize("gpus", [1, 3, 4, 8])
def test_debug_runs_at_any_scale_data_parallel(compose_cfg, gpus):
    scale = pick("debug", "bf16", gpus)
    assert scale.experiment is None and not scale.proxy
    cfg, layout = composed(compose_cfg, scale)
    assert layout.dp == gpus and cfg.model.name == "llama31_debug"


def test_bad_inputs_name_the_valid_values():
    with pytest.raises(ConfigError, match="MODEL_SIZE='7b' must be one of: 8b 70b 405b debug"):
        pick("7b", "bf16", 8)
    with pytest.raises(ConfigError, match="DTYPE='fp16' must be one of: bf16 fp8"):
        pick("8b", "fp16", 8)


def test_every_experiment_file_is_reachable_from_the_scale_table():
    files = {p.stem for p in (conf_dir() / "experiment").glob("*.yaml")}
    reached = {
        pick(size, dtype, gpus).experiment
        for size, gpus in [("405b", 32), ("405b", 96), ("405b", 192), ("405b", 576)]
        + [("8b", 8), ("70b", 64)]
        for dtype in DTYPES
    }
    assert files == reached
