"""Baseline rows: loading, matching a run to its row, the ratios, and shipping them in the wheel."""

from __future__ import annotations

import json
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


def seed003_summary(cfg, step_times: list[float], num_gpus: int = 576, device: str = H100) -> dict:
    """A summary built the way BenchmarkCallback builds it (405B unless ``cfg`` says otherwise),
    from made-up step times, on ``device`` (torch's name of the GPU)."""
    dtype = cfg.dtype.name
    trainer = cfg.trainer
    shape = RunShape(
        seq_len=trainer.seq_len,
        global_batch_size=trainer.global_batch_size,
        num_gpus=num_gpus,
        flops_per_step=metrics.flops_per_step_by_convention(
            cfg.model, seq_len=trainer.seq_len, global_batch_size=trainer.global_batch_size
        ),
        peak=metrics.peak_for(device, dtype),
        peak_bf16=metrics.peak_for(device, "bf16"),
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
    return compose_cfg("+experiment=llama31_405b_576gpu_h100_fp8")


def test_shipped_baselines_load_with_file_level_keys_merged():
    rows = bl.load_baselines()
    assert workloads_dir() == ROOT / "recipes" or (workloads_dir() / "llama31_405b").is_dir()
    assert len(rows) == 12 + len(SEED_8B)
    assert {b.workload for b in rows} == {"llama31_405b", "llama31_8b"}
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
    cfg = compose_cfg("+experiment=llama31_405b_576gpu_h100_fp8", f"dtype={dtype}")
    summary = seed003_summary(cfg, [11.24] * 3) | {"dtype": dtype}
    found = bl.baseline_for(summary, cfg, H100)["baseline"]
    assert found["match"]["dtype"] == "fp8" and found["step_time_s"] == 11.24


def test_bf16_and_other_scales_pick_their_own_row(compose_cfg):
    cfg = compose_cfg("+experiment=llama31_405b_576gpu_h100_bf16", "trainer.global_batch_size=504")
    found = bl.baseline_for(seed003_summary(cfg, [17.52] * 3, num_gpus=1152), cfg, H100)
    assert found["baseline"]["match"]["num_gpus"] == 1152
    assert found["baseline"]["ratio"]["step_time_s"] == pytest.approx(1.0)


def test_proxy_scale_matches_on_layers(compose_cfg):
    cfg = compose_cfg("+experiment=llama31_405b_32gpu_h100_fp8")
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
        "+experiment=llama31_405b_576gpu_h100_fp8", "parallelism.pp=18", "parallelism.vp=7"
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
    assert out.stdout.split() == [
        str(site / "recipes" / "workloads"),
        str(len(bl.load_baselines())),
    ]


# -- Llama 3.1 8B: torchtitan's logged figures (seeds 000 and 001) -------------------------------
GB200, B200 = "NVIDIA GB200", "NVIDIA B200"
SEED_8B = {
    # (dtype, gpu_type, GPUs): (seed, tps, tflops, mfu %, memory GiB) as the seeds' log lines print
    ("bf16", "h100_sxm", 32): ("seed 000", 6785, None, 39.73, 68.57),
    ("fp8", "h100_sxm", 32): ("seed 000", 7865, None, 46.06, 63.48),
    ("bf16", "gb200", 68): ("seed 001", 17581, 1018.20, 45.25, 158.61),
    ("bf16", "gb200", 36): ("seed 001", 17975, 1040.99, 46.27, 159.31),
    ("bf16", "gb200", 12): ("seed 001", 18284, 1058.93, 47.06, 161.65),
    ("bf16", "b200", 16): ("seed 001", 17441, 1010.08, 44.89, 161.51),
}


def rows_8b() -> dict[tuple, dict]:
    rows = [b.row for b in bl.load_baselines() if b.workload == "llama31_8b"]
    return {(r["dtype"], r["gpu_type"], r["num_gpus"]): r for r in rows}


@pytest.fixture(scope="module")
def cfg_8b(compose_cfg):
    return lambda dtype, *overrides: compose_cfg(
        f"+experiment=llama31_8b_8gpu_h100_{dtype}", *overrides
    )


def test_8b_rows_hold_the_seed_figures_and_nothing_they_do_not_give():
    rows = rows_8b()
    assert set(rows) == set(SEED_8B)
    for key, (seed, tps, tflops, mfu_pct, memory) in SEED_8B.items():
        row = rows[key]
        assert row["source"].startswith(seed) and row["model"] == "llama31_8b"
        assert (row["tokens_per_s_per_gpu"], row.get("tflops_per_gpu"), row["memory_gib"]) == (
            tps,
            tflops,
            memory,
        )
        assert row["mfu"] == pytest.approx(mfu_pct / 100, abs=1e-9)
        # Neither seed gives the sequence length (nor seed 000 the batch): no step time, no
        # whole-job tokens/s, nothing to match seq_len, gbs or layers on.
        for absent in ("step_time_s", "tokens_per_s", "seq_len", "gbs", "layers"):
            assert row.get(absent) is None, (key, absent)
        assert "cannot be derived" in row["step_time_s_absent"]


def test_8b_mfu_peaks_follow_from_the_seed_figures():
    rows = rows_8b()
    for row in rows.values():
        if row.get("tflops_per_gpu") is not None:  # seed 001: mfu = tflops / peak
            assert row["tflops_per_gpu"] / row["mfu"] == pytest.approx(row["mfu_peak"], abs=0.5)
    bf16, fp8 = rows[("bf16", "h100_sxm", 32)], rows[("fp8", "h100_sxm", 32)]
    # Seed 000: the float8 run's MFU grew exactly as its tps did, so both are against one peak,
    # the BF16 one (torchtitan's convention for FP8 runs).
    tps_ratio = fp8["tokens_per_s_per_gpu"] / bf16["tokens_per_s_per_gpu"]
    assert fp8["mfu"] / bf16["mfu"] == pytest.approx(tps_ratio, rel=5e-4)
    assert bf16["mfu_peak"] == fp8["mfu_peak"] == "bf16"
    assert (bf16["compile"], fp8["compile"], fp8["fp8_recipe"]) == (False, True, "tensorwise")


def test_8b_bf16_on_32_h100_is_compared_per_gpu_with_seed_000(cfg_8b):
    cfg = cfg_8b("bf16")
    summary = seed003_summary(cfg, [3.0, 2.0, 1.9], num_gpus=32)
    found = bl.baseline_for(summary, cfg, H100)["baseline"]
    assert found["match"] == {
        "model": "llama31_8b",
        "dtype": "bf16",
        "gpu_type": "h100_sxm",
        "num_gpus": 32,
    }
    per_gpu = 8192 * 128 / 1.9 / 32
    assert found["measured"]["tokens_per_s_per_gpu"] == pytest.approx(per_gpu)
    assert found["ratio"]["tokens_per_s_per_gpu"] == pytest.approx(per_gpu / 6785)
    assert found["measured"]["mfu"] == summary["mfu"]  # a BF16 run's MFU is against BF16's peak
    assert found["ratio"]["mfu"] == pytest.approx(summary["mfu"] / 0.3973)
    assert found["ratio"]["memory_gib"] == pytest.approx(70 / 68.57)
    assert found["step_time_s"] is None and found["step_time_s_absent"]
    assert found["ratio"]["step_time_s"] is None and found["ratio"]["tokens_per_s"] is None
    assert found["layout_differs"] == {} and found["setup_differs"] == {}


def test_8b_on_a_gpu_count_the_seeds_do_not_give_has_no_row(cfg_8b):
    cfg = cfg_8b("bf16")
    note = bl.baseline_for(seed003_summary(cfg, [1.0] * 3, num_gpus=8), cfg, H100)["baseline_note"]
    assert note == "no baseline for num_gpus=8 (the rows that match so far have num_gpus 32)"


@pytest.mark.parametrize(
    ("overrides", "differs"),
    [
        (("backend.compile=true",), {}),
        ((), {"compile": {"run": False, "baseline": True}}),
        (
            ("dtype=fp8_rowwise", "backend.compile=true"),
            {"fp8_recipe": {"run": "rowwise", "baseline": "tensorwise"}},
        ),
    ],
)
def test_8b_fp8_mfu_is_against_the_bf16_peak_and_setup_differences_are_named(
    cfg_8b, overrides, differs
):
    cfg = cfg_8b("fp8", *overrides)
    summary = seed003_summary(cfg, [2.0, 1.5, 1.5], num_gpus=32)
    found = bl.baseline_for(summary, cfg, H100)["baseline"]
    assert found["match"]["dtype"] == "fp8" and found["mfu_peak"] == "bf16"
    # Like for like: the run's MFU against the BF16 peak (about twice its MFU against FP8's).
    assert found["measured"]["mfu"] == summary["mfu_vs_bf16_peak"]
    assert found["measured"]["mfu"] == pytest.approx(2 * summary["mfu"], rel=1e-3)
    assert found["ratio"]["mfu"] == pytest.approx(summary["mfu_vs_bf16_peak"] / 0.4606)
    assert found["setup_differs"] == differs
    assert found["setup"] == {"fp8_recipe": "tensorwise", "compile": True}


@pytest.mark.parametrize(("device", "num_gpus"), [(GB200, 68), (GB200, 12), (B200, 16)])
def test_seed_001_mfu_is_compared_against_the_peak_it_was_measured_with(cfg_8b, device, num_gpus):
    cfg = cfg_8b("bf16")
    summary = seed003_summary(cfg, [2.0, 1.0], num_gpus=num_gpus, device=device)
    found = bl.baseline_for(summary, cfg, device)["baseline"]
    key = metrics.device_key(device)
    assert found["match"]["gpu_type"] == key and found["match"]["num_gpus"] == num_gpus
    assert found["mfu_peak"] == 2250
    assert found["measured"]["mfu"] == pytest.approx(summary["tflops_per_gpu"] / 2250)
    # GB200's table peak is 2500: the summary's own MFU is not what the seed's is against.
    table_peak = metrics.PEAK_TFLOPS[key]["bf16"]
    assert found["measured"]["mfu"] == pytest.approx(summary["mfu"] * table_peak / 2250)
    assert found["ratio"]["mfu"] == pytest.approx(found["ratio"]["tflops_per_gpu"], rel=5e-4)


# -- the FP8 recipe a row was measured with -------------------------------------------------------
@pytest.mark.parametrize("dtype", ["fp8", "fp8_delayed", "fp8_rowwise"])
def test_405b_fp8_names_the_run_recipe_seed_003_does_not_state(dtype, compose_cfg):
    cfg = compose_cfg("+experiment=llama31_405b_576gpu_h100_fp8", f"dtype={dtype}")
    found = bl.baseline_for(seed003_summary(cfg, [11.24] * 3), cfg, H100)["baseline"]
    recipe = cfg.dtype.fp8_recipe
    assert found["setup"] == {"fp8_recipe": "nemo_24.09_dtype_fp8"}
    assert found["setup_differs"] == {
        "fp8_recipe": {"run": recipe, "baseline": "nemo_24.09_dtype_fp8"}
    }
    assert found["layout_differs"] == {} and found["ratio"]["step_time_s"] == pytest.approx(1.0)


def test_dtype_fp8_still_selects_tensorwise_and_bf16_rows_name_no_recipe(compose_cfg):
    assert compose_cfg("dtype=fp8").dtype.fp8_recipe == "tensorwise"
    cfg = compose_cfg("+experiment=llama31_405b_576gpu_h100_bf16")
    summary = seed003_summary(cfg, [17.2] * 3)
    found = bl.baseline_for(summary, cfg, H100)["baseline"]
    assert found["setup"] == {} and found["setup_differs"] == {}
    assert found["mfu_peak"] == "bf16" and found["measured"]["mfu"] == summary["mfu"]


def test_run_without_config_names_its_recipe_as_unknown(cfg_405b_fp8):
    summary = seed003_summary(cfg_405b_fp8, [11.24] * 3) | {"model": "llama31_405b"}
    facts = bl.run_facts(summary, None, H100)
    assert facts.setup == {"fp8_recipe": None, "compile": None}


def test_report_shows_the_per_gpu_ratio_and_the_setup_difference(cfg_8b, compose_cfg, tmp_path):
    from recipes.results import report

    def row_for(cfg, step_times, num_gpus):
        summary = seed003_summary(cfg, step_times, num_gpus=num_gpus)
        config = OmegaConf.to_container(cfg, resolve=True)
        manifest = {"accelerator": {"device_name": H100}}
        run = report.Run(tmp_path, summary=summary, config=config, manifest=manifest)
        row = report.run_row(run, bl.load_baselines())
        return row, dict(report.COLUMNS)["vs baseline"](row)

    row, cell = row_for(cfg_8b("fp8"), [1.5] * 3, 32)
    ratio = 8192 * 128 / 1.5 / 32 / 7865
    assert row["ratio_tokens_per_s"] is None
    assert row["ratio_tokens_per_s_per_gpu"] == pytest.approx(ratio)
    assert (row["baseline_tokens_per_s_per_gpu"], row["baseline_mfu_peak"]) == (7865, "bf16")
    assert row["baseline_note"] == "setup differs: compile=False (baseline True)"
    assert cell == f"{ratio:.2f}x (setup differs: compile=False (baseline True))"

    cfg = compose_cfg("+experiment=llama31_405b_576gpu_h100_fp8", "parallelism.pp=18")
    row, cell = row_for(cfg, [11.0] * 3, 576)
    assert row["baseline_note"] == (
        "layout differs: pp=18 (baseline 9); "
        "setup differs: fp8_recipe=tensorwise (baseline nemo_24.09_dtype_fp8)"
    )
    assert cell.endswith(f"({row['baseline_note']})")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("{step_time_s_absent: not published}", "rows[0] gives none of step_time_s, tokens_per_s"),
        ("{step_time_s_absent: '', tokens_per_s_per_gpu: 5}", "rows[0] lacks step_time_s"),
        ("{step_time_s: 1.0, mfu_peak: fp16}", "rows[0] mfu_peak is 'fp16'; give bf16 or fp8"),
        ("{step_time_s: 1.0, mfu_peak: -3}", "rows[0] mfu_peak is -3"),
        ("{step_time_s: 1.0, mfu_peak: true}", "rows[0] mfu_peak is True"),
        ("{step_time_s: 1.0, fp8_recipe: [a, b]}", "rows[0] fp8_recipe must be a single value"),
    ],
)
def test_rows_without_figures_or_with_a_bad_peak_are_refused(tmp_path, row, message):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "baselines.yaml").write_text(
        f"source: x\ngpu_type: h100_sxm\ndtype: fp8\nnum_gpus: 8\nrows:\n  - {row}\n"
    )
    with pytest.raises(bl.BaselineError, match=re.escape(message)):
        bl.load_baselines(tmp_path)


def test_a_row_without_step_time_loads_when_it_says_why(tmp_path):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "baselines.yaml").write_text(
        "source: x\ngpu_type: h100_sxm\nrows:\n  - {dtype: bf16, num_gpus: 8, mfu_peak: 2250, "
        "step_time_s_absent: not published, tokens_per_s_per_gpu: 5}\n"
    )
    (row,) = bl.load_baselines(tmp_path)
    assert row.row["step_time_s_absent"] == "not published" and row.row["mfu_peak"] == 2250


def test_a_dry_run_plan_states_the_published_figures_of_its_configuration(
    tmp_path, caplog, compose_cfg
):
    from recipes.train import run

    asked = ["+experiment=llama31_405b_576gpu_h100_bf16", "cluster.num_gpus=576", "dry_run=true"]
    with caplog.at_level("INFO", logger="recipes"):
        result = run(compose_cfg(*asked, "parallelism.vp=1", f"output_dir={tmp_path}"))
    expected = result["baseline"]
    assert expected["step_time_s"] == 17.20 and expected["mfu"] == 0.5578
    assert expected["match"]["num_gpus"] == 576 and "measured" not in expected
    assert expected["layout_differs"] == {"vp": {"run": 1, "baseline": 7}}
    assert (
        "published for this configuration (NVIDIA DGX Cloud benchmarking recipe, Llama 3.1 405B, "
        "NeMo 24.09): step time 17.2 s, tokens/s 120022, MFU 55.8% (of the bf16 peak), 1T tokens "
        "in 96.43 days; its vp is 7 (this plan: 1)"
    ) in caplog.text
    written = json.loads((Path(result["run_dir"]) / "plan.json").read_text())
    assert written["baseline"] == expected and written["baseline_note"] is None


def test_a_dry_run_plan_without_a_published_row_says_why(tmp_path, compose_cfg):
    from recipes.train import run

    other = run(
        compose_cfg(
            "model=llama31_8b",
            "dtype=bf16",
            "cluster.gpu_type=h100_sxm",
            "cluster.num_gpus=24",
            "trainer.global_batch_size=24",
            "dry_run=true",
            f"output_dir={tmp_path}",
        )
    )
    assert other["baseline"] is None and "no baseline for num_gpus=24" in other["baseline_note"]
    unnamed = run(compose_cfg("dry_run=true", f"output_dir={tmp_path}"))
    assert unnamed["baseline"] is None and unnamed["baseline_note"] == "no cluster.gpu_type named"
