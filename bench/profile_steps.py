"""Profile a few steps of one configuration with the torch profiler (native backend).

Trains in this process (``recipes.train.run``) under ``torch.profiler.profile``; a global
optimizer-step hook advances the profiler's schedule, so the traced steps are whole optimizer
steps after ``--warmup`` untraced ones (compile and allocator warm-up stay out). Prints the
top kernels by device time and the share of device time per kind of kernel, and writes the
Chrome trace (gzip) and the report into ``--out`` (the run folder goes to ``--runs-dir``).

    python -m bench.profile_steps --layers 8 --dtype bf16 --compile --out $OUT/prof
    python -m bench.profile_steps --model llama31_debug --seq-len 64 -- cluster.accelerator=cpu
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import shutil
import sys
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.profiler import ProfilerActivity, profile, schedule

from bench.run import add_proxy_args, check_proxy, compose, parse, use_allocator

KINDS = (
    ("attention", ("flash", "fmha", "attention", "sdpa")),
    (
        "gemm",
        ("gemm", "cutlass", "nvjet", "sm90_", "cublas", "aten::mm", "aten::addmm", "scaled_mm"),
    ),
    ("optimizer", ("adam", "multi_tensor", "foreach")),
    ("communication", ("nccl", "allreduce", "all_gather", "reduce_scatter")),
    ("memcpy/memset", ("memcpy", "memset")),
    ("triton (compiled)", ("triton",)),
)
"""Kernel-name substrings per kind, checked in order (attention first: cuDNN attention
kernels also carry sm90_); the rest counts as "other"."""


def kind_of(name: str) -> str:
    """The kind of a kernel by its name (see KINDS)."""
    lowered = name.lower()
    for kind, needles in KINDS:
        if any(n in lowered for n in needles):
            return kind
    return "other"


def device_time_by_kind(events, on_gpu: bool) -> dict[str, float]:
    """Self time (us) per kind: of GPU kernels on a GPU (an op's own device time would count its
    kernels twice), of CPU ops otherwise."""
    out: dict[str, float] = {}
    for event in events:
        if on_gpu and event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        spent = event.self_device_time_total if on_gpu else event.self_cpu_time_total
        if spent > 0:
            out[kind_of(event.key)] = out.get(kind_of(event.key), 0.0) + spent
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile_steps")
    add_proxy_args(ap)  # --warmup: untraced steps; the run has warmup + 1 + active steps
    ap.add_argument("--active", type=int, default=2, help="traced steps")
    ap.add_argument("--rows", type=int, default=25)
    ap.add_argument("--out", type=Path, default=Path("results/bench/profile"))
    ap.add_argument("--runs-dir", type=Path, default=Path("results/bench/profile-runs"))
    args, proxy = parse(ap, argv)
    if args.auto:
        ap.error("--layers auto is bench.run's; give the K it found")
    if args.active < 1 or args.warmup < 0:
        ap.error(
            f"--active {args.active} --warmup {args.warmup}: profile at least one step after "
            "zero or more untraced ones; e.g. --warmup 5 --active 2"
        )
    use_allocator(args.alloc_conf)  # before this process's first CUDA allocation reads it
    proxy = dataclasses.replace(proxy, steps=args.warmup + 1 + args.active)
    # recipes-train's checks first (its own profiler, refused below with the reason, left off).
    checked = (*proxy.extra, f"output_dir={args.runs_dir}", "profiling.enable=false")
    check_proxy(ap, dataclasses.replace(proxy, extra=checked))
    cfg = compose([*proxy.overrides(), f"output_dir={args.runs_dir}"])
    if cfg.profiling.enable:  # two torch profilers cannot run at once
        ap.error("profiling.enable=true starts recipes-train's own profiler; drop it here")
    args.out.mkdir(parents=True, exist_ok=True)

    from recipes.train import run, setup_logging

    setup_logging(0)
    on_gpu = torch.cuda.is_available() and cfg.cluster.accelerator != "cpu"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    plan = schedule(wait=args.warmup, warmup=1, active=args.active, repeat=1)
    with profile(activities=activities, schedule=plan, record_shapes=False) as prof:
        hook = register_optimizer_step_post_hook(lambda *_: prof.step())
        try:
            run(cfg)
        finally:
            hook.remove()
    attr = "self_device_time_total" if on_gpu else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=attr, row_limit=args.rows)
    by_kind = device_time_by_kind(prof.key_averages(), on_gpu)
    total = sum(by_kind.values()) or 1.0
    shares = "\n".join(
        f"{k:<18} {v / 1e3:10.1f} ms  {100 * v / total:5.1f}%" for k, v in by_kind.items()
    )
    where = "device" if on_gpu else "CPU"
    report = f"{table}\nself {where} time by kind, {args.active} traced steps:\n{shares}\n"
    print(report, flush=True)
    (args.out / "profile.txt").write_text(report)
    trace = args.out / "trace.json"
    prof.export_chrome_trace(str(trace))
    with open(trace, "rb") as src, gzip.open(f"{trace}.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    trace.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
