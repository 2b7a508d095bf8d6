"""Benchmark arithmetic: model FLOPs, peak FLOPS per device and dtype, MFU, tokens/s, time to train.

The one place these numbers live; summaries, callbacks, plans and reports all call into it.

Model FLOPs for one training sample (forward + backward, seed 003's NeMo formula), with
L layers, hidden size h, n query heads, g key/value heads ("query groups"), FFN size F,
vocabulary V and sequence length s::

    flops_per_sample = s * (attention + mlp + embedding)
    attention        = 12 * L * h^2 * (1 + g/n + s/h)      # convention "dgxc"
                     = 12 * L * h^2 * (1 + g/n + s/(2h))   # convention "causal"
    mlp              = 18 * L * F * h                      # SwiGLU: three h x F matmuls
    embedding        = 6 * V * h                           # output head (logits)
    flops_per_step   = global_batch_size * flops_per_sample

"dgxc" is seed 003's formula as published (DGX Cloud benchmarks, NeMo 24.09). "causal" halves
the quadratic score/context term because a causal mask skips half the score matrix; Megatron-LM
counts it this way since 2025. Every summary says which convention it used.

Throughput and utilisation, with step time t seconds on N devices of dense peak P FLOPS::

    tokens_per_second  = s * global_batch_size / t
    time_to_train_days = total_tokens / tokens_per_second / 86400
    tflops_per_gpu     = flops_per_step / t / N / 1e12
    mfu                = flops_per_step / t / N / P         # a fraction, not a percent

E.g. seed 003, Llama 3.1 405B FP8 on 576 H100 (GBS 252, t = 11.24 s, P = 1979 TFLOPS):
252 * 2.1715e16 / 11.24 / 576 / 1979e12 = 0.4271.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

FLOPS_CONVENTIONS = ("dgxc", "causal")
SECONDS_PER_DAY = 86400

# Dense (no 2:4 sparsity) tensor-core peak TFLOPS per device as torch sees it, from the vendor
# datasheets: NVIDIA H100 / H200 / HGX B200 / GB200 NVL72 / A100 datasheets (NVIDIA prints the
# sparse figure; dense is half of it) and AMD Instinct MI250X / MI300X datasheets. None: the
# device has no tensor-core format for that dtype. "tf32" is the column fp32 runs are measured
# against (matmuls in TF32).
PEAK_TFLOPS: dict[str, dict[str, float | None]] = {
    # Seed 003 rounds H100 SXM to 989 (BF16) and 1979 (FP8).
    "h100_sxm": {"bf16": 989.4, "fp8": 1978.9, "tf32": 494.7},
    "h100_pcie": {"bf16": 756.0, "fp8": 1513.0, "tf32": 378.0},
    "h100_nvl": {"bf16": 835.0, "fp8": 1671.0, "tf32": 418.0},
    # H200 SXM has H100 SXM's compute with more and faster memory.
    "h200": {"bf16": 989.4, "fp8": 1978.9, "tf32": 494.7},
    "b200": {"bf16": 2250.0, "fp8": 4500.0, "tf32": 1100.0},
    # NVIDIA's per-GPU GB200 NVL72 figures; some tools use B200's 2250 for GB200 as well.
    "gb200": {"bf16": 2500.0, "fp8": 5000.0, "tf32": 1250.0},
    "a100": {"bf16": 312.0, "fp8": None, "tf32": 156.0},
    # Per GCD: torch sees each of an MI250X's two dies as a device; the package is 383 BF16.
    "mi250x": {"bf16": 191.5, "fp8": None, "tf32": None},
    "mi300x": {"bf16": 1307.4, "fp8": 2614.9, "tf32": 653.7},
}

# Memory per device, in GiB: what torch reports as total_memory where known (an H100's "80 GB"
# is 81,559 MiB = 79.6 GiB, an H200's "141 GB" 143,771 MiB = 140.4 GiB), else the datasheet's
# binary GB. A100 also ships with 40 GB.
DEVICE_MEMORY_GIB: dict[str, float] = {
    "h100_sxm": 79.6,
    "h100_pcie": 79.6,
    "h100_nvl": 94,
    "h200": 140.4,
    "b200": 180,
    "gb200": 186,
    "a100": 80,
    "mi250x": 64,  # per GCD
    "mi300x": 192,
}

# torch.cuda.get_device_name() strings, matched whole and case-insensitively. Only names whose
# peak is known exactly; anything else (H200 NVL, GH200, H800, MIG slices, cpu) maps to None.
_DEVICE_NAMES: tuple[tuple[str, str], ...] = (
    (r"nvidia h100 (80gb hbm3|sxm5 80gb)", "h100_sxm"),
    (r"nvidia h100 pcie", "h100_pcie"),
    (r"nvidia h100 nvl", "h100_nvl"),
    (r"nvidia h200( 141gb hbm3e)?", "h200"),
    (r"nvidia b200", "b200"),
    (r"nvidia gb200", "gb200"),
    (r"nvidia a100(-sxm4?-(40|80)gb|-pcie-40gb| 80gb pcie)", "a100"),
    (r"amd instinct mi250x(/mi250)?", "mi250x"),
    (r"amd instinct mi300x", "mi300x"),
)

# The peak column a run's dtype is measured against.
_DTYPE_COLUMN = {"bf16": "bf16", "fp8": "fp8", "tf32": "tf32", "fp32": "tf32"}


class ModelShape(Protocol):
    """The ModelConfig fields the FLOPs formula reads."""

    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    vocab_size: int


@dataclass(frozen=True)
class Peak:
    """A dense peak TFLOPS per device and where it came from ("table" or "cluster.peak_tflops")."""

    device: str
    dtype: str
    tflops: float
    source: str


def _check_positive(**values: float) -> None:
    """Raise ValueError naming the first argument that is not > 0."""
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")


def _check_convention(convention: str) -> None:
    """Raise ValueError for a FLOPs convention other than FLOPS_CONVENTIONS."""
    if convention not in FLOPS_CONVENTIONS:
        raise ValueError(
            f"unknown FLOPs convention {convention!r}; use one of {', '.join(FLOPS_CONVENTIONS)}"
        )


def attention_flops_per_token(
    *,
    seq_len: int,
    n_layers: int,
    dim: int,
    n_heads: int,
    n_kv_heads: int,
    convention: str = "dgxc",
) -> float:
    """Training FLOPs per token of all attention blocks: 12 L h^2 (1 + g/n + s/h or s/(2h))."""
    _check_convention(convention)
    _check_positive(n_heads=n_heads, dim=dim)
    projections = 12 * n_layers * dim * dim
    scores = 12 * n_layers * dim * seq_len // (2 if convention == "causal" else 1)
    return float(projections + projections * n_kv_heads / n_heads + scores)


def mlp_flops_per_token(*, n_layers: int, dim: int, ffn_dim: int) -> float:
    """Training FLOPs per token of all SwiGLU feed-forward blocks: 18 L F h."""
    return float(18 * n_layers * ffn_dim * dim)


def embedding_flops_per_token(*, vocab_size: int, dim: int) -> float:
    """Training FLOPs per token of the output head: 6 V h."""
    return float(6 * vocab_size * dim)


def flops_per_sample(
    *,
    seq_len: int,
    n_layers: int,
    dim: int,
    n_heads: int,
    n_kv_heads: int,
    ffn_dim: int,
    vocab_size: int,
    convention: str = "dgxc",
) -> float:
    """Training (forward + backward) model FLOPs for one sample of seq_len tokens."""
    attention = attention_flops_per_token(
        seq_len=seq_len,
        n_layers=n_layers,
        dim=dim,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        convention=convention,
    )
    mlp = mlp_flops_per_token(n_layers=n_layers, dim=dim, ffn_dim=ffn_dim)
    embedding = embedding_flops_per_token(vocab_size=vocab_size, dim=dim)
    return seq_len * (attention + mlp + embedding)


def flops_per_step(
    model: ModelShape, *, seq_len: int, global_batch_size: int, convention: str = "dgxc"
) -> float:
    """Training model FLOPs for one optimizer step (one global batch) of a ModelConfig."""
    per_sample = flops_per_sample(
        seq_len=seq_len,
        n_layers=model.n_layers,
        dim=model.dim,
        n_heads=model.n_heads,
        n_kv_heads=model.n_kv_heads,
        ffn_dim=model.ffn_dim,
        vocab_size=model.vocab_size,
        convention=convention,
    )
    return global_batch_size * per_sample


def flops_per_step_by_convention(
    model: ModelShape, *, seq_len: int, global_batch_size: int
) -> dict[str, float]:
    """flops_per_step under every convention in FLOPS_CONVENTIONS, keyed by convention."""
    return {
        convention: flops_per_step(
            model, seq_len=seq_len, global_batch_size=global_batch_size, convention=convention
        )
        for convention in FLOPS_CONVENTIONS
    }


def device_key(device_name: str) -> str | None:
    """PEAK_TFLOPS key for a torch.cuda.get_device_name() string; None when not known exactly."""
    name = " ".join(device_name.split()).lower()
    if name in PEAK_TFLOPS:  # already a key, e.g. cluster.gpu_type=h100_sxm for a dry run
        return name
    for pattern, key in _DEVICE_NAMES:
        if re.fullmatch(pattern, name):
            return key
    return None


def device_name(accelerator: str) -> str:
    """The name the peak table and the baselines key on: torch's name of this process's GPU
    (``NVIDIA H100 80GB HBM3``) when ``accelerator`` is gpu, otherwise ``cpu``."""
    import torch

    return torch.cuda.get_device_name() if accelerator == "gpu" else "cpu"


def peak_for(device_name: str, dtype: str, override_tflops: float | None = None) -> Peak | None:
    """Dense peak TFLOPS per device for a run's dtype; the override wins; None when unknown."""
    if override_tflops is not None:
        _check_positive(override_tflops=override_tflops)
        return Peak(device_name, dtype, float(override_tflops), "cluster.peak_tflops")
    key = device_key(device_name)
    column = _DTYPE_COLUMN.get(dtype)
    if key is None or column is None:
        return None
    tflops = PEAK_TFLOPS[key][column]
    return None if tflops is None else Peak(key, dtype, tflops, "table")


def peak_unknown_reason(device_name: str, dtype: str) -> str:
    """Why peak_for found no peak, and how to give one, for a summary's null MFU."""
    return (
        f"no peak FLOPS for device {device_name!r} and dtype {dtype!r} in "
        "recipes.metrics.PEAK_TFLOPS; set cluster.peak_tflops=<dense TFLOPS per device> "
        "to report MFU"
    )


def tflops_per_gpu(*, flops_per_step: float, step_time_s: float, num_gpus: int) -> float:
    """Achieved model TFLOPS per device: flops_per_step / step_time_s / num_gpus / 1e12."""
    _check_positive(step_time_s=step_time_s, num_gpus=num_gpus)
    return flops_per_step / step_time_s / num_gpus / 1e12


def mfu(*, flops_per_step: float, step_time_s: float, num_gpus: int, peak_tflops: float) -> float:
    """Model FLOPs utilisation as a fraction of the dense peak (0.4271, not 42.71)."""
    _check_positive(peak_tflops=peak_tflops)
    achieved = tflops_per_gpu(
        flops_per_step=flops_per_step, step_time_s=step_time_s, num_gpus=num_gpus
    )
    return achieved / peak_tflops


def tokens_per_second(*, seq_len: int, global_batch_size: int, step_time_s: float) -> float:
    """Training throughput: seq_len * global_batch_size / step_time_s."""
    _check_positive(step_time_s=step_time_s)
    return seq_len * global_batch_size / step_time_s


def time_to_train_days(*, tokens_per_s: float, total_tokens: float = 1e12) -> float:
    """Days to train on total_tokens at tokens_per_s (seed 003: 1e12 tokens)."""
    _check_positive(tokens_per_s=tokens_per_s)
    return total_tokens / tokens_per_s / SECONDS_PER_DAY
