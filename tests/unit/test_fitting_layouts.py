"""A dry run that does not fit the GPU lists layouts that the same memory model fits."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from recipes.config import validate
from recipes.errors import LayoutError
from recipes.plan.estimate import RECOMPUTE_ORDER, TP_MAX, fitting_layouts, plan
from recipes.plan.scale import SEED_003
from recipes.train import check_command_line, run

GPUS = 576
H100_GIB = 79.6
# 405B at sequence 8192 on 576 H100: pure FSDP (parallelism=auto) does not fit.
PLANNED = (
    "model=llama31_405b",
    "dtype=bf16",
    "dry_run=true",
    f"cluster.num_gpus={GPUS}",
    "cluster.gpu_type=h100_sxm",
    "trainer.seq_len=8192",
    "trainer.global_batch_size=576",
)


def planned(compose_cfg, *overrides: str) -> dict:
    cfg = compose_cfg(*PLANNED, *overrides)
    return plan(cfg, validate(cfg, GPUS))


@pytest.mark.parametrize("backend", ["native", "megatron"])
def test_each_suggested_layout_fits_when_applied(compose_cfg, backend):
    result = planned(compose_cfg, f"backend={backend}")
    assert result["fits"] is False and result["memory_gib"]["total"] > H100_GIB
    suggestions = result["fitting_layouts"]
    assert len(suggestions) == 5
    for suggestion in suggestions:
        # The overrides, added to the same command, give a plan that fits with that memory.
        again = planned(compose_cfg, f"backend={backend}", *suggestion["overrides"].split())
        assert again["fits"] is True and again["fitting_layouts"] is None
        assert again["memory_gib"]["total"] == pytest.approx(suggestion["memory_gib"])
        layout = again["layout"]
        assert layout["world_size"] == GPUS and layout["tp"] <= TP_MAX
        if backend == "native":  # its own rule: pipeline or context parallelism, not both
            assert layout["pp"] == 1 or layout["cp"] == 1


def test_megatron_finds_seed_003_layout_first(compose_cfg):
    """Least recomputation, then fewest model-parallel ranks: on Megatron that is NVIDIA's own
    layout for 405B on 576 H100 (seed 003: TP8 PP9 CP2, sequence parallel)."""
    first = planned(compose_cfg, "backend=megatron")["fitting_layouts"][0]
    assert first["overrides"] == (
        "parallelism.tp=8 parallelism.pp=9 parallelism.cp=2 parallelism.sequence_parallel=true"
    )


def test_suggestions_are_ordered_by_recomputation_then_model_parallel_ranks(compose_cfg):
    order = []
    for suggestion in planned(compose_cfg, "backend=native")["fitting_layouts"]:
        cfg = compose_cfg(*PLANNED, *suggestion["overrides"].split())
        layout = validate(cfg, GPUS)
        order.append(
            (
                RECOMPUTE_ORDER.index(cfg.backend.activation_checkpointing),
                layout.tp * layout.pp * layout.cp,
            )
        )
    assert order == sorted(order)


def test_recomputation_is_suggested_when_nothing_fits_without_it(compose_cfg):
    # 8B at sequence 128K: nothing fits one GPU; on 8 only full recomputation makes it fit.
    assert planned_8b(compose_cfg, 1) == []
    modes = [s["overrides"] for s in planned_8b(compose_cfg, 8)]
    assert modes and all(m.endswith("backend.activation_checkpointing=full") for m in modes)


def planned_8b(compose_cfg, gpus: int) -> list[dict]:
    cfg = compose_cfg(
        "model=llama31_8b",
        "dtype=bf16",
        "dry_run=true",
        f"cluster.num_gpus={gpus}",
        "cluster.gpu_type=h100_sxm",
        "trainer.seq_len=131072",
        f"trainer.global_batch_size={gpus}",
    )
    layout = validate(cfg, gpus)
    return fitting_layouts(cfg, layout, H100_GIB)


def test_a_plan_that_fits_or_has_no_capacity_suggests_nothing(compose_cfg):
    cfg = compose_cfg("+experiment=llama31_405b_576gpu_h100_bf16", "dry_run=true")
    fits = plan(cfg, validate(cfg, GPUS))
    assert fits["fits"] is True and fits["fitting_layouts"] is None
    cfg = compose_cfg("dry_run=true", "dtype=fp32")  # no GPU named: no capacity
    cpu = plan(cfg, validate(cfg, 1))
    assert cpu["fits"] is None and cpu["fitting_layouts"] is None


def test_the_dry_run_log_names_the_fitting_layouts(tmp_path, compose_cfg, caplog):
    with caplog.at_level(logging.WARNING, logger="recipes"):
        result = run(compose_cfg(*PLANNED, f"output_dir={tmp_path}"))
    written = json.loads((Path(result["run_dir"]) / "plan.json").read_text())
    first = written["fitting_layouts"][0]["overrides"]
    assert "exceeds the h100_sxm's 79.6 GiB; layouts predicted to fit" in caplog.text
    assert first in caplog.text


def test_the_dry_run_log_says_when_no_layout_fits(tmp_path, compose_cfg, caplog):
    with caplog.at_level(logging.WARNING, logger="recipes"):
        run(
            compose_cfg(
                "model=llama31_405b",
                "dry_run=true",
                "cluster.num_gpus=8",
                "cluster.gpu_type=h100_sxm",
                f"output_dir={tmp_path}",
            )
        )
    assert "no layout of 8 GPUs is predicted to fit" in caplog.text
    assert "plan for more GPUs (cluster.num_gpus)" in caplog.text


@pytest.mark.parametrize(
    ("gpus", "dtype", "what", "added"),
    [
        (576, "", "configuration", ["+experiment=llama31_405b_576gpu_h100_bf16"]),
        (
            720,
            "dtype=fp8",
            "configuration",
            ["+experiment=llama31_405b_576gpu_h100_fp8", "trainer.global_batch_size=315"],
        ),
        (
            32,
            "",
            "proxy configuration (fewer layers)",
            ["+experiment=llama31_405b_32gpu_h100_bf16"],
        ),
    ],
)
def test_a_refused_dry_run_layout_names_the_pinned_configuration(
    tmp_path, compose_cfg, gpus, dtype, what, added
):
    # DESIGN's `recipes-train model=llama31_405b cluster.num_gpus=576 dry_run=true`: the default
    # global batch of 8 cannot be split over 576 data-parallel ranks.
    asked = [
        "model=llama31_405b",
        f"cluster.num_gpus={gpus}",
        "dry_run=true",
        *filter(None, [dtype]),
    ]
    if dtype:
        asked.append("cluster.gpu_type=h100_sxm")  # FP8 is planned only for a GPU that has it
    with pytest.raises(LayoutError, match="global_batch_size=8 is not divisible") as refused:
        run(compose_cfg(*asked, f"output_dir={tmp_path}"))
    assert str(refused.value).endswith(
        f"or plan the pinned {what} for {gpus} GPUs ({SEED_003}): add {' '.join(added)}"
    )
    planned = run(compose_cfg(*asked, *added, f"output_dir={tmp_path}"))
    assert planned["layout"]["world_size"] == gpus and planned["fits"] is True


def test_only_a_dry_run_with_planned_gpus_names_a_pinned_configuration(compose_cfg):
    with pytest.raises(LayoutError) as launched:  # processes launched: launch.sh picks for them
        check_command_line(["model=llama31_8b", "parallelism.tp=16"], 16)
    assert "pinned" not in str(launched.value)
    with pytest.raises(LayoutError) as unknown:  # the debug model has no pinned configuration
        check_command_line(["cluster.num_gpus=16", "dry_run=true", "parallelism.tp=16"], 1)
    assert str(unknown.value).endswith("use tp in {1, 2}")


def test_the_plan_states_the_pipeline_bubble_and_the_recomputed_flops(compose_cfg):
    # Seed 003 at 576 GPUs: TP8 PP9 CP2 VP7 leaves dp=4, so 252 / 4 = 63 micro-batches.
    seed = compose_cfg("+experiment=llama31_405b_576gpu_h100_bf16", "dry_run=true")
    result = plan(seed, validate(seed, GPUS))
    assert result["pipeline_bubble"] == pytest.approx(8 / (7 * 63 + 8))
    assert result["recompute_flops"] == 0.0

    # 8B, sequence 8192, per token: attention 12 L h^2 (1 + g/n + s/h), SwiGLU 18 L F h, head 6 V h.
    layers, h, s = 32, 4096, 8192
    attention = 12 * layers * h * h * (1 + 8 / 32 + s / h)
    blocks = attention + 18 * layers * 14336 * h
    total = blocks + 6 * 128256 * h
    scores = 12 * layers * h * s

    def recompute(*overrides: str) -> float:
        cfg = compose_cfg("model=llama31_8b", "dtype=bf16", "trainer.seq_len=8192", *overrides)
        return plan(cfg, validate(cfg, 1))["recompute_flops"]

    assert recompute("backend.activation_checkpointing=full") == pytest.approx(blocks / 3 / total)
    assert recompute("backend=megatron", "backend.activation_checkpointing=selective") == (
        pytest.approx(scores / 3 / total)
    )
    assert recompute("backend.activation_checkpointing=selective") == 0.0  # no matmul again
