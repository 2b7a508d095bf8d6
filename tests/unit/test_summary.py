"""Summary arithmetic: last-step figures as seed 003, steady-state mean and spread beside them."""

from __future__ import annotations

import pytest

from recipes.metrics import Peak
from recipes.results.summary import RunShape, summarize

H100_FP8 = Peak("h100_sxm", "fp8", 1979.0, "table")
H100_BF16 = Peak("h100_sxm", "bf16", 989.0, "table")


def seed003_shape(peak=H100_FP8, peak_bf16=H100_BF16) -> RunShape:
    """Seed 003's 405B FP8 run on 576 H100: GBS 252, seq 8192, 2.17E16 FLOPs per sample."""
    return RunShape(
        seq_len=8192,
        global_batch_size=252,
        num_gpus=576,
        flops_per_step={"dgxc": 252 * 2.17e16, "causal": 252 * 2.0e16},
        peak=peak,
        peak_bf16=peak_bf16,
        peak_note=None,
    )


def records(times: list[float]) -> list[dict]:
    return [
        {
            "step": i + 1,
            "step_time_s": t,
            "loss": 10.0 - i,
            "grad_norm": 1.0,
            "memory_gib": 70.0 + i,
        }
        for i, t in enumerate(times)
    ]


def test_last_step_drives_headline_figures_like_seed_003():
    summary = summarize(records([30.0, 12.0, 11.0, 11.24]), seed003_shape(), timing_warmup_steps=1)
    assert summary["step_time_s_last"] == 11.24
    assert round(summary["tokens_per_s"]) == round(8192 * 252 / 11.24)
    assert summary["mfu"] == pytest.approx(252 * 2.17e16 / 11.24 / 576 / 1979e12)
    assert summary["mfu_vs_bf16_peak"] == pytest.approx(summary["mfu"] * 1979 / 989)
    assert summary["mfu_causal"] < summary["mfu"]
    assert summary["time_to_train_1t_days"] == pytest.approx(1e12 / summary["tokens_per_s"] / 86400)
    assert summary["memory_gib_peak"] == 73.0
    assert (summary["loss_first"], summary["loss_last"]) == (10.0, 7.0)


def test_steady_state_leaves_out_the_timing_warmup_steps():
    summary = summarize(records([30.0, 12.0, 11.0, 13.0]), seed003_shape(), timing_warmup_steps=1)
    assert summary["steady_state_steps"] == 3
    assert summary["step_time_s_mean"] == pytest.approx(12.0)
    assert summary["step_time_s_std"] == pytest.approx(1.0)
    assert (summary["step_time_s_min"], summary["step_time_s_max"]) == (11.0, 13.0)
    assert summary["tokens_per_s_mean"] == pytest.approx(8192 * 252 / 12.0)


def test_unknown_peak_reports_null_mfu_with_the_reason():
    shape = RunShape(
        seq_len=256,
        global_batch_size=8,
        num_gpus=1,
        flops_per_step={"dgxc": 1e12, "causal": 9e11},
        peak=None,
        peak_bf16=None,
        peak_note="no peak FLOPS for device 'cpu'",
    )
    summary = summarize(records([1.0, 0.5, 0.5]), shape, timing_warmup_steps=1)
    assert summary["mfu"] is None and summary["mfu_causal"] is None
    assert summary["peak_note"] == "no peak FLOPS for device 'cpu'"
    assert summary["tflops_per_gpu"] == pytest.approx(2.0)
    assert "mfu_vs_bf16_peak" not in summary
