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
SETUP_KEYS = ("fp8_recipe", "compile")
"""Also named when they differ but never matched on: how the row's figures were produced
(``fp8_recipe`` is compared for fp8 rows only; ``compile`` is torch.compile on or off)."""
FIGURES = (
    "step_time_s",
    "tokens_per_s",
    "tokens_per_s_per_gpu",
    "tflops_per_gpu",
    "mfu",
    "memory_gib",
)
"""Figures compared; the run's side is its last step's, as the baselines' (seed 003) are
(``memory_gib``: the run's peak reserved memory per GPU)."""
REQUIRED = ("source", "model", "dtype", "gpu_type", "num_gpus", "step_time_s")
"""Keys every row needs, in the row or at the top of its file. A row whose source publishes no
step time and not enough to derive one exactly may leave ``step_time_s`` out only by saying why
in ``step_time_s_absent``."""
MFU_PEAKS = ("bf16", "fp8")
"""What a row's ``mfu_peak`` may name besides a number (dense TFLOPS per GPU): the peak of that
dtype on the row's GPU type. Without ``mfu_peak`` a row's MFU is against its own dtype's peak."""


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
    setup: Mapping[str, Any] = field(default_factory=dict)
    """SETUP_KEYS as the run's config says: ``fp8_recipe`` (None unless an fp8 run), ``compile``
    (a backend without the key does not compile); None throughout without a config."""


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
        missing = [k for k in REQUIRED if row.get(k) is None and not _excused(k, row)]
        if missing:
            raise BaselineError(
                f"{path}: rows[{i}] lacks {', '.join(missing)}; give every row "
                f"{', '.join(REQUIRED)} (in the row, or at the top of the file for all rows; "
                "a row whose source gives no step time says why in step_time_s_absent)"
            )
        keys = (*MATCH_KEYS, *LAYOUT_KEYS, *SETUP_KEYS, *FIGURES, "mfu_peak")
        nested = [k for k in keys if _is_nested(row.get(k))]
        if nested:
            raise BaselineError(
                f"{path}: rows[{i}] {', '.join(nested)} must be a single value, not a list or "
                "mapping; write one row per value"
            )
        if all(row.get(k) is None for k in FIGURES):
            raise BaselineError(f"{path}: rows[{i}] gives none of {', '.join(FIGURES)}")
        if not _valid_peak(row.get("mfu_peak")):
            raise BaselineError(
                f"{path}: rows[{i}] mfu_peak is {row['mfu_peak']!r}; give "
                f"{' or '.join(MFU_PEAKS)} (that dtype's peak on the row's gpu_type) or the dense "
                "peak TFLOPS per GPU that the row's MFU was measured against"
            )
        rows.append(Baseline(workload, name, row | {"dtype": base_dtype(row["dtype"])}))
    return rows


def _is_nested(value: Any) -> bool:
    return isinstance(value, (list, dict))


def _excused(key: str, row: Mapping[str, Any]) -> bool:
    return key == "step_time_s" and bool(row.get("step_time_s_absent"))


def _valid_peak(peak: Any) -> bool:
    if peak is None or peak in MFU_PEAKS:
        return True
    return isinstance(peak, (int, float)) and not isinstance(peak, bool) and peak > 0


def run_facts(
    summary: Mapping[str, Any], config: Mapping[str, Any] | None, device_name: str | None
) -> RunFacts:
    """A run's facts from its summary, its resolved config (None when absent) and the name of
    its device (torch's, e.g. ``NVIDIA H100 80GB HBM3``, or a peak-table key)."""
    has_config = bool(config)
    config = config or {}
    model, trainer = config.get("model") or {}, config.get("trainer") or {}
    par, dtype_cfg = config.get("parallelism") or {}, config.get("dtype") or {}
    dtype = base_dtype(summary.get("dtype") or dtype_cfg.get("name"))
    return RunFacts(
        model=summary.get("model") or model.get("name"),
        dtype=dtype,
        gpu_type=metrics.device_key(device_name) if device_name else None,
        num_gpus=summary.get("num_gpus"),
        layers=model.get("n_layers"),
        gbs=summary.get("global_batch_size") or trainer.get("global_batch_size"),
        seq_len=summary.get("seq_len") or trainer.get("seq_len"),
        device=device_name,
        layout={k: par.get(k) for k in LAYOUT_KEYS[:-1]}
        | {"micro_batch_size": trainer.get("micro_batch_size")},
        setup={
            "fp8_recipe": dtype_cfg.get("fp8_recipe") if dtype == "fp8" else None,
            "compile": bool((config.get("backend") or {}).get("compile")) if has_config else None,
        },
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
        "mfu_peak": mfu_peak(baseline),
        "step_time_s_absent": row.get("step_time_s_absent"),
        "time_to_train_1t_days": row.get("time_to_train_1t_days"),
        "proxy": bool(row.get("proxy", False)),
        "setup": {k: row[k] for k in SETUP_KEYS if row.get(k) is not None},
        "measured": {k: measured.get(k) for k in FIGURES},
        "ratio": {k: _ratio(measured.get(k), row.get(k)) for k in FIGURES},
        "layout_differs": _layout_differences(row, facts.layout),
        "setup_differs": _setup_differences(row, facts.setup),
    }


def mfu_peak(baseline: Baseline) -> str | float:
    """What the row's MFU is a fraction of: a dtype (its dense peak on the row's gpu_type) or
    a peak in TFLOPS per GPU; a row that names none is measured against its own dtype's peak."""
    return baseline.row.get("mfu_peak") or baseline.row["dtype"]


def _ratio(measured: float | None, expected: float | None) -> float | None:
    return None if measured is None or not expected else measured / expected


def _layout_differences(row: Mapping[str, Any], layout: Mapping[str, int | None]) -> dict:
    # A degree the row names as null is one not in use (the seed's "VP n/a"), i.e. 1.
    named = {k: (1 if row[k] is None else row[k]) for k in LAYOUT_KEYS if k in row}
    return {
        k: {"run": layout.get(k), "baseline": v} for k, v in named.items() if layout.get(k) != v
    }


def _setup_differences(row: Mapping[str, Any], setup: Mapping[str, Any]) -> dict:
    named = [k for k in SETUP_KEYS if row.get(k) is not None]
    if row.get("dtype") != "fp8":
        named = [k for k in named if k != "fp8_recipe"]
    return {k: {"run": setup.get(k), "baseline": row[k]} for k in named if setup.get(k) != row[k]}


def measured_figures(
    summary: Mapping[str, Any], peak: str | float | None = None
) -> dict[str, float | None]:
    """The run's side of the comparison: its last step's figures (seed 003 reads the last).
    ``peak`` is what the row's MFU is a fraction of (see :func:`mfu_peak`); the run's MFU is
    then taken against the same peak, so FP8 runs compare like for like with rows measured
    against the BF16 peak (torchtitan's convention)."""
    return {
        "step_time_s": summary.get("step_time_s_last"),
        "tokens_per_s": summary.get("tokens_per_s"),
        "tokens_per_s_per_gpu": summary.get("tokens_per_s_per_gpu"),
        "tflops_per_gpu": summary.get("tflops_per_gpu"),
        "mfu": _mfu_against(summary, peak),
        "memory_gib": summary.get("memory_gib_peak"),
    }


def _mfu_against(summary: Mapping[str, Any], peak: str | float | None) -> float | None:
    if peak is None or peak == base_dtype(summary.get("dtype")):
        return summary.get("mfu")  # the run's MFU is against its own dtype's peak
    if peak == "bf16":
        return summary.get("mfu_vs_bf16_peak")
    if isinstance(peak, (int, float)):
        tflops = summary.get("tflops_per_gpu")
        return None if tflops is None else tflops / peak
    return None  # e.g. a bf16 run against an FP8 peak: nothing the run measured


def baseline_for(
    summary: Mapping[str, Any],
    config: Mapping[str, Any] | None,
    device_name: str | None,
    baselines: list[Baseline] | None = None,
) -> dict[str, Any]:
    """``{"baseline": comparison or None, "baseline_note": why none, or None}`` for a summary."""
    if not summary.get("steps"):
        return {"baseline": None, "baseline_note": "no step was measured"}
    facts = run_facts(summary, config, device_name)
    row, why = _matching_row(facts, baselines)
    if row is None:
        return {"baseline": None, "baseline_note": why}
    measured = measured_figures(summary, mfu_peak(row))
    return {"baseline": compare(row, measured, facts), "baseline_note": None}


def expected_for_plan(
    config: Mapping[str, Any], num_gpus: int, gpu_type: str, baselines: list[Baseline] | None = None
) -> dict[str, Any]:
    """What a dry run plans against: ``{"baseline": the published row's figures (no measured
    side) or None, "baseline_note": why none, or None}`` for ``config`` on ``num_gpus`` GPUs of
    ``gpu_type`` (a peak-table key)."""
    facts = run_facts({"num_gpus": num_gpus}, config, gpu_type)
    row, why = _matching_row(facts, baselines)
    if row is None:
        return {"baseline": None, "baseline_note": why}
    expected = compare(row, {}, facts)
    del expected["measured"], expected["ratio"]
    return {"baseline": expected, "baseline_note": None}


def _matching_row(facts: RunFacts, baselines: list[Baseline] | None) -> tuple[Baseline | None, str]:
    """:func:`find_baseline` over ``baselines`` (default: the shipped ones)."""
    try:
        baselines = load_baselines() if baselines is None else baselines
    except BaselineError as err:
        return None, str(err)
    return find_baseline(facts, baselines)
