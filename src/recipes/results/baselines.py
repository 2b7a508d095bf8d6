"""Expected performance per workload (``recipes/<workload>/baselines.yaml``) and how a run
compares with it: the matching row, its figures, and the ratio measured / expected."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recipes import metrics
from recipes.config import workloads_dir

MATCH_KEYS = ("model", "dtype", "gpu_type", "num_gpus", "layers", "gbs", "seq_len")
"""A row applies to a run only when every one of these that the row names equals the run's."""
LAYOUT_KEYS = ("tp", "pp", "cp", "vp", "micro_batch_size")
"""Named when they differ but never matched on: the layout is what a run tunes against a row."""
FIGURES = ("step_time_s", "tokens_per_s", "mfu")
"""Figures compared; the run's side is its last step's, as the baselines' (seed 003) are."""
REQUIRED = ("source", "model", "dtype", "gpu_type", "num_gpus", "step_time_s")
"""Keys every row needs, in the row or at the top of its file."""


class BaselineError(ValueError):
    """A baselines.yaml that cannot be read or lacks a required key."""


@dataclass(frozen=True)
class Baseline:
    """One row of a workload's baselines.yaml, with the file's top-level keys merged in."""

    workload: str
    file: str
    row: Mapping[str, Any]


@dataclass(frozen=True)
class RunFacts:
    """What decides which baseline row applies to a run; None where the run's files do not say."""

    model: str | None
    dtype: str | None
    gpu_type: str | None
    num_gpus: int | None
    layers: int | None
    gbs: int | None
    seq_len: int | None
    device: str | None = None
    layout: Mapping[str, int | None] = field(default_factory=dict)


def base_dtype(dtype: str | None) -> str | None:
    """The dtype a baseline is keyed by: every FP8 recipe (fp8_delayed, ...) counts as fp8."""
    return "fp8" if dtype and dtype.startswith("fp8") else dtype


def load_baselines(root: Path | None = None) -> list[Baseline]:
    """Every row of every ``<workload>/baselines.yaml`` under ``root`` (the shipped workloads)."""
    root = workloads_dir() if root is None else root
    rows: list[Baseline] = []
    for path in sorted(root.glob("*/baselines.yaml")):
        rows += _parse(path, path.parent.name, f"{path.parent.name}/{path.name}")
    return rows


def _parse(path: Path, workload: str, name: str) -> list[Baseline]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise BaselineError(f"{path}: cannot read it ({err})") from err
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise BaselineError(f"{path}: needs a mapping with a `rows:` list of baseline rows")
    common = {"model": workload} | {k: v for k, v in data.items() if k != "rows"}
    rows = []
    for i, raw in enumerate(data["rows"]):
        row = common | (raw if isinstance(raw, dict) else {})
        missing = [k for k in REQUIRED if row.get(k) is None]
        if missing:
            raise BaselineError(
                f"{path}: rows[{i}] lacks {', '.join(missing)}; give every row "
                f"{', '.join(REQUIRED)} (in the row, or at the top of the file for all rows)"
            )
        nested = [k for k in (*MATCH_KEYS, *LAYOUT_KEYS, *FIGURES) if _is_nested(row.get(k))]
        if nested:
            raise BaselineError(
                f"{path}: rows[{i}] {', '.join(nested)} must be a single value, not a list or "
                "mapping; write one row per value"
            )
        rows.append(Baseline(workload, name, row | {"dtype": base_dtype(row["dtype"])}))
    return rows


def _is_nested(value: Any) -> bool:
    return isinstance(value, (list, dict))


def run_facts(
    summary: Mapping[str, Any], config: Mapping[str, Any] | None, device_name: str | None
) -> RunFacts:
    """A run's facts from its summary, its resolved config (None when absent) and the name of
    its device (torch's, e.g. ``NVIDIA H100 80GB HBM3``, or a peak-table key)."""
    config = config or {}
    model, trainer = config.get("model") or {}, config.get("trainer") or {}
    par = config.get("parallelism") or {}
    return RunFacts(
        model=summary.get("model") or model.get("name"),
        dtype=base_dtype(summary.get("dtype") or (config.get("dtype") or {}).get("name")),
        gpu_type=metrics.device_key(device_name) if device_name else None,
        num_gpus=summary.get("num_gpus"),
        layers=model.get("n_layers"),
        gbs=summary.get("global_batch_size") or trainer.get("global_batch_size"),
        seq_len=summary.get("seq_len") or trainer.get("seq_len"),
        device=device_name,
        layout={k: par.get(k) for k in LAYOUT_KEYS[:-1]}
        | {"micro_batch_size": trainer.get("micro_batch_size")},
    )


def find_baseline(facts: RunFacts, baselines: Iterable[Baseline]) -> tuple[Baseline | None, str]:
    """The one row that matches the run, or None and why none does."""
    candidates = list(baselines)
    if not candidates:
        return None, f"no baselines.yaml under {workloads_dir()}"
    for key in MATCH_KEYS:
        value = getattr(facts, key)
        kept = [b for b in candidates if b.row.get(key) is None or b.row[key] == value]
        if not kept:
            return None, _why_not(key, value, candidates, facts)
        candidates = kept
    if len(candidates) > 1:
        files = sorted({b.file for b in candidates})
        return None, f"{len(candidates)} rows of {', '.join(files)} match; make the rows distinct"
    return candidates[0], ""


def _why_not(key: str, value: Any, candidates: list[Baseline], facts: RunFacts) -> str:
    have = sorted({b.row[key] for b in candidates if b.row.get(key) is not None}, key=_order)
    listed = ", ".join(str(v) for v in have)
    if key == "gpu_type" and value is None:
        return (
            f"device {facts.device!r} is not a GPU of recipes.metrics.PEAK_TFLOPS; "
            f"the baselines are for gpu_type {listed}"
        )
    if value is None:
        return f"the run does not record {key}, which the baselines name ({listed})"
    return f"no baseline for {key}={value} (the rows that match so far have {key} {listed})"


def _order(value: Any) -> tuple[str, Any]:
    return (type(value).__name__, value)


def compare(baseline: Baseline, measured: Mapping[str, float | None], facts: RunFacts) -> dict:
    """The row's figures, the run's, and measured / expected for each of FIGURES."""
    row = baseline.row
    return {
        "workload": baseline.workload,
        "source": row["source"],
        "file": baseline.file,
        "match": {k: row[k] for k in MATCH_KEYS if row.get(k) is not None},
        **{k: row.get(k) for k in FIGURES},
        "time_to_train_1t_days": row.get("time_to_train_1t_days"),
        "proxy": bool(row.get("proxy", False)),
        "measured": {k: measured.get(k) for k in FIGURES},
        "ratio": {k: _ratio(measured.get(k), row.get(k)) for k in FIGURES},
        "layout_differs": _layout_differences(row, facts.layout),
    }


def _ratio(measured: float | None, expected: float | None) -> float | None:
    return None if measured is None or not expected else measured / expected


def _layout_differences(row: Mapping[str, Any], layout: Mapping[str, int | None]) -> dict:
    # A degree the row names as null is one not in use (the seed's "VP n/a"), i.e. 1.
    named = {k: (1 if row[k] is None else row[k]) for k in LAYOUT_KEYS if k in row}
    return {
        k: {"run": layout.get(k), "baseline": v} for k, v in named.items() if layout.get(k) != v
    }


def measured_figures(summary: Mapping[str, Any]) -> dict[str, float | None]:
    """The run's side of the comparison: its last step's figures (seed 003 reads the last)."""
    return {
        "step_time_s": summary.get("step_time_s_last"),
        "tokens_per_s": summary.get("tokens_per_s"),
        "mfu": summary.get("mfu"),
    }


def baseline_for(
    summary: Mapping[str, Any],
    config: Mapping[str, Any] | None,
    device_name: str | None,
    baselines: list[Baseline] | None = None,
) -> dict[str, Any]:
    """``{"baseline": comparison or None, "baseline_note": why none, or None}`` for a summary."""
    if not summary.get("steps"):
        return {"baseline": None, "baseline_note": "no step was measured"}
    try:
        baselines = load_baselines() if baselines is None else baselines
    except BaselineError as err:
        return {"baseline": None, "baseline_note": str(err)}
    facts = run_facts(summary, config, device_name)
    row, why = find_baseline(facts, baselines)
    if row is None:
        return {"baseline": None, "baseline_note": why}
    return {"baseline": compare(row, measured_figures(summary), facts), "baseline_note": None}
