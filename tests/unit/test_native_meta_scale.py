"""Full-size Llama 3.1 models parallelized on the meta device under a fake process group at
cluster scale: every rank's shards have the planned placements and shapes, and no parameter
memory is allocated."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Shard
from torch.testing._internal.distributed.fake_pg import FakeStore
from torchao.float8.float8_linear import Float8Linear

from recipes.backends.native import pipeline
from recipes.backends.native.parallelize import parallelize
from recipes.backends.native.strategy import build_mesh
from recipes.config import resolve_auto, validate
from recipes.models.llama import Llama, num_params

GBS = "trainer.global_batch_size=288"
CASES = [
    # model, world, overrides, rank
    ("llama31_8b", 64, ("trainer.global_batch_size=128",), 0),
    ("llama31_8b", 64, ("parallelism.tp=2", "parallelism.sequence_parallel=true", GBS), 63),
    ("llama31_70b", 256, ("parallelism.tp=8", "parallelism.dp_replicate=2", GBS), 129),
    ("llama31_405b", 576, ("parallelism.tp=8", "parallelism.sequence_parallel=true", GBS), 0),
    ("llama31_405b", 576, ("parallelism.tp=8", "parallelism.sequence_parallel=true", GBS), 575),
    (
        "llama31_8b",
        64,
        ("dtype=fp8", "parallelism.tp=8", "parallelism.sequence_parallel=true", GBS),
        9,
    ),
    (
        "llama31_405b",
        576,
        (
            "parallelism.tp=8",
            "parallelism.pp=9",
            "parallelism.vp=7",
            "trainer.global_batch_size=72",
        ),
        300,
    ),
]


@pytest.fixture
def fake_world():
    def _init(world: int, rank: int):
        dist.init_process_group("fake", store=FakeStore(), rank=rank, world_size=world)

    yield _init
    if dist.is_initialized():
        dist.destroy_process_group()


@pytest.mark.parametrize("model_name, world, overrides, rank", CASES)
def test_full_size_model_shards_on_meta(
    compose_cfg, fake_world, model_name, world, overrides, rank
):
    cfg = compose_cfg(f"model={model_name}", "dtype=bf16", "trainer.seq_len=8192", *overrides)
    resolve_auto(cfg, cuda_available=True)
    layout = validate(cfg, world_size=world)
    fake_world(world, rank)
    meshes = build_mesh(layout, "cpu")
    with torch.device("meta"):
        model = Llama(cfg.model)
    pp_rank = meshes.pp.get_local_rank()
    parts = pipeline.split_model(model, layout, pp_rank) if layout.pp > 1 else [model]
    for part in parts:
        parallelize(part, meshes, layout, cfg, on_gpu=True)

    params = {n: p for part in parts for n, p in part.named_parameters()}
    assert all(isinstance(p, DTensor) and p.to_local().is_meta for p in params.values())
    if layout.pp == 1:
        assert sum(p.numel() for p in params.values()) == num_params(cfg.model)
    else:
        per_stage = cfg.model.n_layers // (layout.pp * layout.vp)
        blocks = {n.split(".")[1] for n in params if n.startswith("layers.")}
        assert len(blocks) == per_stage * layout.vp

    dp_shards = layout.dp_shard * layout.cp
    for name, p in params.items():
        dims = dict(zip(p.device_mesh.mesh_dim_names, p.placements, strict=True))
        local = p.to_local().shape
        if name.endswith(("attention.wq.weight", "feed_forward.w1.weight")) and layout.tp > 1:
            assert dims["tp"] == Shard(0)  # column parallel
            rows = p.shape[0] // layout.tp
            # FSDP2 cuts the TP shard into dp_shards chunks of ceil size, the last ones shorter.
            chunk = math.ceil(rows / dp_shards)
            index = meshes.fsdp.get_coordinate()[-1]  # this rank's FSDP shard
            assert local[0] == max(0, min(chunk, rows - index * chunk))
            assert local[1] == p.shape[1]
        if name.endswith(("attention.wo.weight", "feed_forward.w2.weight")) and layout.tp > 1:
            assert dims["tp"] == Shard(1)  # row parallel
            assert local[1] == p.shape[1] // layout.tp
        if cfg.dtype.name == "fp8" and name.endswith("attention.wq.weight"):
            module = parts[0].get_submodule(name.removesuffix(".weight").removeprefix("_orig_mod."))
            assert isinstance(module, Float8Linear)
        if layout.dp_replicate > 1:
            assert dims["hsdp_replicate"].is_replicate()  # HSDP: whole copies across replicas


@pytest.mark.parametrize(
    "on_gpu, expected", [(True, "Float8ColwiseParallel"), (False, "ColwiseParallel")]
)
def test_fp8_tp_uses_float8_styles_on_gpu_only(
    compose_cfg, fake_world, monkeypatch, on_gpu, expected
):
    from recipes.backends.native import parallelize as par

    styles = []
    real = par.parallelize_module

    def spy(module, mesh, plan):
        styles.extend(type(style).__name__ for style in (plan or {}).values())
        return real(module, mesh, plan)

    monkeypatch.setattr(par, "parallelize_module", spy)
    cfg = compose_cfg(
        "model=llama31_8b", "dtype=fp8", "parallelism.tp=8", "trainer.global_batch_size=64"
    )
    resolve_auto(cfg, cuda_available=True)
    layout = validate(cfg, world_size=64)
    fake_world(64, 0)
    with torch.device("meta"):
        model = Llama(cfg.model)
    parallelize(model, build_mesh(layout, "cpu"), layout, cfg, on_gpu=on_gpu)
    # q, k, v, w1, w3 in every block; the output head stays a plain (high-precision) Linear.
    assert styles.count(expected) == 5 * cfg.model.n_layers + (0 if on_gpu else 1)
