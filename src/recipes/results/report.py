"""``recipes-report PATH...``: every run folder under the given paths in one table (markdown on
stdout, optionally CSV and PNG plots), each run compared with its workload's baseline."""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from recipes import metrics
from recipes.plan.layout import Layout, resolve_layout
from recipes.results.baselines import (
    FIGURES,
    Baseline,
    BaselineError,
    baseline_for,
    load_baselines,
)
from recipes.results.run_dir import file_in_the_way, unwritable
from recipes.results.summary import last_timed

RUN_FILES = ("summary.json", "metrics.jsonl", "config.yaml", "plan.json")
"""A folder holding any of these is a run folder (one with plan.json and no summary: a dry run)."""
LAYOUT_KEYS = ("tp", "pp", "cp", "vp", "dp")
FIGURE_KEYS = (
    "step_time_s_last",
    "step_time_s_mean",
    "step_time_s_std",
    "tokens_per_s",
    "tokens_per_s_per_gpu",
    "tflops_per_gpu",
    "mfu",
    "mfu_vs_bf16_peak",
    "mfu_causal",
    "memory_gib_peak",
    "loss_last",
)
"""Figures read from summary.json (from metrics.jsonl's last step for a run without one)."""
BASELINE_COLUMNS = (
    "baseline_source",
    *(f"baseline_{k}" for k in FIGURES),
    "baseline_mfu_peak",
    *(f"ratio_{k}" for k in FIGURES),
    "baseline_note",
)
PLOT_FILES = ("loss.png", "step_time.png", "tokens_per_s_per_gpu.png")
PATH_FIX = "pass recipes-train's output_dir, a run folder, or $STAGE_PATH/results"


class ReportError(Exception):
    """A bad argument or missing extra; the message names the path, the rule and the fix."""


@dataclass
class Run:
    """What one run folder holds; a file that is missing or unreadable stays None."""

    path: Path
    summary: dict | None = None
    config: dict | None = None
    manifest: dict | None = None
    plan: dict | None = None
    records: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


# -- finding and reading run folders ----------------------------------------------------------
def find_run_dirs(root: Path) -> list[Path]:
    """Run folders at or under ``root``; hidden folders (.hydra, .submitit, .tmp-*) are skipped."""
    found = []
    for here, dirs, files in os.walk(root):
        if any(name in files for name in RUN_FILES):
            found.append(Path(here))
            dirs.clear()  # what a run folder holds (checkpoints) is part of that run
        else:
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    return found


def collect(paths: Sequence[str]) -> list[Path]:
    """Every run folder under the given paths, each once; a path that holds none is an error."""
    found: dict[Path, None] = {}
    for text in paths:
        path = Path(text)
        if not path.exists():
            raise ReportError(f"PATH {text!r} does not exist; {PATH_FIX}")
        if not path.is_dir():
            raise ReportError(
                f"PATH {text!r} is a file, not a folder; pass the run folder that holds it "
                f"({str(path.parent)!r}) or a folder above it"
            )
        runs = find_run_dirs(path)
        if not runs:
            raise ReportError(
                f"PATH {text!r} holds no run folder (a folder with {', '.join(RUN_FILES)}); "
                f"{PATH_FIX}"
            )
        found |= dict.fromkeys(p.resolve() for p in runs)
    return list(found)


SUMMARY_NUMBERS = (
    *FIGURE_KEYS,
    "steps",
    "num_gpus",
    "seq_len",
    "global_batch_size",
    "time_to_train_1t_days",
)
SUMMARY_TEXTS = ("model", "dtype", "backend")
RECORD_NUMBERS = frozenset(
    ("loss", "step_time_s", "memory_gib", "tokens_per_s", "tokens_per_s_per_gpu")
    + ("tflops_per_gpu", "mfu", "mfu_vs_bf16_peak", "mfu_causal")
)
"""The metrics.jsonl figures the report reads (a run without summary.json, the plots)."""


def load_run(path: Path) -> Run:
    """Read a run folder's files; unreadable ones are noted in ``problems``, never raised."""
    run = Run(path)
    run.summary = _read(run, "summary.json", json.loads)
    if run.summary is not None:
        _drop_mistyped(run, run.summary)
    run.config = _read(run, "config.yaml", yaml.safe_load)
    run.manifest = _read(run, "manifest.json", json.loads)
    run.plan = _read(run, "plan.json", json.loads)
    run.records = _read_records(run)
    return run


def _read(run: Run, name: str, parse: Callable[[str], Any]) -> dict | None:
    file = run.path / name
    if not file.is_file():
        return None
    try:
        value = parse(file.read_text())
    except (OSError, ValueError, yaml.YAMLError) as err:
        run.problems.append(f"{name} unreadable ({type(err).__name__})")
        return None
    if not isinstance(value, dict):
        run.problems.append(f"{name} holds no mapping")
        return None
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _drop_mistyped(run: Run, summary: dict) -> None:
    """A summary.json value of the wrong type (edited by hand, another tool's file) is left out
    of the row and named in its problems, rather than breaking the whole report."""
    for keys, ok, kind in (
        (SUMMARY_NUMBERS, _is_number, "a number"),
        (SUMMARY_TEXTS, _is_text, "text"),
    ):
        for key in keys:
            if summary.get(key) is not None and not ok(summary[key]):
                run.problems.append(f"summary.json: {key}={summary.pop(key)!r} is not {kind}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _read_records(run: Run) -> list[dict]:
    file = run.path / "metrics.jsonl"
    if not file.is_file():
        return []
    records, bad = [], 0
    for line in file.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            bad += 1  # a line cut short when the process was killed mid-write
            continue
        if not isinstance(record, dict) or not _is_int(record.get("step")):
            bad += 1  # no step number: not a line recipes-train wrote
            continue
        if any(
            v is not None and not _is_number(v) for k, v in record.items() if k in RECORD_NUMBERS
        ):
            bad += 1  # a line another tool wrote, with text where a figure belongs
            continue
        records.append(record)
    if bad:
        run.problems.append(f"metrics.jsonl: {bad} unreadable line(s)")
    return records


# -- one row per run ----------------------------------------------------------------------------
def status(run: Run) -> tuple[str, str | None]:
    """``valid``, ``invalid``, ``incomplete`` or ``dry run``, and the reason where not valid."""
    if run.summary is not None:
        valid = run.summary.get("valid")
        if valid is True:
            return "valid", None
        if valid is not False:  # edited by hand, another tool's file
            return "invalid", f"summary.json: valid={valid!r} is not true or false"
        return "invalid", run.summary.get("invalid_reason") or "summary.json says valid: false"
    if run.plan is not None:
        return "dry run", None
    problems = run.problems
    if not any(p.startswith("summary.json") for p in problems):
        problems = ["no summary.json", *problems]
    return "incomplete", (
        f"{'; '.join(problems)}; crashed, killed or still running; "
        f"{len(run.records)} step(s) in metrics.jsonl"
    )


def run_row(run: Run, baselines: list[Baseline] | None) -> dict[str, Any]:
    """Every report column of one run, as raw values (the CSV row)."""
    summary, config, plan = run.summary or {}, run.config or {}, run.plan or {}
    state, reason = status(run)
    num_gpus = _num_gpus(run)
    device = _device_name(run)
    figures = summary if summary.get("steps") else _figures_from_records(run.records)
    proxy = bool(summary.get("proxy", config.get("proxy", False)))
    return {
        "run": run.path.name,
        "status": state,
        "valid": state == "valid",
        "reason": reason,
        "model": summary.get("model") or _get(config, "model", "name") or plan.get("model"),
        "dtype": summary.get("dtype") or _get(config, "dtype", "name") or plan.get("dtype"),
        "fp8_recipe": _get(config, "dtype", "fp8_recipe"),
        "backend": summary.get("backend") or _get(config, "backend", "name"),
        "gpu_type": (metrics.device_key(device) or device) if device else None,
        "num_gpus": num_gpus,
        **_layout(run, num_gpus),
        "seq_len": summary.get("seq_len") or _get(config, "trainer", "seq_len"),
        "global_batch_size": (
            summary.get("global_batch_size") or _get(config, "trainer", "global_batch_size")
        ),
        "steps": figures.get("steps"),
        **{k: figures.get(k) for k in FIGURE_KEYS},
        "time_to_train_1t_days": None if proxy else figures.get("time_to_train_1t_days"),
        "proxy": proxy,
        **_planned(plan),
        **_baseline_columns(run, device, baselines),
        "problems": "; ".join(run.problems) or None,
        "path": str(run.path),
    }


def _planned(plan: dict) -> dict[str, Any]:
    """A dry run's predictions (plan.json): peak GiB per GPU, whether it fits, the bubble."""
    memory = plan.get("memory_gib")
    return {
        "planned_memory_gib": memory.get("total") if isinstance(memory, dict) else None,
        "planned_fits": plan.get("fits"),
        "planned_pipeline_bubble": plan.get("pipeline_bubble"),
    }


def _get(mapping: dict, section: str, key: str) -> Any:
    part = mapping.get(section)
    return part.get(key) if isinstance(part, dict) else None


def _num_gpus(run: Run) -> int | None:
    if run.summary and run.summary.get("num_gpus"):
        return run.summary["num_gpus"]
    if run.plan and isinstance(run.plan.get("layout"), dict):
        return run.plan["layout"].get("world_size")
    if run.manifest and run.manifest.get("world_size"):
        return run.manifest["world_size"]
    return _get(run.config or {}, "cluster", "num_gpus")


def _device_name(run: Run) -> str | None:
    """torch's name of the run's device (a dry run: the GPU type it planned for)."""
    if run.plan is not None and run.summary is None:
        return run.plan.get("gpu_type")
    accelerator = (run.manifest or {}).get("accelerator")
    if isinstance(accelerator, dict) and accelerator.get("device_name"):
        return accelerator["device_name"]
    peak = (run.summary or {}).get("peak")
    return peak.get("device") if isinstance(peak, dict) else None


def _layout(run: Run, num_gpus: int | None) -> dict[str, int | None]:
    """tp/pp/cp/vp/dp as the run resolved them (dp_shard=-1 filled from the GPU count)."""
    planned = (run.plan or {}).get("layout")
    if isinstance(planned, dict):
        with contextlib.suppress(TypeError):  # a plan.json of another version: use the config
            layout = Layout(**planned)
            return {k: getattr(layout, k) for k in LAYOUT_KEYS}
    par = (run.config or {}).get("parallelism")
    if not isinstance(par, dict):
        return dict.fromkeys(LAYOUT_KEYS)
    out = {k: par.get(k) for k in LAYOUT_KEYS[:-1]} | {"dp": None}
    # A layout that does not resolve leaves dp empty; the other columns still say what was asked.
    with contextlib.suppress(ValueError, AttributeError, KeyError, TypeError):
        out["dp"] = resolve_layout(OmegaConf.create(par), num_gpus).dp if num_gpus else None
    return out


def _figures_from_records(records: list[dict]) -> dict[str, Any]:
    """What a run without summary.json shows: its last logged step (no steady-state mean), the
    last one not run under the profiler for the timings, as the summary would take it."""
    if not records:
        return {}
    last = last_timed(records)
    tokens = last.get("tokens_per_s")
    return {
        "steps": len(records),
        "step_time_s_last": last.get("step_time_s"),
        **{k: last.get(k) for k in ("tokens_per_s", "tokens_per_s_per_gpu", "tflops_per_gpu")},
        **{k: last.get(k) for k in ("mfu", "mfu_vs_bf16_peak", "mfu_causal")},
        "memory_gib_peak": max((r.get("memory_gib") or 0 for r in records), default=None),
        "loss_last": records[-1].get("loss"),
        "time_to_train_1t_days": metrics.time_to_train_days(tokens_per_s=tokens)
        if tokens
        else None,
    }


def _baseline_columns(
    run: Run, device: str | None, baselines: list[Baseline] | None
) -> dict[str, Any]:
    empty = dict.fromkeys(BASELINE_COLUMNS)
    if run.summary is None:
        if run.plan is None:
            return empty | {"baseline_note": "no summary.json"}
        # A dry run: the published row its plan.json found (plan.json of an older version: none).
        found, notes = run.plan.get("baseline"), ["dry run: nothing measured"]
        if not isinstance(found, dict):
            return empty | {"baseline_note": notes[0]}
    else:
        result = baseline_for(run.summary, run.config, device, baselines)
        found, notes = result["baseline"], []
        if found is None:
            return empty | {"baseline_note": result["baseline_note"]}
    kinds = {"layout": found.get("layout_differs"), "setup": found.get("setup_differs")}
    notes += [
        f"{kind} differs: "
        + ", ".join(f"{k}={v['run']} (baseline {v['baseline']})" for k, v in differs.items())
        for kind, differs in kinds.items()
        if differs
    ]
    ratios = found.get("ratio") or {}
    return {
        "baseline_source": f"{found['source']} ({found['file']})",
        **{f"baseline_{k}": found.get(k) for k in FIGURES},
        "baseline_mfu_peak": found.get("mfu_peak"),
        **{f"ratio_{k}": ratios.get(k) for k in FIGURES},
        "baseline_note": "; ".join(notes) or None,
    }


def sort_key(row: dict[str, Any]) -> tuple:
    """Model (8b before 70b before 405b), dtype, GPU count, backend, then run id (its time)."""
    model = row["model"]
    return (
        model is None,
        _natural(str(model or "")),
        row["dtype"] or "",
        (row["num_gpus"] is None, row["num_gpus"] or 0),
        row["backend"] or "",
        row["run"],
    )


def _natural(text: str) -> list[tuple[int, int | str]]:
    return [(0, int(t)) if t.isdigit() else (1, t) for t in re.split(r"(\d+)", text) if t]


# -- output -------------------------------------------------------------------------------------
COLUMNS: tuple[tuple[str, Callable[[dict], str]], ...] = (
    ("run", lambda r: r["run"]),
    ("model", lambda r: r["model"] or "?"),
    ("dtype", lambda r: _dtype(r)),
    ("backend", lambda r: r["backend"] or ""),
    ("GPUs", lambda r: " ".join(str(v) for v in (r["num_gpus"], r["gpu_type"]) if v)),
    ("tp/pp/cp/vp/dp", lambda r: "/".join(_num(r[k], "{}") for k in LAYOUT_KEYS)),
    ("GBS", lambda r: _num(r["global_batch_size"], "{}")),
    ("step time last (s)", lambda r: _num(r["step_time_s_last"], "{:.3f}")),
    ("step time mean ± std (s)", lambda r: _mean_std(r)),
    ("tokens/s", lambda r: _num(r["tokens_per_s"], "{:,.0f}")),
    ("tokens/s/GPU", lambda r: _num(r["tokens_per_s_per_gpu"], "{:,.0f}")),
    ("TFLOPS/GPU", lambda r: _num(r["tflops_per_gpu"], "{:,.2f}")),
    ("MFU", lambda r: _pct(r)),
    ("memory (GiB)", lambda r: _memory(r)),
    ("final loss", lambda r: _num(r["loss_last"], "{:.4f}")),
    ("days to 1T tokens", lambda r: _days(r)),
    ("valid", lambda r: _valid(r)),
    ("proxy", lambda r: "yes" if r["proxy"] else ""),
    ("vs baseline", lambda r: _vs_baseline(r)),
)


def _num(value: Any, fmt: str) -> str:
    return "" if value is None else fmt.format(value)


def _memory(row: dict) -> str:
    if row["status"] != "dry run" or row["planned_memory_gib"] is None:
        return _num(row["memory_gib_peak"], "{:.2f}")
    fits = {True: " (fits)", False: " (does not fit)"}.get(row["planned_fits"], "")
    return f"{row['planned_memory_gib']:.1f} planned{fits}"


def _dtype(row: dict) -> str:
    dtype = row["dtype"] or "?"
    return f"{dtype} ({row['fp8_recipe']})" if row["fp8_recipe"] and dtype == "fp8" else dtype


def _mean_std(row: dict) -> str:
    if row["step_time_s_mean"] is None:
        return ""
    return f"{row['step_time_s_mean']:.3f} ± {row['step_time_s_std'] or 0:.3f}"


def _pct(row: dict) -> str:
    if row["mfu"] is None:
        return "n/a" if row["tflops_per_gpu"] is not None else ""
    return f"{100 * row['mfu']:.2f}%"


def _days(row: dict) -> str:
    if row["proxy"] and row["status"] != "dry run":
        return "n/a (proxy)"
    return _num(row["time_to_train_1t_days"], "{:,.2f}")


def _valid(row: dict) -> str:
    if row["status"] == "valid":
        return "yes"
    if row["status"] == "dry run":
        return "dry run (plan.json)"
    return f"no: {row['status']}: {row['reason']}"


def _vs_baseline(row: dict) -> str:
    if row["status"] == "dry run" and row["baseline_source"]:  # nothing measured: what to expect
        if row["baseline_step_time_s"] is not None:
            return f"published: {row['baseline_step_time_s']} s/step"
        return f"published: {_num(row['baseline_tokens_per_s_per_gpu'], '{:,.0f}')} tokens/s/GPU"
    ratio = row["ratio_tokens_per_s"]
    if ratio is None:  # a row that gives tokens/s per GPU only (torchtitan's tps)
        ratio = row["ratio_tokens_per_s_per_gpu"]
    if ratio is None:
        return ""
    return f"{ratio:.2f}x" + (f" ({row['baseline_note']})" if row["baseline_note"] else "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(rows: list[dict]) -> str:
    """The report: a count line, the table, and what its columns mean."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    lines = [
        f"{len(rows)} run(s): " + ", ".join(f"{n} {state}" for state, n in counts.items()),
        "",
        "| " + " | ".join(name for name, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(_cell(fmt(r)) for _, fmt in COLUMNS) + " |" for r in rows]
    return "\n".join(lines + ["", *_notes(rows)]) + "\n"


def _notes(rows: list[dict]) -> list[str]:
    notes = [
        "Step time last is the headline (seed 003 reads the last step); mean ± std is over the "
        "steady-state steps. tokens/s, TFLOPS and MFU are the last step's. A dry run's memory "
        "is its plan's peak per GPU against the GPU it planned for (CSV: planned_*).",
        "MFU: model FLOPs (dgxc convention, seed 003) against the dense peak of the run's dtype "
        "(FP8 runs: the FP8 peak); n/a where the device's peak is unknown. The CSV adds "
        "mfu_vs_bf16_peak and mfu_causal.",
        "vs baseline: tokens/s (or tokens/s/GPU where the baseline gives only that) measured / "
        "expected for the same model, dtype, GPU type, GPU count, layers and GBS, with any "
        "layout, torch.compile or FP8 recipe difference; the CSV has the other ratios (MFU "
        "against the baseline's own peak) and why a run has none. A dry run shows the "
        "published figure of the configuration it planned.",
    ]
    sources = sorted({r["baseline_source"] for r in rows if r["baseline_source"]})
    return [f"- {n}" for n in notes] + [f"- baseline: {s}" for s in sources]


def write_csv(rows: list[dict], path: Path) -> None:
    """Every column of every row, raw values (empty for None)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})


def _figure_class() -> Any:
    """matplotlib's Figure (no pyplot: no GUI backend, no global state), or a ReportError."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ReportError(
            "--plots needs matplotlib, which is not installed; install the report extra: "
            "pip install 'recipes[report]' (or pip install 'matplotlib>=3.7')"
        ) from err
    return Figure


def write_plots(runs: list[Run], rows: list[dict], out: Path) -> list[Path]:
    """Loss and step time against step per run, and tokens/s/GPU per run against its baseline."""
    figure = _figure_class()
    out.mkdir(parents=True, exist_ok=True)
    with_steps = [run for run in runs if run.records]
    paths = [
        _line_plot(figure, with_steps, "loss", "loss", out / PLOT_FILES[0]),
        _line_plot(figure, with_steps, "step_time_s", "step time (s)", out / PLOT_FILES[1]),
        _bar_plot(figure, rows, out / PLOT_FILES[2]),
    ]
    return paths


def _line_plot(figure: Any, runs: list[Run], key: str, label: str, path: Path) -> Path:
    fig = figure(figsize=(9, 5), layout="constrained")
    ax = fig.add_subplot()
    for run in runs:
        points = [(r["step"], r[key]) for r in run.records if r.get(key) is not None]
        ax.plot([s for s, _ in points], [v for _, v in points], marker=".", label=run.path.name)
    ax.set(xlabel="step", ylabel=label, title=f"{label} per step")
    ax.xaxis.get_major_locator().set_params(integer=True)
    if runs:
        ax.legend(fontsize="x-small")
    fig.savefig(path, dpi=100)
    return path


def _expected_per_gpu(row: dict) -> float | None:
    """The baseline's tokens/s per GPU: as given, or its tokens/s over the run's GPU count."""
    if row["baseline_tokens_per_s_per_gpu"]:
        return row["baseline_tokens_per_s_per_gpu"]
    if row["baseline_tokens_per_s"] and row["num_gpus"]:
        return row["baseline_tokens_per_s"] / row["num_gpus"]
    return None


def _bar_plot(figure: Any, rows: list[dict], path: Path) -> Path:
    shown = [r for r in rows if r["tokens_per_s_per_gpu"] is not None]
    fig = figure(figsize=(9, 1.5 + 0.4 * len(shown)), layout="constrained")
    ax = fig.add_subplot()
    ys = range(len(shown))
    ax.barh(ys, [r["tokens_per_s_per_gpu"] for r in shown], label="measured (last step)")
    expected = [(y, v) for y, r in zip(ys, shown, strict=True) if (v := _expected_per_gpu(r))]
    if expected:
        ax.scatter([v for _, v in expected], [y for y, _ in expected], marker="D", label="baseline")
    labels = [r["run"] + ("" if r["valid"] else f" ({r['status']})") for r in shown]
    ax.set_yticks(list(ys), labels, fontsize="x-small")
    ax.invert_yaxis()  # top to bottom in the table's order
    ax.set(xlabel="tokens/s per GPU", title="throughput per GPU vs baseline")
    if shown:
        ax.legend(fontsize="x-small")
    fig.savefig(path, dpi=100)
    return path


# -- command line -------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="recipes-report",
        description="One table of every run folder under PATH...: figures, validity and the "
        "ratio to the workload's published baseline. Run folders are only read.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="run folder or a folder above")
    parser.add_argument("--csv", type=Path, metavar="FILE", help="also write every column as CSV")
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="also write the table")
    parser.add_argument("--plots", type=Path, metavar="DIR", help="write PNG plots (matplotlib)")
    return parser.parse_args(argv)


def _check_output(target: Path | None, option: str, run_dirs: list[Path]) -> None:
    """Before anything is printed: the path can be written (a file for --csv/--markdown, a
    folder for --plots) and lies outside every run folder (run folders are records)."""
    if target is None:
        return
    folder = option == "--plots"
    if folder and target.exists() and not target.is_dir():
        raise ReportError(
            f"{option} {str(target)!r} is a file; {option} takes a folder for the PNG files: "
            "name a new or existing folder"
        )
    if not folder and target.is_dir():
        raise ReportError(
            f"{option} {str(target)!r} is a folder; {option} takes a file name: e.g. "
            f"{str(target / ('report.csv' if option == '--csv' else 'report.md'))!r}"
        )
    blocking = file_in_the_way(target.parent)
    if blocking is not None:
        raise ReportError(
            f"{option} {str(target)!r} cannot be created: {str(blocking)!r} is a file, not a "
            "folder; write it elsewhere"
        )
    written = [target / name for name in PLOT_FILES] if folder else [target]
    existing = [path for path in written if path.exists()]
    if existing:
        raise ReportError(
            f"{option} {str(target)!r}: {str(existing[0])!r} exists and recipes-report never "
            "overwrites a file; name a new "
            f"{'folder' if folder else 'file'}, or remove the old one first"
        )
    locked = unwritable(target)
    if locked is not None:
        raise ReportError(
            f"{option} {str(target)!r} cannot be created: {str(locked)!r} is not writable by "
            "this user; write it elsewhere"
        )
    resolved = target.resolve()
    for run_dir in run_dirs:
        if resolved == run_dir or run_dir in resolved.parents:
            raise ReportError(
                f"{option} {str(target)!r} is inside run folder {str(run_dir)!r}; run folders "
                f"are never written to; write it elsewhere, e.g. {str(run_dir.parent)!r}"
            )


def build_rows(run_dirs: list[Path]) -> tuple[list[Run], list[dict]]:
    """Read every run folder and make its row; sorted by sort_key."""
    try:
        baselines: list[Baseline] | None = load_baselines()
    except BaselineError as err:
        print(f"recipes-report: warning: {err}", file=sys.stderr)
        baselines = None  # each row then carries the reason as its baseline_note
    runs = [load_run(path) for path in run_dirs]
    pairs = sorted(((run_row(run, baselines), run) for run in runs), key=lambda p: sort_key(p[0]))
    return [run for _, run in pairs], [row for row, _ in pairs]


def report(args: argparse.Namespace) -> int:
    """Print the table; write the CSV, markdown and plots asked for."""
    if args.plots is not None:
        _figure_class()  # fail before reading anything when the extra is missing
    run_dirs = collect(args.paths)
    outputs = {"--csv": args.csv, "--markdown": args.markdown, "--plots": args.plots}
    for option, target in outputs.items():
        _check_output(target, option, run_dirs)
    runs, rows = build_rows(run_dirs)
    text = markdown(rows)
    print(text, end="")
    try:
        if args.csv is not None:
            args.csv.parent.mkdir(parents=True, exist_ok=True)
            write_csv(rows, args.csv)
        if args.markdown is not None:
            args.markdown.parent.mkdir(parents=True, exist_ok=True)
            args.markdown.write_text(text)
        if args.plots is not None:
            for path in write_plots(runs, rows, args.plots):
                print(f"wrote {path}", file=sys.stderr)
    except OSError as err:  # what the checks cannot see: a read-only or special file system
        raise ReportError(
            f"{err.filename!r} cannot be written ({err.strerror}); write it elsewhere"
        ) from None
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``recipes-report``; exit code 2 for a bad path or a missing extra."""
    args = parse_args(argv)
    try:
        return report(args)
    except ReportError as err:
        print(f"recipes-report: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
