"""Benchmark arithmetic in recipes.metrics, checked against seed 003's worked figures and tables."""

from pathlib import Path

import pytest
import yaml

from recipes import metrics
from recipes.config import ModelConfig

# Seed 003's inputs for Llama 3.1 405B, including its 16 query groups (the real model has 8).
SEED_405B = dict(
    seq_len=8192,
    n_layers=126,
    dim=16384,
    n_heads=128,
    n_kv_heads=16,
    ffn_dim=53248,
    vocab_size=128256,
)
SEED_H100_PEAK = {"bf16": 989.0, "fp8": 1979.0}

# Seed 003's expected-performance tables, as the workload folder ships them.
BASELINES = Path(__file__).resolve().parents[2] / "recipes" / "llama31_405b" / "baselines.yaml"
TABLE_ROWS = yaml.safe_load(BASELINES.read_text())["rows"]


def seed_405b_flops() -> float:
    """flops_per_sample with seed 003's own 405B inputs."""
    return metrics.flops_per_sample(**SEED_405B)


def test_seed_intermediate_terms_exact():
    attention = metrics.attention_flops_per_token(
        seq_len=8192, n_layers=126, dim=16384, n_heads=128, n_kv_heads=16
    )
    assert attention == 659_545_915_392
    assert metrics.mlp_flops_per_token(n_layers=126, dim=16384, ffn_dim=53248) == 1_978_637_746_176
    assert metrics.embedding_flops_per_token(vocab_size=128256, dim=16384) == 12_608_077_824


def test_seed_flops_per_sample_rounds_to_2_17e16():
    assert float(f"{seed_405b_flops():.2e}") == 2.17e16


def test_seed_mfu_fp8_576_gpus():
    value = metrics.mfu(
        flops_per_step=252 * seed_405b_flops(), step_time_s=11.24, num_gpus=576, peak_tflops=1979
    )
    assert round(value, 4) == 0.4271


def test_seed_mfu_printed_with_rounded_flops_is_slightly_lower():
    # The seed prints 2.17E+16 but its 42.71% comes from the unrounded 2.1715E16.
    value = metrics.mfu(
        flops_per_step=252 * 2.17e16, step_time_s=11.24, num_gpus=576, peak_tflops=1979
    )
    assert round(value, 4) == 0.4268


def test_seed_tokens_per_second():
    tps = metrics.tokens_per_second(seq_len=8192, global_batch_size=252, step_time_s=12.84)
    assert int(round(tps)) == 160778


def test_seed_time_to_train():
    assert round(metrics.time_to_train_days(tokens_per_s=160778), 2) == 71.99
    assert metrics.time_to_train_days(tokens_per_s=1e12 / 86400, total_tokens=2e12) == 2.0


def test_llama31_405b_real_kv_heads():
    inputs = {**SEED_405B, "n_kv_heads": 8}
    attention = 12 * 126 * 16384**2 + 12 * 126 * 16384**2 * 8 // 128 + 12 * 126 * 16384 * 8192
    by_hand = 8192 * (attention + 18 * 126 * 53248 * 16384 + 6 * 128256 * 16384)
    value = metrics.flops_per_sample(**inputs)
    assert value == pytest.approx(by_hand, rel=1e-12)
    assert float(f"{value:.2e}") == 2.15e16


def test_causal_convention_halves_score_term():
    dgxc = metrics.flops_per_sample(**SEED_405B)
    causal = metrics.flops_per_sample(**SEED_405B, convention="causal")
    assert causal < dgxc
    assert dgxc - causal == pytest.approx(8192 * 6 * 126 * 16384 * 8192, rel=1e-12)


def test_flops_per_step_reads_model_config():
    model = ModelConfig(
        name="llama31_405b", dim=16384, n_layers=126, n_heads=128, n_kv_heads=16, ffn_dim=53248
    )
    value = metrics.flops_per_step(model, seq_len=8192, global_batch_size=252)
    assert value == pytest.approx(252 * seed_405b_flops(), rel=1e-15)


def test_unknown_convention_is_rejected():
    with pytest.raises(ValueError, match=r"'megatron'.*dgxc, causal"):
        metrics.flops_per_sample(**SEED_405B, convention="megatron")


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: metrics.tokens_per_second(seq_len=1, global_batch_size=1, step_time_s=0), "step"),
        (lambda: metrics.mfu(flops_per_step=1, step_time_s=0, num_gpus=1, peak_tflops=1), "step"),
        (lambda: metrics.mfu(flops_per_step=1, step_time_s=1, num_gpus=1, peak_tflops=0), "peak"),
        (lambda: metrics.tflops_per_gpu(flops_per_step=1, step_time_s=1, num_gpus=0), "num_gpus"),
        (lambda: metrics.time_to_train_days(tokens_per_s=0), "tokens_per_s"),
        (lambda: metrics.peak_for("cpu", "fp32", override_tflops=0), "override_tflops"),
    ],
)
def test_zero_divisors_are_rejected(call, argument):
    with pytest.raises(ValueError, match=argument):
        call()


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("NVIDIA H100 80GB HBM3", "h100_sxm"),
        ("NVIDIA H100 PCIe", "h100_pcie"),
        ("NVIDIA H100 NVL", "h100_nvl"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA B200", "b200"),
        ("NVIDIA GB200", "gb200"),
        ("NVIDIA A100-SXM4-80GB", "a100"),
        ("NVIDIA A100 80GB PCIe", "a100"),
        ("AMD Instinct MI250X", "mi250x"),
        ("AMD Instinct MI250X/MI250", "mi250x"),
        ("AMD Instinct MI300X", "mi300x"),
        ("NVIDIA H200 NVL", None),
        ("NVIDIA GH200 480GB", None),
        ("NVIDIA H100 80GB HBM3 MIG 1g.10gb", None),
        ("NVIDIA GeForce RTX 4090", None),
        ("cpu", None),
    ],
)
def test_device_key(name, key):
    assert metrics.device_key(name) == key


def test_peak_table_lookups():
    h100 = metrics.peak_for("NVIDIA H100 80GB HBM3", "fp8")
    assert h100 == metrics.Peak("h100_sxm", "fp8", 1978.9, "table")
    assert metrics.peak_for("NVIDIA H100 80GB HBM3", "bf16").tflops == 989.4
    assert metrics.peak_for("AMD Instinct MI250X", "bf16").tflops == 191.5
    assert metrics.peak_for("NVIDIA GB200", "bf16").tflops == 2500.0


def test_fp32_runs_use_tf32_peak():
    assert metrics.peak_for("NVIDIA A100-SXM4-80GB", "fp32").tflops == 156.0


def test_missing_peaks_are_none():
    assert metrics.peak_for("NVIDIA A100-SXM4-80GB", "fp8") is None
    assert metrics.peak_for("AMD Instinct MI250X", "fp32") is None
    assert metrics.peak_for("cpu", "fp32") is None
    assert metrics.peak_for("NVIDIA H100 80GB HBM3", "fp16") is None


def test_override_wins():
    peak = metrics.peak_for("NVIDIA H100 80GB HBM3", "bf16", override_tflops=900)
    assert peak == metrics.Peak("NVIDIA H100 80GB HBM3", "bf16", 900.0, "cluster.peak_tflops")
    assert metrics.peak_for("cpu", "fp32", 1.5).source == "cluster.peak_tflops"


def test_peak_unknown_reason_names_device_dtype_and_fix():
    reason = metrics.peak_unknown_reason("cpu", "fp32")
    assert "'cpu'" in reason and "'fp32'" in reason
    assert "cluster.peak_tflops=" in reason


def test_peak_table_is_complete():
    for key, row in metrics.PEAK_TFLOPS.items():
        assert set(row) == {"bf16", "fp8", "tf32"}, key
        assert row["bf16"] is not None and row["bf16"] > 0, key


def test_seed_bf16_576_gpu_row():
    tps = metrics.tokens_per_second(seq_len=8192, global_batch_size=252, step_time_s=17.20)
    assert tps == pytest.approx(120022, abs=1)
    value = metrics.mfu(
        flops_per_step=252 * 2.17e16, step_time_s=17.20, num_gpus=576, peak_tflops=989
    )
    assert 100 * value == pytest.approx(55.78, abs=0.05)


@pytest.mark.parametrize("row", TABLE_ROWS, ids=lambda r: f"{r['dtype']}-{r['num_gpus']}")
def test_seed_table_row(row):
    dtype, gpus, layers, gbs = row["dtype"], row["num_gpus"], row["layers"], row["gbs"]
    step_s, tps, days = row["step_time_s"], row["tokens_per_s"], row.get("time_to_train_1t_days")
    assert row.get("proxy", False) == (gpus < 576)
    # The table's step times are rounded to 10 ms, its tokens/s and MFU are not.
    got_tps = metrics.tokens_per_second(seq_len=8192, global_batch_size=gbs, step_time_s=step_s)
    assert got_tps == pytest.approx(tps, rel=1e-3)
    flops = gbs * metrics.flops_per_sample(**{**SEED_405B, "n_layers": layers})
    got_mfu = metrics.mfu(
        flops_per_step=flops, step_time_s=step_s, num_gpus=gpus, peak_tflops=SEED_H100_PEAK[dtype]
    )
    assert got_mfu == pytest.approx(row["mfu"], abs=0.001)
    if days is not None:
        assert metrics.time_to_train_days(tokens_per_s=tps) == pytest.approx(days, abs=0.005)
