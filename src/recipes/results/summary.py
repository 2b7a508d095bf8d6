"""Turn step times into benchmark figures, per step and for the whole run.

All arithmetic is :mod:`recipes.metrics`; this module only decides which step times go in:
the last step (as seed 003's NeMo recipe reads ``train_step_timing``) and the steady-state
steps after ``trainer.timing_warmup_steps`` (mean and spread).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from recipes import metrics
from recipes.metrics import FLOPS_CONVENTIONS, Peak

PRIMARY_CONVENTION = "dgxc"
"""The FLOPs convention of the headline figures (seed 003's); the others are reported beside."""


@dataclass(frozen=True)
class RunShape:
    """The fixed facts of a run that turn a step time into throughput, TFLOPS and MFU."""

    seq_len: int
    global_batch_size: int
    num_gpus: int
    flops_per_step: dict[str, float]
    peak: Peak | None
    peak_bf16: Peak | None
    peak_note: str | None

    def figures(self, step_time_s: float) -> dict[str, float | None]:
        """Throughput, TFLOPS per GPU and MFU for one step time."""
        tokens = metrics.tokens_per_second(
            seq_len=self.seq_len, global_batch_size=self.global_batch_size, step_time_s=step_time_s
        )
        out: dict[str, float | None] = {
            "tokens_per_s": tokens,
            "tokens_per_s_per_gpu": tokens / self.num_gpus,
        }
        for convention in FLOPS_CONVENTIONS:
            suffix = "" if convention == PRIMARY_CONVENTION else f"_{convention}"
            flops = self.flops_per_step[convention]
            out[f"tflops_per_gpu{suffix}"] = metrics.tflops_per_gpu(
                flops_per_step=flops, step_time_s=step_time_s, num_gpus=self.num_gpus
            )
            out[f"mfu{suffix}"] = self._mfu(flops, step_time_s, self.peak)
        if self.peak_bf16 is not None and self.peak_bf16 != self.peak:
            out["mfu_vs_bf16_peak"] = self._mfu(
                self.flops_per_step[PRIMARY_CONVENTION], step_time_s, self.peak_bf16
            )
        return out

    def _mfu(self, flops: float, step_time_s: float, peak: Peak | None) -> float | None:
        if peak is None:
            return None
        return metrics.mfu(
            flops_per_step=flops,
            step_time_s=step_time_s,
            num_gpus=self.num_gpus,
            peak_tflops=peak.tflops,
        )


def last_timed(records: list[dict]) -> dict:
    """The last step not run under the torch profiler (marked "profiled", slower), whose timings
    are the run's headline; the last step when every step was profiled."""
    return ([r for r in records if not r.get("profiled")] or records)[-1]


def summarize(records: list[dict], shape: RunShape, *, timing_warmup_steps: int) -> dict:
    """Summary of a finished (or stopped) run from its per-step records."""
    if not records:
        return {"steps": 0}
    # Steps run under the torch profiler (marked "profiled") are slower: the figures leave them
    # out, unless every step was profiled.
    last = last_timed(records)
    unprofiled = [r for r in records[timing_warmup_steps:] if not r.get("profiled")]
    steady = [r["step_time_s"] for r in unprofiled] or [last["step_time_s"]]
    mean = statistics.fmean(steady)
    figures = shape.figures(last["step_time_s"])
    summary = {
        "steps": len(records),
        "step_time_s_last": last["step_time_s"],
        "step_time_s_mean": mean,
        "step_time_s_std": statistics.stdev(steady) if len(steady) > 1 else 0.0,
        "step_time_s_min": min(steady),
        "step_time_s_max": max(steady),
        "steady_state_steps": len(steady),
        "profiled_steps": [r["step"] for r in records if r.get("profiled")],
        **figures,
        "tokens_per_s_mean": shape.figures(mean)["tokens_per_s"],
        "mfu_mean": shape.figures(mean)["mfu"],
        "time_to_train_1t_days": metrics.time_to_train_days(tokens_per_s=figures["tokens_per_s"]),
        "flops_convention": PRIMARY_CONVENTION,
        "model_flops_per_step": dict(shape.flops_per_step),
        "peak": None if shape.peak is None else vars(shape.peak),
        "peak_note": shape.peak_note,
        "loss_first": records[0]["loss"],
        "loss_last": records[-1]["loss"],
        "grad_norm_last": records[-1]["grad_norm"],
        "memory_gib_peak": max(r["memory_gib"] for r in records),
    }
    return summary


def is_finite(*values: float) -> bool:
    """True when no value is NaN or infinite."""
    return all(math.isfinite(v) for v in values)
