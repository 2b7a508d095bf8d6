"""Single-process checks of the native backend's parallelize steps and validation."""

from __future__ import annotations

import pytest
import torch
from torch.backends import cuda
from torch.nn.attention import SDPBackend
from torchao.float8.float8_linear import Float8Linear

from recipes.backends.native import NativeBackend
from recipes.backends.native.module import cross_entropy
from recipes.backends.native.parallelize import (
    apply_ac,
    apply_compile,
    apply_float8,
    parallelize,
)
from recipes.config import resolve_auto, validate
from recipes.errors import ConfigError
from recipes.models.llama import Llama, set_sdpa_priority
from recipes.optim import ADAMW_IMPLS, build_optimizer


def test_float8_skips_the_output_head_and_dims_not_divisible_by_16(compose_cfg):
    cfg = compose_cfg(
        "dtype=fp8", "model.dim=96", "model.n_heads=4", "model.n_kv_heads=2", "model.ffn_dim=200"
    )
    model = Llama(cfg.model)
    apply_float8(model, cfg.dtype, fsdp=False)
    kinds = {name: type(m) for name, m in model.named_modules()}
    assert kinds["layers.0.attention.wq"] is Float8Linear  # 96 x 96
    assert kinds["layers.0.attention.wk"] is Float8Linear  # 96 x 48
    assert kinds["layers.0.feed_forward.w1"] is torch.nn.Linear  # 200 is not a multiple of 16
    assert kinds["output"] is torch.nn.Linear


@pytest.mark.parametrize("dtype, emulated", [("fp8_rowwise", True), ("fp8", False)])
def test_compiled_rowwise_fp8_rounds_casts_as_eager(compose_cfg, dtype, emulated):
    from torch._inductor import config as inductor_config

    cfg = compose_cfg(f"dtype={dtype}", "backend.compile=true")
    resolve_auto(cfg, cuda_available=False)
    with inductor_config.patch(emulate_precision_casts=False):  # restored after
        parallelize(Llama(cfg.model), None, validate(cfg, world_size=1), cfg, on_gpu=False)
        assert inductor_config.emulate_precision_casts is emulated


def test_ac_and_compile_keep_state_dict_keys(compose_cfg):
    cfg = compose_cfg()
    model = Llama(cfg.model)
    keys = set(model.state_dict())
    apply_ac(model, "selective")
    apply_compile(model)
    assert set(model.state_dict()) == keys


def test_attention_tries_the_configured_kernels_in_order(compose_cfg, monkeypatch):
    model = Llama(compose_cfg().model)
    set_sdpa_priority(model, ["flash", "math"])
    seen = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):  # what SDPA's kernel choice sees at the call
        seen.append((torch._C._get_sdp_priority_order()[:2], cuda.cudnn_sdp_enabled()))
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    before = torch._C._get_sdp_priority_order()
    model(torch.randint(0, 2048, (1, 16)))
    flash, math = int(SDPBackend.FLASH_ATTENTION), int(SDPBackend.MATH)
    assert seen == [([flash, math], False)] * model.cfg.n_layers  # cudnn not in the list: off
    assert torch._C._get_sdp_priority_order() == before  # restored after each call
    set_sdpa_priority(model, ["cudnn", "flash", "efficient", "math"])  # the default order
    seen.clear()
    model(torch.randint(0, 2048, (1, 16)))
    assert seen[0] == ([int(SDPBackend.CUDNN_ATTENTION), flash], True)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["dtype=fp8", "dtype.fp8_recipe=delayed"],
            "dtype.fp8_recipe='delayed' is not available on backend=native",
        ),
        (["dtype=fp8_rowwise", "dtype.fp8_fsdp_all_gather=true"], "needs fp8_recipe=tensorwise"),
        (["backend.activation_checkpointing=some"], "backend.activation_checkpointing='some'"),
        (["backend.optimizer_impl=apex"], r"backend.optimizer_impl='apex' .*\['fused', "),
        (["parallelism.pp=2", "parallelism.cp=2"], "pp=2 with cp=2 is not supported"),
        (["backend.sdpa_backends=[fa3,math]"], r"names \['fa3'\]; use kernels from \['cudnn'"),
        (["backend.sdpa_backends=[flash,flash,math]"], "names a kernel twice"),
        (["backend.sdpa_backends=[cudnn,flash]"], r"lacks math.*\['cudnn', 'flash', 'math'\]"),
    ],
)
def test_native_refuses_what_it_cannot_run(compose_cfg, overrides, message):
    cfg = compose_cfg(*overrides)
    resolve_auto(cfg, cuda_available=False)
    layout = validate(cfg, world_size=4 if "parallelism.pp=2" in overrides else 1)
    with pytest.raises(ConfigError, match=message):
        NativeBackend().validate(cfg, layout)


@pytest.mark.parametrize(
    "kernels, accelerator, refused",
    [
        ("[math]", "cpu", True),  # math has no ring-attention handler
        ("[efficient,math]", "cpu", True),  # CPU has no efficient kernel: math would run
        ("[flash,math]", "cpu", False),
        ("[efficient,math]", "gpu", False),
        ("[math]", "gpu", True),
    ],
)
def test_context_parallel_needs_a_ring_attention_kernel(compose_cfg, kernels, accelerator, refused):
    cfg = compose_cfg("parallelism.cp=2", f"backend.sdpa_backends={kernels}")
    cfg.cluster.accelerator = accelerator
    resolve_auto(cfg, cuda_available=accelerator == "gpu")
    layout = validate(cfg, world_size=2)
    if not refused:
        NativeBackend().validate(cfg, layout)
        return
    with pytest.raises(ConfigError, match=r"parallelism.cp=2 runs ring attention, .* use backend"):
        NativeBackend().validate(cfg, layout)


@pytest.mark.parametrize(
    "dtype, world, precision",
    [("fp32", 1, "32-true"), ("bf16", 1, "bf16-mixed"), ("fp8", 1, "32-true")],
)
def test_cpu_precision(compose_cfg, dtype, world, precision):
    cfg = compose_cfg(f"dtype={dtype}")
    resolve_auto(cfg, cuda_available=False)
    layout = validate(cfg, world_size=world)
    assert NativeBackend().trainer_kwargs(cfg, layout)["precision"] == precision


@pytest.mark.parametrize(
    "dtype, world, precision",
    [
        ("fp32", 1, "32-true"),
        ("bf16", 1, "bf16-mixed"),
        ("fp8", 1, "bf16-mixed"),
        ("bf16", 2, "32-true"),
        ("fp8", 2, "32-true"),
    ],
)
def test_gpu_precision_autocast_without_fsdp_mixed_policy_with_it(
    compose_cfg, dtype, world, precision
):
    # On GPU a sharded run takes bf16 from FSDP's MixedPrecisionPolicy, not from autocast.
    cfg = compose_cfg(f"dtype={dtype}")
    resolve_auto(cfg, cuda_available=True)
    layout = validate(cfg, world_size=world)
    before = torch.get_float32_matmul_precision()
    try:
        assert NativeBackend().trainer_kwargs(cfg, layout)["precision"] == precision
    finally:
        torch.set_float32_matmul_precision(before)  # the GPU path allows TF32 process-wide


def test_adamw_kernels_make_the_same_update(compose_cfg):
    """fused, foreach and for_loop are one AdamW: three steps from the same weights and
    gradients end at the same weights."""
    cfg = compose_cfg()
    torch.manual_seed(0)
    start = [torch.randn(64, 32), torch.randn(32)]
    grads = [[torch.randn_like(w) for w in start] for _ in range(3)]
    ends = {}
    for impl in ADAMW_IMPLS:
        params = [torch.nn.Parameter(w.clone()) for w in start]
        optimizer, schedule = build_optimizer(params, cfg.trainer, impl)
        assert (optimizer.defaults["fused"], optimizer.defaults["foreach"]) == (
            impl == "fused",
            impl == "foreach",
        )
        for step_grads in grads:
            for param, grad in zip(params, step_grads, strict=True):
                param.grad = grad.clone()
            optimizer.step()
            schedule.step()
        ends[impl] = [p.detach() for p in params]
    for impl in ("fused", "for_loop"):
        for got, want in zip(ends[impl], ends["foreach"], strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert not torch.equal(ends["fused"][0], start[0])


def test_compiled_loss_equals_eager_in_value_and_gradient():
    torch.manual_seed(0)
    logits = torch.randn(2, 16, 512, dtype=torch.bfloat16, requires_grad=True)
    labels = torch.randint(0, 512, (2, 16))
    eager = cross_entropy(logits, labels)
    (eager_grad,) = torch.autograd.grad(eager, logits)
    compiled = torch.compile(cross_entropy, fullgraph=True)(logits, labels)
    (compiled_grad,) = torch.autograd.grad(compiled, logits)
    assert compiled.dtype == torch.float32
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(compiled_grad, eager_grad)


@pytest.mark.parametrize("vp", [1, 2])
def test_sharded_init_draws_each_pipeline_stage_apart(compose_cfg, monkeypatch, vp):
    """backend.init=sharded: every stage draws its own shards after the build on meta; with one
    seed for all, stages without the embedding (the middle ones) got the same weights."""
    from types import SimpleNamespace

    from recipes.backends.native import module as native_module

    cfg = compose_cfg(
        "backend.init=sharded", "model.n_layers=8", "parallelism.pp=4", f"parallelism.vp={vp}"
    )
    resolve_auto(cfg, cuda_available=False)
    layout = validate(cfg, world_size=4)
    monkeypatch.setattr(native_module.pipeline, "build_schedule", lambda *a, **k: None)
    blocks = {}
    for pp_rank in range(4):
        pp_mesh = SimpleNamespace(get_local_rank=lambda r=pp_rank: r)
        meshes = SimpleNamespace(pp=pp_mesh, world=SimpleNamespace(device_type="cpu"))
        fake = property(lambda _, m=meshes: m)
        monkeypatch.setattr(native_module.NativeLlamaModule, "meshes", fake)
        module = native_module.NativeLlamaModule(cfg, layout)
        module.configure_model()
        for part in module.parts:
            blocks |= {int(i): block.attention.wq.weight for i, block in part.layers.items()}
    assert sorted(blocks) == list(range(8))
    for i in range(8):
        for j in range(i):
            assert not torch.equal(blocks[i], blocks[j]), (i, j)
