"""Benchmark one configuration of this project for N steps and print one block of figures.

It runs ``recipes-train`` (``python -m recipes.train``) in a subprocess with the Hydra overrides
of a :class:`Proxy` (issue 6's proxy by default: Llama 3.1 8B layer shapes at full width,
seq 8192, micro batch 1, K layers), then reads the run folder (``summary.json``,
``metrics.jsonl``, ``manifest.json``) and prints step time (median and mean of the steady-state
steps), tokens/s, TFLOPS/GPU and MFU under both FLOPs conventions, peak memory, the machine's
versions and the exact command. Figures at a step time come from
:class:`recipes.results.summary.RunShape`, the code the run's own summary uses.

    python -m bench.run --layers 8 --dtype bf16 --compile
    python -m bench.run --layers auto --dtype fp8 --compile --json fp8.json
    python -m bench.run --model llama31_debug --seq-len 64 --steps 3 -- cluster.accelerator=cpu

``--layers auto`` takes the largest K whose dry-run memory plan
(:func:`recipes.plan.estimate.memory_per_rank`) fits in ``--fit-fraction`` of the GPU's memory,
runs it, and on an out-of-memory failure retries with K-1 (at most ``--max-tries`` runs).

Every run gets ``PYTORCH_ALLOC_CONF=--alloc-conf`` (default ``expandable_segments:True``, what
``launch.sh`` and torchtitan's launcher set; ``--alloc-conf ''`` keeps the environment's).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from recipes import metrics
from recipes.config import compose
from recipes.launch import ALLOC_CONF, ALLOC_VARS
from recipes.metrics import Peak
from recipes.results.summary import RunShape

GIB = 1024**3
OOM_MARKERS = ("OutOfMemoryError", "CUDA out of memory", "HIP out of memory")


@dataclass(frozen=True)
class Proxy:
    """One benchmark configuration, as the flags of ``bench.run`` name it."""

    model: str = "llama31_8b"
    layers: int | None = None
    """``model.n_layers``; None keeps the model's own (not a proxy then)."""
    seq_len: int = 8192
    micro_batch: int = 1
    global_batch: int = 1
    dtype: str = "bf16"
    """A ``conf/dtype`` option: bf16, fp8, fp8_rowwise, fp32, ..."""
    compile: bool = False
    backend: str = "native"
    ac: str = "none"
    steps: int = 20
    warmup: int = 5
    """Leading steps left out of the steady-state figures (compile happens in step 1)."""
    seed: int = 1234
    extra: tuple[str, ...] = ()
    """More Hydra overrides, passed through last (they win)."""

    def overrides(self) -> list[str]:
        """The Hydra overrides of this configuration, without ``output_dir``."""
        if self.compile and self.backend != "native":
            raise ValueError("--compile is a backend=native knob (backend.compile)")
        out = [
            f"model={self.model}",
            f"dtype={self.dtype}",
            f"backend={self.backend}",
            f"trainer.seq_len={self.seq_len}",
            f"trainer.micro_batch_size={self.micro_batch}",
            f"trainer.global_batch_size={self.global_batch}",
            f"trainer.max_steps={self.steps}",
            f"trainer.timing_warmup_steps={self.warmup}",
            f"backend.activation_checkpointing={self.ac}",
            f"seed={self.seed}",
        ]
        if self.backend == "native":
            out.append(f"backend.compile={str(self.compile).lower()}")
        if self.layers is not None:
            out += [f"model.n_layers={self.layers}", "proxy=true"]
        return out + list(self.extra)

    def label(self) -> str:
        """Short name for run folders and files, e.g. ``llama31_8b-L8-bf16-compile-native``."""
        layers = f"L{self.layers}" if self.layers is not None else "full"
        mode = "compile" if self.compile else "eager"
        return f"{self.model}-{layers}-{self.dtype}-{mode}-{self.backend}"


def command(proxy: Proxy, output_dir: Path) -> list[str]:
    """The exact ``recipes-train`` command line of one run."""
    return [
        sys.executable,
        "-m",
        "recipes.train",
        *proxy.overrides(),
        f"output_dir={output_dir}",
    ]


def stream(cmd: list[str], *, log: Path | None = None, echo: bool = True, env=None) -> tuple:
    """Run ``cmd``, echoing its output as it comes; return (exit code, output, seconds)."""
    start = time.perf_counter()
    lines: list[str] = []
    sink = open(log, "w") if log else None  # noqa: SIM115 - closed below, after the stream
    try:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=env,
        )
        for line in proc.stdout:
            lines.append(line)
            if echo:
                print(line, end="", flush=True)
            if sink:
                sink.write(line)
        code = proc.wait()
    finally:
        if sink:
            sink.close()
    return code, "".join(lines), time.perf_counter() - start


def load_run(output_dir: Path) -> dict | None:
    """summary, per-step records and manifest of the one run folder in ``output_dir``."""
    folders = [p for p in output_dir.iterdir() if (p / "manifest.json").is_file()]
    if len(folders) != 1:
        return None
    run_dir = folders[0]
    summary_path = run_dir / "summary.json"
    metrics_path = run_dir / "metrics.jsonl"
    return {
        "run_dir": str(run_dir),
        "summary": json.loads(summary_path.read_text()) if summary_path.is_file() else None,
        "records": [json.loads(x) for x in metrics_path.read_text().splitlines()]
        if metrics_path.is_file()
        else [],
        "manifest": json.loads((run_dir / "manifest.json").read_text()),
    }


def run_shape(summary: dict, manifest: dict) -> RunShape:
    """The run's RunShape rebuilt from its summary, as ``recipes.train.run_shape`` built it."""
    device = manifest["accelerator"]["device_name"]
    return RunShape(
        seq_len=summary["seq_len"],
        global_batch_size=summary["global_batch_size"],
        num_gpus=summary["num_gpus"],
        flops_per_step=summary["model_flops_per_step"],
        peak=Peak(**summary["peak"]) if summary["peak"] else None,
        peak_bf16=metrics.peak_for(device, "bf16") if summary["dtype"] == "fp8" else None,
        peak_note=summary["peak_note"],
    )


def steady_step_times(records: list[dict], warmup: int, key: str = "step_time_s") -> list[float]:
    """Step (or ``loop_time_s``) times after the timing warm-up, the summary's steps."""
    return [r[key] for r in records[warmup:]] or [records[-1][key]]


def time_stats(times: list[float]) -> dict:
    """Median, mean, spread of steady-state times."""
    return {
        "median": statistics.median(times),
        "mean": statistics.fmean(times),
        "std": statistics.stdev(times) if len(times) > 1 else 0.0,
        "min": min(times),
        "max": max(times),
    }


def machine(manifest: dict) -> dict:
    """The versions every figure is recorded with, from the run's manifest."""
    versions, acc, gpu = manifest["versions"], manifest["accelerator"], manifest["gpu"]
    return {
        "device": acc["device_name"],
        "device_count": acc["device_count"],
        "torch": versions["torch"],
        "cuda": acc["cuda"],
        "hip": acc["hip"],
        "driver": gpu["driver"],
        "nccl": acc.get("nccl"),
        "python": versions["python"],
        "torchao": versions.get("torchao"),
        "lightning": versions.get("lightning"),
        "megatron_core": versions.get("megatron-core"),
        "git_sha": manifest["git_sha"],
        "alloc_conf": allocator_setting(manifest["env"]),
    }


def allocator_setting(env: dict) -> str | None:
    """The caching-allocator setting a process ran with (PYTORCH_ALLOC_CONF wins)."""
    return next((env[name] for name in ALLOC_VARS if env.get(name)), None)


def use_allocator(setting: str) -> None:
    """Give every run this process starts ``PYTORCH_ALLOC_CONF=setting`` ('' leaves it)."""
    if setting:
        os.environ["PYTORCH_ALLOC_CONF"] = setting


def record(proxy: Proxy, cmd: list[str], run: dict, wall_s: float) -> dict:
    """The raw benchmark record: configuration, command, machine, figures, step times."""
    summary, records, manifest = run["summary"], run["records"], run["manifest"]
    shape = run_shape(summary, manifest)
    steady = steady_step_times(records, proxy.warmup)
    step = time_stats(steady)
    loop = time_stats(steady_step_times(records, proxy.warmup, "loop_time_s"))
    pcts = [r["memory_pct"] for r in records if r["memory_pct"] is not None]
    return {
        "proxy": dataclasses.asdict(proxy),
        "command": cmd,
        "command_line": shlex.join(cmd),
        "machine": machine(manifest),
        "valid": summary["valid"],
        "invalid_reason": summary["invalid_reason"],
        "steps": len(records),
        "steady_state_steps": len(steady),
        "step_time_s": step,
        "loop_time_s": loop,
        "at_median": shape.figures(step["median"]),
        "at_mean": shape.figures(step["mean"]),
        "at_loop_median": shape.figures(loop["median"]),
        "peak": summary["peak"],
        "memory_gib_peak": summary["memory_gib_peak"],
        "memory_pct_peak": max(pcts) if pcts else None,
        "loss_first": summary["loss_first"],
        "loss_last": summary["loss_last"],
        "step_times_s": [r["step_time_s"] for r in records],
        "loop_times_s": [r["loop_time_s"] for r in records],
        "run_dir": run["run_dir"],
        "wall_s": wall_s,
        "summary": summary,
        "manifest": manifest,
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def format_block(rec: dict) -> str:
    """The human block of one benchmark record."""
    p, m, t = rec["proxy"], rec["machine"], rec["step_time_s"]
    med, mean = rec["at_median"], rec["at_mean"]
    layers = "all" if p["layers"] is None else p["layers"]
    runtime = f"CUDA {m['cuda']}" if m["cuda"] else f"HIP {m['hip']}" if m["hip"] else "no GPU"
    peak = rec["peak"]
    peak_text = "no peak known" if peak is None else f"{peak['tflops']:g} {peak['dtype']}"
    mem_pct = "" if rec["memory_pct_peak"] is None else f" ({rec['memory_pct_peak']:.1f}%)"
    fp8 = ""
    if "mfu_vs_bf16_peak" in med:
        fp8 = f"   vs bf16 peak {_pct(med['mfu_vs_bf16_peak'])}"
    lines = [
        f"== bench {p['model']} layers={layers} seq={p['seq_len']} mbs={p['micro_batch']} "
        f"gbs={p['global_batch']} {p['dtype']} compile={'on' if p['compile'] else 'off'} "
        f"ac={p['ac']} backend={p['backend']}",
        f"machine     : {m['device']} x{m['device_count']} | torch {m['torch']} | {runtime} | "
        f"driver {m['driver']} | python {m['python']} | git {str(m['git_sha'])[:10]} | "
        f"allocator {m.get('alloc_conf') or 'default'}",
        f"valid       : {rec['valid']}"
        + (f" ({rec['invalid_reason']})" if not rec["valid"] else ""),
        f"steps       : {rec['steps']} run, {rec['steady_state_steps']} steady-state "
        f"(first {p['warmup']} left out)",
        f"step time   : median {t['median']:.4f} s  mean {t['mean']:.4f} s  "
        f"(std {t['std']:.4f}, min {t['min']:.4f}, max {t['max']:.4f})",
        f"loop time   : median {rec['loop_time_s']['median']:.4f} s (the step and what runs "
        f"between steps) -> {rec['at_loop_median']['tokens_per_s_per_gpu']:,.0f} tokens/s/GPU",
        f"tokens/s    : {med['tokens_per_s']:,.0f} total, {med['tokens_per_s_per_gpu']:,.0f} "
        f"per GPU at the median step (mean step: {mean['tokens_per_s']:,.0f})",
        f"TFLOPS/GPU  : {med['tflops_per_gpu']:,.2f} dgxc, {med['tflops_per_gpu_causal']:,.2f} "
        "causal (median step)",
        f"MFU         : {_pct(med['mfu'])} dgxc, {_pct(med['mfu_causal'])} causal "
        f"(median step; mean step {_pct(mean['mfu'])} dgxc){fp8}  [peak {peak_text}]",
        f"peak memory : {rec['memory_gib_peak']:.2f} GiB{mem_pct}",
        f"loss        : {rec['loss_first']:.4f} -> {rec['loss_last']:.4f}",
        f"command     : {rec['command_line']}",
        f"run folder  : {rec['run_dir']}",
    ]
    return "\n".join(lines)


# -- how many layers fit ------------------------------------------------------------------------
def planned_gib(proxy: Proxy) -> float:
    """Predicted peak memory of one GPU for ``proxy`` from the dry-run plan, in GiB."""
    from recipes.config import resolve_auto, validate
    from recipes.plan.estimate import memory_per_rank

    cfg = compose(proxy.overrides())
    resolve_auto(cfg, cuda_available=True)
    return memory_per_rank(cfg, validate(cfg, world_size=1))["total"]


def fit_layers(proxy: Proxy, capacity_gib: float, fraction: float) -> int:
    """Largest layer count whose planned memory is within ``fraction`` of ``capacity_gib``.

    The plan leaves out the CUDA context, allocator fragmentation and autocast's weight copies,
    hence the fraction; an out-of-memory run then steps down one layer at a time.
    """
    full = compose(dataclasses.replace(proxy, layers=None).overrides()).model.n_layers
    for layers in range(full, 0, -1):
        if planned_gib(dataclasses.replace(proxy, layers=layers)) <= fraction * capacity_gib:
            return layers
    raise SystemExit(
        f"even 1 layer is planned above {fraction:.0%} of {capacity_gib:.1f} GiB; "
        "lower --seq-len or use --layers"
    )


def gpu_memory_gib() -> float:
    """Total memory of GPU 0, read in a child process so this one never holds a CUDA context."""
    probe = "import torch; print(torch.cuda.get_device_properties(0).total_memory)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit("--layers auto needs a GPU (or --memory-gib): " + out.stderr[-500:])
    return int(out.stdout.strip()) / GIB


def is_oom(output: str, run: dict | None) -> bool:
    """Whether a failed run ran out of device memory."""
    reason = ((run or {}).get("summary") or {}).get("invalid_reason") or ""
    return any(marker in output or marker in reason for marker in OOM_MARKERS)


# -- one benchmark ------------------------------------------------------------------------------
def bench(
    proxy: Proxy,
    out_root: Path,
    *,
    auto: bool = False,
    memory_gib: float | None = None,
    fit_fraction: float = 0.85,
    max_tries: int = 3,
    echo: bool = True,
    log_dir: Path | None = None,
) -> dict:
    """Run ``proxy`` (stepping down from the planned layer count with ``auto``); its record."""
    if auto:
        capacity = memory_gib or gpu_memory_gib()
        proxy = dataclasses.replace(proxy, layers=fit_layers(proxy, capacity, fit_fraction))
        print(f"[bench] --layers auto: {proxy.layers} layers planned to fit {capacity:.1f} GiB")
    for attempt in range(1, (max_tries if auto else 1) + 1):
        stamp = time.strftime("%Y%m%d-%H%M%S")
        output_dir = out_root / f"{stamp}-{proxy.label()}-{attempt}"
        output_dir.mkdir(parents=True)
        cmd = command(proxy, output_dir)
        print(f"[bench] {shlex.join(cmd)}", flush=True)
        log = log_dir / f"{output_dir.name}.log" if log_dir else None
        code, output, wall = stream(cmd, log=log, echo=echo)
        run = load_run(output_dir)
        if code == 0 and run and run["summary"] and run["summary"]["valid"]:
            return record(proxy, cmd, run, wall)
        if auto and proxy.layers > 1 and is_oom(output, run):
            print(f"[bench] out of memory at {proxy.layers} layers; trying {proxy.layers - 1}")
            proxy = dataclasses.replace(proxy, layers=proxy.layers - 1)
            continue
        tail = "".join(output.splitlines(keepends=True)[-30:])
        raise RuntimeError(f"run failed (exit {code}): {shlex.join(cmd)}\n{tail}")
    raise RuntimeError(f"out of memory in {max_tries} tries, down to {proxy.layers + 1} layers")


def add_proxy_args(ap: argparse.ArgumentParser) -> None:
    """The flags that name a Proxy, shared by every bench program."""
    ap.add_argument("--model", default="llama31_8b", help="conf/model option")
    ap.add_argument("--layers", default=None, help="K (model.n_layers), or auto")
    ap.add_argument("--seq-len", type=int, default=8192)
    ap.add_argument("--micro-batch", type=int, default=1)
    ap.add_argument("--global-batch", type=int, default=1)
    ap.add_argument("--dtype", default="bf16", help="conf/dtype option: bf16, fp8, fp8_rowwise")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False)
    ap.add_argument("--backend", default="native", choices=["native", "megatron"])
    ap.add_argument("--ac", default="none", choices=["none", "selective", "full"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5, help="leading steps left out")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--memory-gib", type=float, help="device memory for --layers auto")
    ap.add_argument(
        "--alloc-conf",
        default=ALLOC_CONF,
        help=f"PYTORCH_ALLOC_CONF of every run (default {ALLOC_CONF}; '' keeps the environment's)",
    )


def parse(ap: argparse.ArgumentParser, argv: list[str] | None) -> tuple[argparse.Namespace, Proxy]:
    """Parse ``argv``; the arguments and the Proxy they name (Hydra overrides after ``--``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = ap.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    args.auto = args.layers == "auto"
    if args.layers not in (None, "auto") and not (args.layers.isdigit() and int(args.layers) > 0):
        ap.error(f"--layers {args.layers} must be auto or a layer count >= 1; e.g. --layers 8")
    if args.memory_gib is not None and not args.memory_gib > 0:
        ap.error(f"--memory-gib {args.memory_gib} must be > 0 (the GPU's memory); e.g. 80")
    proxy = Proxy(
        model=args.model,
        layers=None if args.layers in (None, "auto") else int(args.layers),
        seq_len=args.seq_len,
        micro_batch=args.micro_batch,
        global_batch=args.global_batch,
        dtype=args.dtype,
        compile=args.compile,
        backend=args.backend,
        ac=args.ac,
        steps=args.steps,
        warmup=args.warmup,
        seed=args.seed,
        extra=tuple(extra),
    )
    return args, proxy


def check_proxy(ap: argparse.ArgumentParser, proxy: Proxy) -> None:
    """Exit 2 (``ap.error``) with the fix for a proxy recipes-train would refuse."""
    if proxy.steps < 1 or proxy.warmup < 0 or proxy.warmup >= proxy.steps:
        ap.error(
            f"--steps {proxy.steps} --warmup {proxy.warmup}: the run needs steps left after the "
            "warmup steps (warmup >= 0, steps > warmup); e.g. --steps 20 --warmup 5"
        )
    if proxy.compile and proxy.backend != "native":
        ap.error(
            "--compile is a backend=native knob (backend.compile); drop it or --backend native"
        )
    from recipes.errors import ConfigError
    from recipes.train import check_command_line

    try:  # recipes-train's own checks, before any run folder: they touch no GPU
        check_command_line(proxy.overrides(), 1)
    except ConfigError as err:
        ap.error(f"configuration error: {err}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    add_proxy_args(ap)
    ap.add_argument("--output-dir", type=Path, default=Path("results/bench"))
    ap.add_argument("--json", type=Path, help="write the raw record here")
    ap.add_argument("--fit-fraction", type=float, default=0.85)
    ap.add_argument("--max-tries", type=int, default=3)
    ap.add_argument("--quiet", action="store_true", help="do not echo the run's own output")
    args, proxy = parse(ap, argv)
    if not 0 < args.fit_fraction <= 1:
        ap.error(f"--fit-fraction {args.fit_fraction} must be in (0, 1]; e.g. 0.85")
    if args.max_tries < 1:
        ap.error(f"--max-tries {args.max_tries} must be >= 1; e.g. 3")
    check_proxy(ap, proxy)
    use_allocator(args.alloc_conf)
    rec = bench(
        proxy,
        args.output_dir,
        auto=args.auto,
        memory_gib=args.memory_gib,
        fit_fraction=args.fit_fraction,
        max_tries=args.max_tries,
        echo=not args.quiet,
    )
    print(format_block(rec), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rec, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
