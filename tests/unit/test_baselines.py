"""Baseline rows: loading, matching a run to its row, the ratios, and shipping them in the wheel."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from recipes import metrics
from recipes.config import workloads_dir
from recipes.results import baselines as bl
from recipes.results.summary import RunShape, summarize

ROOT = Path(__file__).resolve().parents[2]
H100 = "NVIDIA H100 80GB HBM3"
SOURCE = "NVIDIA DGX Cloud benchmarking recipe, Llama 3.1 405B, NeMo 24.09"


def seed003_summary(cfg, step_times: list[float], num_gpus: int = 576) -> dict:
    """A 405B summary built the way BenchmarkCallback builds it, from made-up step times."""
    dtype = cfg.dtype.name
    trainer = cfg.trainer
    shape = RunShape(
        seq_len=trainer.seq_len,
        global_batch_size=trainer.global_batch_size,
        num_gpus=num_gpus,
        flops_per_step=metrics.flops_per_step_by_convention(
            cfg.model, seq_len=trainer.seq_len, global_batch_size=trainer.global_batch_size
        ),
        peak=metrics.peak_for(H100, dtype),
        peak_bf16=metrics.peak_for(H100, "bf16"),
        peak_note=None,
    )
    records = [
        {"step": i + 1, "step_time_s": t, "loss": 12.0 - i / 10, "grad_norm": 1.0, "memory_gib": 70}
        for i, t in enumerate(step_times)
    ]
    return {
        "valid": True,
        "invalid_reason": None,
        "model": cfg.model.name,
        "dtype": dtype,
        "backend": cfg.backend.name,
        "proxy": cfg.proxy,
        "num_gpus": num_gpus,
        "seq_len": trainer.seq_len,
        "global_batch_size": trainer.global_batch_size,
        **summarize(records, shape, timing_warmup_steps=2),
    }


@pytest.fixture(scope="module")
def cfg_405b_fp8(compose_cfg):
    return compose_cfg("+experiment=llama31_405b_576gpu_h100", "dtype=fp8")


def test_shipped_baselines_load_with_file_level_keys_merged():
    rows = bl.load_baselines()
    assert workloads_dir() == ROOT / "recipes" or (workloads_dir() / "llama31_405b").is_dir()
    assert len(rows) == 12
    assert {b.workload for b in rows} == {"llama31_405b"}
    first = rows[0].row
    assert (first["model"], first["gpu_type"], first["seq_len"], first["tp"], first["cp"]) == (
        "llama31_405b",
        "h100_sxm",
        8192,
        8,
        2,
    )
    assert first["source"] == SOURCE and rows[0].file == "llama31_405b/baselines.yaml"


def test_405b_fp8_on_576_h100_matches_the_576_gpu_fp8_row(cfg_405b_fp8):
    summary = seed003_summary(cfg_405b_fp8, [30.0, 12.0, 11.5, 11.0])
    result = bl.baseline_for(summary, cfg_405b_fp8, H100)
    found = result["baseline"]
    assert result["baseline_note"] is None
    assert found["match"] == {
        "model": "llama31_405b",
        "dtype": "fp8",
        "gpu_type": "h100_sxm",
        "num_gpus": 576,
        "layers": 126,
        "gbs": 252,
        "seq_len": 8192,
    }
    assert (found["step_time_s"], found["tokens_per_s"], found["mfu"]) == (11.24, 183664, 0.4271)
    assert found["time_to_train_1t_days"] == 63.02 and found["proxy"] is False
    assert found["source"] == SOURCE
    measured_tps = 8192 * 252 / 11.0
    assert found["measured"]["tokens_per_s"] == pytest.approx(measured_tps)
    assert found["ratio"]["tokens_per_s"] == pytest.approx(measured_tps / 183664)
    assert found["ratio"]["step_time_s"] == pytest.approx(11.0 / 11.24)
    assert found["ratio"]["mfu"] == pytest.approx(summary["mfu"] / 0.4271)
    # The real model's 8 KV heads count 1% fewer FLOPs than the seed's 2.17E16.
    assert found["ratio"]["mfu"] == pytest.approx(11.24 / 11.0, rel=0.015)
    assert found["layout_differs"] == {}


@pytest.mark.parametrize("dtype", ["fp8_delayed", "fp8_rowwise"])
def test_every_fp8_recipe_counts_as_fp8(dtype, compose_cfg):
    cfg = compose_cfg("+experiment=llama31_405b_576gpu_h100", f"dtype={dtype}")
    summary = seed003_summary(cfg, [11.24] * 3) | {"dtype": dtype}
    found = bl.baseline_for(summary, cfg, H100)["baseline"]
    assert found["match"]["dtype"] == "fp8" and found["step_time_s"] == 11.24


def test_bf16_and_other_scales_pick_their_own_row(compose_cfg):
    cfg = compose_cfg(
        "+experiment=llama31_405b_576gpu_h100", "dtype=bf16", "trainer.global_batch_size=504"
    )
    found = bl.baseline_for(seed003_summary(cfg, [17.52] * 3, num_gpus=1152), cfg, H100)
    assert found["baseline"]["match"]["num_gpus"] == 1152
    assert found["baseline"]["ratio"]["step_time_s"] == pytest.approx(1.0)


def test_proxy_scale_matches_on_layers(compose_cfg):
    cfg = compose_cfg("+experiment=llama31_405b_32gpu_h100", "dtype=fp8")
    found = bl.baseline_for(seed003_summary(cfg, [5.8] * 3, num_gpus=32), cfg, H100)["baseline"]
    assert found["match"]["layers"] == 7 and found["proxy"] is True
    assert found["layout_differs"] == {}  # the row's `vp: null` is the config's vp=1


@pytest.mark.parametrize(
    ("change", "device", "reason"),
    [
        ({"num_gpus": 100}, H100, "no baseline for num_gpus=100 (the rows that match so far have "
         "num_gpus 32, 96, 192, 576, 1152, 2304)"),
        ({}, "cpu", "device 'cpu' is not a GPU of recipes.metrics.PEAK_TFLOPS; the baselines are "
         "for gpu_type h100_sxm"),
        ({}, "NVIDIA B200", "no baseline for gpu_type=b200"),
        ({"model": "llama31_debug"}, H100, "no baseline for model=llama31_debug"),
        ({"global_batch_size": 256}, H100, "no baseline for gbs=256"),
        ({"steps": 0}, H100, "no step was measured"),
    ],
)  # fmt: skip
def test_no_matching_row_gives_null_and_the_reason(cfg_405b_fp8, change, device, reason):
    summary = seed003_summary(cfg_405b_fp8, [11.24] * 3) | change
    result = bl.baseline_for(summary, cfg_405b_fp8, device)
    assert result["baseline"] is None
    assert reason in result["baseline_note"]


def test_full_model_on_a_proxy_scale_does_not_match_on_layers(cfg_405b_fp8):
    summary = seed003_summary(cfg_405b_fp8, [11.24] * 3, num_gpus=32)
    summary["global_batch_size"] = 126
    note = bl.baseline_for(summary, cfg_405b_fp8, H100)["baseline_note"]
    assert "no baseline for layers=126 (the rows that match so far have layers 7)" in note


def test_run_without_config_cannot_claim_the_layers(cfg_405b_fp8):
    summary = seed003_summary(cfg_405b_fp8, [11.24] * 3)
    note = bl.baseline_for(summary, None, H100)["baseline_note"]
    assert note == "the run does not record layers, which the baselines name (126)"


def test_a_different_layout_still_compares_and_names_the_difference(compose_cfg):
    cfg = compose_cfg(
        "+experiment=llama31_405b_576gpu_h100", "dtype=fp8", "parallelism.pp=18", "parallelism.vp=7"
    )
    found = bl.baseline_for(seed003_summary(cfg, [11.0] * 3), cfg, H100)["baseline"]
    assert found["layout_differs"] == {"pp": {"run": 18, "baseline": 9}}


def test_plain_dict_config_works_like_the_composed_one(cfg_405b_fp8):
    summary = seed003_summary(cfg_405b_fp8, [11.24] * 3)
    plain = OmegaConf.to_container(cfg_405b_fp8, resolve=True)
    assert bl.baseline_for(summary, plain, H100) == bl.baseline_for(summary, cfg_405b_fp8, H100)


def test_a_broken_baselines_file_names_file_row_and_field(tmp_path, monkeypatch, cfg_405b_fp8):
    (tmp_path / "llama31_405b").mkdir()
    (tmp_path / "llama31_405b" / "baselines.yaml").write_text(
        "source: x\ngpu_type: h100_sxm\nrows:\n  - {dtype: fp8, num_gpus: 576}\n"
    )
    with pytest.raises(bl.BaselineError, match=r"rows\[0\] lacks step_time_s; give every row"):
        bl.load_baselines(tmp_path)
    # In a run's summary the error becomes the note: a bad file never costs a run its summary.
    monkeypatch.setattr(bl, "workloads_dir", lambda: tmp_path)
    result = bl.baseline_for(seed003_summary(cfg_405b_fp8, [11.24] * 3), cfg_405b_fp8, H100)
    assert result["baseline"] is None and "baselines.yaml: rows[0] lacks" in result["baseline_note"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- just\n- a list\n", "needs a mapping with a `rows:` list"),
        ("rows: [{dtype: fp8", "cannot read it"),
        (
            "{source: x, gpu_type: h100_sxm, rows: [{dtype: fp8, num_gpus: [8, 16], "
            "step_time_s: 1.0}]}",
            "rows[0] num_gpus must be a single value, not a list or mapping; write one row per",
        ),
    ],
)
def test_a_malformed_file_is_refused_with_file_and_rule(tmp_path, text, message):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "baselines.yaml").write_text(text)
    with pytest.raises(bl.BaselineError, match=re.escape(message)) as err:
        bl.load_baselines(tmp_path)
    assert str(tmp_path / "w" / "baselines.yaml") in str(err.value)


@pytest.mark.skipif(not (ROOT / "pyproject.toml").exists(), reason="needs the source tree")
def test_the_wheel_ships_the_baselines_and_finds_them_installed(tmp_path):
    pytest.importorskip("hatchling")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(tmp_path)],
        check=True,
        timeout=300,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("recipes-*.whl")
    archive = zipfile.ZipFile(wheel)
    shipped = {f"recipes/workloads/{p.relative_to(ROOT)}" for p in ROOT.glob("recipes/*/*")}
    shipped = {name.replace("workloads/recipes/", "workloads/") for name in shipped}
    assert "recipes/workloads/llama31_405b/baselines.yaml" in shipped
    assert shipped <= set(archive.namelist())
    # A pure-Python wheel unpacked onto sys.path is an installed package.
    site = tmp_path / "site"
    archive.extractall(site)
    probe = (
        "from recipes.config import workloads_dir; from recipes.results.baselines import "
        "load_baselines; print(workloads_dir()); print(len(load_baselines()))"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == [str(site / "recipes" / "workloads"), "12"]
