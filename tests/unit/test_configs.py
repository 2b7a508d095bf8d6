"""Every config-group combination composes; typos, wrong types and bad relations fail early."""

from __future__ import annotations

import itertools

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from recipes.config import conf_dir, resolve_auto, validate
from recipes.errors import ConfigError
from recipes.models.llama import num_params
from tiny_corpus import write_corpus

GROUPS = ("model", "dtype", "parallelism", "backend", "data", "cluster")


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


# Named parallel layouts need their model at their scale: tests/unit/test_train.py plans each.
COMBINATIONS = list(
    itertools.product(*(["auto"] if g == "parallelism" else group_options(g) for g in GROUPS))
)


def test_every_group_has_options():
    for group in GROUPS:
        assert group_options(group), group


@pytest.fixture(scope="module")
def text_data(tmp_path_factory) -> dict[str, tuple[str, ...]]:
    """The keys data=c4 and data=hf need, pointing at a tiny local corpus and tokenizer."""
    shards, tokenizer, _ = write_corpus(tmp_path_factory.mktemp("c4"))
    files = (f"data.path={shards}", f"data.tokenizer={tokenizer}")
    return {"c4": files, "hf": (*files, "data.subset=null")}


@pytest.mark.parametrize("choice", COMBINATIONS, ids=lambda c: "-".join(c))
def test_every_combination_composes_and_validates(compose_cfg, text_data, choice):
    data = choice[GROUPS.index("data")]
    if data == "hf":
        pytest.importorskip("datasets")
    groups = (f"{g}={c}" for g, c in zip(GROUPS, choice, strict=True))
    cfg = compose_cfg(*groups, *text_data.get(data, ()))
    assert cfg.model.name == choice[0]
    resolve_auto(cfg, cuda_available=False)
    layout = validate(cfg, world_size=1)
    assert layout.dp == 1
    assert num_params(cfg.model) > 0


def test_default_is_the_tiny_model_on_cpu(compose_cfg):
    cfg = compose_cfg()
    resolve_auto(cfg, cuda_available=False)
    assert (cfg.model.name, cfg.dtype.name, cfg.cluster.accelerator) == (
        "llama31_debug",
        "fp32",
        "cpu",
    )
    cfg = compose_cfg()
    resolve_auto(cfg, cuda_available=True)
    assert (cfg.dtype.name, cfg.cluster.accelerator) == ("bf16", "gpu")


@pytest.mark.parametrize(
    "model, dims",
    [
        ("llama31_8b", (4096, 32, 32, 8, 14336)),
        ("llama31_70b", (8192, 80, 64, 8, 28672)),
        ("llama31_405b", (16384, 126, 128, 8, 53248)),
    ],
)
def test_llama31_hyperparameters(compose_cfg, model, dims):
    m = compose_cfg(f"model={model}").model
    assert (m.dim, m.n_layers, m.n_heads, m.n_kv_heads, m.ffn_dim) == dims
    assert (m.vocab_size, m.norm_eps, m.rope_theta) == (128256, 1e-5, 500000.0)
    scaling = m.rope_scaling
    assert (scaling.factor, scaling.low_freq_factor, scaling.high_freq_factor) == (8, 1, 4)
    assert scaling.original_max_position == 8192


def test_misspelt_key_fails_at_compose(compose_cfg):
    with pytest.raises(ConfigCompositionException, match="tpp"):
        compose_cfg("parallelism.tpp=2")


def test_wrong_type_fails_at_compose(compose_cfg):
    with pytest.raises((ConfigCompositionException, ValidationError), match="max_steps"):
        compose_cfg("trainer.max_steps=many")


def test_unknown_group_option_fails(compose_cfg):
    with pytest.raises(ConfigCompositionException, match="llama31_7b"):
        compose_cfg("model=llama31_7b")


@pytest.mark.parametrize(
    "overrides, world, message",
    [
        (["parallelism.tp=3"], 3, r"parallelism.tp=3 does not divide model.n_heads=8; use tp in"),
        (["parallelism.tp=2", "parallelism.dp_shard=2"], 2, r"must equal the world size 2"),
        (["parallelism.pp=3"], 3, r"pp\*vp=3\*1=3 does not divide model.n_layers=4"),
        (["parallelism.cp=2", "trainer.seq_len=250"], 2, r"use seq_len=248 or 252"),
        (
            ["trainer.global_batch_size=7"],
            2,
            r"global_batch_size=7 .* use global_batch_size=6 or 8",
        ),
        (["parallelism.vp=2"], 1, r"vp=2 needs pipeline parallelism"),
        (
            ["parallelism.pp=2", "trainer.global_batch_size=2"],
            4,
            r"gives 1 micro-batches per pipeline .* at least pp=2; use global_batch_size=4",
        ),
        (["parallelism.sequence_parallel=true"], 1, r"sequence_parallel=true needs tp >= 2"),
        (
            ["parallelism.tp=2", "parallelism.sequence_parallel=true", "trainer.seq_len=255"],
            2,
            r"sequence_parallel=true splits each rank's 255 tokens .* use seq_len=254 or 256",
        ),
        (["trainer.seq_len=9000"], 1, r"seq_len=9000 exceeds model.max_seq_len=8192"),
        (["trainer.max_steps=2"], 1, r"timing_warmup_steps=2 leaves no steady-state"),
        (["model.n_kv_heads=3"], 1, r"model.n_heads=8 is not divisible by model.n_kv_heads=3"),
        (["cluster.accelerator=tpu"], 1, r"cluster.accelerator='tpu' is not one of"),
        # Each trainer value on its own (no process group, no optimizer built yet).
        (["trainer.lr=-1"], 1, r"trainer.lr=-1.0 must be > 0; use e.g. lr=3e-4"),
        (["trainer.min_lr_ratio=2"], 1, r"trainer.min_lr_ratio=2.0 must be in \[0, 1\]"),
        (["trainer.warmup_steps=-3"], 1, r"trainer.warmup_steps=-3 must be >= 0; use 0"),
        (["trainer.weight_decay=-1"], 1, r"trainer.weight_decay=-1.0 must be >= 0"),
        (["trainer.grad_clip=-1"], 1, r"trainer.grad_clip=-1.0 must be >= 0; use 0 to disable"),
        (["trainer.timing_warmup_steps=-1"], 1, r"timing_warmup_steps=-1 must be >= 0"),
        (["trainer.log_every_n_steps=0"], 1, r"log_every_n_steps=0 must be >= 1; use 1"),
        (["trainer.gc_every_n_steps=-5"], 1, r"gc_every_n_steps=-5 must be >= 0; use 0"),
        (["trainer.micro_batch_size=0"], 1, r"micro_batch_size=0 must be >= 1"),
        (["seed=-1"], 1, r"seed=-1 must be in \[0, 2\*\*32\); use e.g. seed=1234"),
        # Hydra's '+' adds a key the schema lacks instead of failing.
        (["+trainer.maxsteps=4"], 1, r"trainer.maxsteps is not a key of trainer \(its keys: "),
        (["+cluster.num_gpu=576"], 1, r"cluster.num_gpu is not a key of cluster"),
        (["++foo=1"], 1, r"foo is not a key of the config"),
        # Each model size on its own, then what tensor parallelism splits.
        (["model.n_heads=0"], 1, r"model.n_heads=0 must be >= 1"),
        (["model.ffn_dim=-4"], 1, r"model.ffn_dim=-4 must be >= 1"),
        (["model.vocab_size=0"], 1, r"model.vocab_size=0 must be >= 1"),
        (["model.norm_eps=0"], 1, r"model.norm_eps=0.0 must be > 0"),
        (["model.init_std=-0.1"], 1, r"model.init_std=-0.1 must be > 0"),
        (["model.rope_scaling.factor=0"], 1, r"rope_scaling.factor=0.0 must be > 0; use Llama"),
        (
            ["model.rope_scaling.high_freq_factor=1"],
            1,
            r"high_freq_factor=1.0 must be > low_freq_factor=1.0 .* use Llama 3.1's",
        ),
        (["parallelism.pp_schedule=zb"], 1, r"pp_schedule='zb' is not one of .*; pick one"),
        (["parallelism.dp_shard=0"], 1, r"dp_shard=0 must be >= 1, or -1 .*; use dp_shard=-1"),
        (["model.ffn_dim=771", "parallelism.tp=2"], 2, r"tp=2 does not divide model.ffn_dim=771"),
        # The machine.
        (["cluster.num_gpus=0", "dry_run=true"], 1, r"cluster.num_gpus=0 must be >= 1"),
        (["cluster.peak_tflops=0"], 1, r"cluster.peak_tflops=0.0 must be > 0"),
        (["cluster.comm_timeout_minutes=0"], 1, r"comm_timeout_minutes=0 must be >= 1 \(minutes"),
        (["cluster.comm_backend=foo"], 1, r"comm_backend='foo' is not a torch.distributed"),
        (["cluster.comm_backend='cpu:gloo,cuda:foo'"], 1, r"'cpu:gloo,cuda:foo' is not a torch"),
        (["cluster.comm_backend=nccl"], 1, r"comm_backend='nccl' (is not built|needs GPUs)"),
        (["run_name=a/b"], 1, r"run_name='a/b' must be a non-empty name without '/'"),
        (
            ["log_ranks=[4]"],
            4,
            r"log_ranks=\[4\] names no rank of this 4-process run \(ranks 0..3\)",
        ),
        (["log_ranks=[]"], 2, r"log_ranks=\[\] names no rank .* or null for every rank"),
        # FP8 only where the planned GPU has FP8 (MXFP8: Blackwell) tensor cores.
        (
            ["dtype=fp8", "dry_run=true", "cluster.gpu_type=a100"],
            1,
            r"dtype=fp8 but cluster.gpu_type=a100 has no FP8 tensor cores; use dtype=bf16",
        ),
        (
            ["dtype=fp8_mxfp8", "backend=megatron", "dry_run=true", "cluster.gpu_type=h100_sxm"],
            1,
            r"fp8_recipe=mxfp8 needs Blackwell's MXFP8 tensor cores, which cluster.gpu_type=h100",
        ),
    ],
)
def test_bad_relations_name_field_value_rule_and_fix(compose_cfg, overrides, world, message):
    cfg = compose_cfg(*overrides)
    with pytest.raises(ConfigError, match=message):
        resolve_auto(cfg, cuda_available=False)
        validate(cfg, world_size=world)


@pytest.mark.parametrize(
    "name, capability, refused",
    [
        ("NVIDIA A100-SXM4-80GB", (8, 0), True),  # in the peak table, without FP8
        ("NVIDIA H100 80GB HBM3", (9, 0), False),
        ("NVIDIA GeForce RTX 3090", (8, 6), True),  # not in the table: compute capability
        ("NVIDIA L40S", (8, 9), False),
    ],
)
def test_fp8_on_the_gpu_this_process_sees(compose_cfg, monkeypatch, name, capability, refused):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    cfg = compose_cfg("dtype=fp8")
    if refused:
        with pytest.raises(ConfigError, match=rf"dtype=fp8 but this GPU \({name}\) has no FP8"):
            resolve_auto(cfg, cuda_available=True)
    else:
        resolve_auto(cfg, cuda_available=True)


def test_gpu_requested_without_gpu_fails(compose_cfg):
    cfg = compose_cfg("cluster.accelerator=gpu")
    with pytest.raises(ConfigError, match="torch sees no GPU"):
        resolve_auto(cfg, cuda_available=False)


def test_log_ranks_may_name_ranks_a_smaller_run_lacks(compose_cfg):
    # One LOG_RANK for a sweep over world sizes: the ranks that exist log, the rest are ignored.
    for ranks in ("[0,7]", "[1]", "null"):
        cfg = compose_cfg(f"log_ranks={ranks}")
        resolve_auto(cfg, cuda_available=False)
        assert validate(cfg, world_size=2).world_size == 2


def test_dp_shard_takes_the_rest(compose_cfg):
    cfg = compose_cfg(
        "model=llama31_405b",
        "parallelism.tp=8",
        "parallelism.pp=9",
        "parallelism.vp=7",
        "parallelism.cp=2",
        "trainer.seq_len=8192",
        "trainer.global_batch_size=252",
    )
    resolve_auto(cfg, cuda_available=True)
    layout = validate(cfg, world_size=576)
    assert (layout.dp_shard, layout.dp, layout.tp * layout.pp * layout.cp) == (4, 4, 144)
