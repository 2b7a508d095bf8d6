"""``recipes-report``: run folders written by real ``recipes-train`` runs, plus crashed, broken
and fabricated ones, in one table, CSV and plots; bad paths refused with exit code 2."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from test_baselines import H100, seed003_summary

from recipes.results import report
from recipes.train import run

PNG = b"\x89PNG\r\n\x1a\n"
RATIO_576 = 8192 * 252 / 11.0 / 183664  # fabricated 405B fp8 run, last step 11.0 s


def write_fabricated_405b(folder: Path, cfg, step_times: list[float]) -> dict:
    """A 576-GPU H100 run folder the way BenchmarkCallback lays it out, with made-up timings."""
    folder.mkdir(parents=True)
    summary = seed003_summary(cfg, step_times)
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    manifest = {"accelerator": {"device_name": H100}, "world_size": 576}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "summary.json").write_text(json.dumps(summary))
    lines = [
        {"step": i + 1, "loss": 12.0 - i / 10, "step_time_s": t, "tokens_per_s": 8192 * 252 / t}
        for i, t in enumerate(step_times)
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return summary


@pytest.fixture(scope="module")
def results(tmp_path_factory, compose_cfg):
    """$STAGE_PATH/results as launch.sh lays it out: real debug runs, a real dry run, and
    hand-made crashed, early-crashed, broken and 405B folders. Returns (root, {name: folder})."""
    root = tmp_path_factory.mktemp("stage") / "results"
    debug, big = root / "0.1.0/fp32/debug/1", root / "0.1.0/fp8/405b/576"
    short = ("trainer.max_steps=3", "trainer.timing_warmup_steps=1")
    folders = {
        "short": run(compose_cfg(*short, f"output_dir={debug}")),
        "gbs16": run(
            compose_cfg(
                *short, "trainer.global_batch_size=16", "trainer.seq_len=128", f"output_dir={debug}"
            )
        ),
        "nan": run(
            compose_cfg(
                "trainer.lr=1e30",
                "trainer.warmup_steps=0",
                "trainer.max_steps=5",
                "run_name=nan",
                f"output_dir={debug}",
            )  # fmt: skip
        ),
        "dry": run(
            compose_cfg(
                "+experiment=llama31_405b_576gpu_h100_fp8",
                "dry_run=true",
                "cluster.num_gpus=576",
                f"output_dir={big}",
            )  # fmt: skip
        ),
    }
    folders = {name: Path(summary["run_dir"]) for name, summary in folders.items()}
    # Killed mid-run: no summary.json, and a metrics line cut short.
    crashed = folders["crashed"] = debug / "20990101-000000_crashed_000000"
    shutil.copytree(folders["short"], crashed)
    (crashed / "summary.json").unlink()
    with open(crashed / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "loss": 7.')
    # Crashed before its first step: config.yaml only.
    early = folders["early"] = debug / "20990101-000001_early_000000"
    early.mkdir()
    shutil.copy(folders["short"] / "config.yaml", early)
    broken = folders["broken"] = debug / "20990101-000002_broken_000000"
    shutil.copytree(folders["short"], broken)
    (broken / "summary.json").write_text('{"valid": tr')
    # Hydra's and submitit's hidden folders are not runs.
    (debug / ".submitit" / "x").mkdir(parents=True)
    (debug / ".submitit" / "x" / "config.yaml").write_text("a: 1\n")
    cfg = compose_cfg("+experiment=llama31_405b_576gpu_h100_fp8")
    folders["h100"] = big / "20990101-000000_llama31_405b_fp8_000000"
    write_fabricated_405b(folders["h100"], cfg, [30.0, 12.0, 11.5, 11.0])
    return root, folders


def run_main(args: list[str], capsys) -> tuple[int, str, str]:
    code = report.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def table_rows(markdown: str) -> dict[str, dict[str, str]]:
    """The markdown table as {run: {column: cell}}."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split(" | ")]
    rows = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[1:]]
    return {row[0]: dict(zip(header, row, strict=True)) for row in rows}


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_every_run_folder_is_listed_sorted_and_labelled(results, capsys):
    root, folders = results
    code, out, _ = run_main([root], capsys)
    assert code == 0
    rows = table_rows(out)
    assert set(rows) == {p.name for p in folders.values()}
    # 405B before the debug model; within a model, GPU count (unknown last) then run id (time).
    order = list(rows)
    assert order[:2] == [folders["dry"].name, folders["h100"].name]
    assert order[2:-1] == sorted(order[2:-1]) and order[-1] == folders["early"].name
    assert out.startswith(f"{len(folders)} run(s): 1 dry run, 3 valid, 1 invalid, 3 incomplete")
    assert rows[folders["short"].name]["valid"] == "yes"
    assert rows[folders["dry"].name]["valid"] == "dry run (plan.json)"
    # Nothing measured: the dry run shows what its plan.json found published for it.
    assert rows[folders["dry"].name]["vs baseline"] == "published: 11.24 s/step"
    plan = json.loads((folders["dry"] / "plan.json").read_text())
    planned = f"{plan['memory_gib']['total']:.1f} planned (fits)"
    assert rows[folders["dry"].name]["memory (GiB)"] == planned
    assert rows[folders["nan"].name]["valid"].startswith("no: invalid: non-finite grad_norm=nan")
    crashed = rows[folders["crashed"].name]["valid"]
    assert crashed.startswith("no: incomplete: no summary.json; metrics.jsonl: 1 unreadable line")
    assert "crashed, killed or still running; 3 step(s) in metrics.jsonl" in crashed
    assert "no summary.json" in rows[folders["early"].name]["valid"]
    assert "summary.json unreadable (JSONDecodeError)" in rows[folders["broken"].name]["valid"]


def test_table_cells_come_from_the_run_files(results, capsys):
    root, folders = results
    rows = table_rows(run_main([root], capsys)[1])
    summary = json.loads((folders["short"] / "summary.json").read_text())
    short = rows[folders["short"].name]
    assert (short["model"], short["dtype"], short["backend"]) == ("llama31_debug", "fp32", "native")
    assert (short["GPUs"], short["tp/pp/cp/vp/dp"], short["GBS"]) == ("1 cpu", "1/1/1/1/1", "8")
    assert short["step time last (s)"] == f"{summary['step_time_s_last']:.3f}"
    mean, std = summary["step_time_s_mean"], summary["step_time_s_std"]
    assert short["step time mean ± std (s)"] == f"{mean:.3f} ± {std:.3f}"
    assert short["tokens/s/GPU"] == f"{summary['tokens_per_s_per_gpu']:,.0f}"
    assert short["MFU"] == "n/a"  # no peak for a CPU
    assert short["final loss"] == f"{summary['loss_last']:.4f}"
    assert short["vs baseline"] == ""
    assert rows[folders["gbs16"].name]["GBS"] == "16"
    # A crashed run shows its last logged step, never a steady-state mean it did not reach.
    crashed = rows[folders["crashed"].name]
    assert crashed["step time last (s)"] == short["step time last (s)"]
    assert crashed["step time mean ± std (s)"] == ""
    dry = rows[folders["dry"].name]
    assert (dry["GPUs"], dry["tp/pp/cp/vp/dp"], dry["GBS"]) == ("576 h100_sxm", "8/9/2/7/4", "252")
    assert dry["dtype"] == "fp8 (tensorwise)" and dry["tokens/s"] == ""


def test_405b_fp8_on_576_h100_is_compared_with_its_baseline_row(results, capsys):
    root, folders = results
    code, out, _ = run_main([root / "0.1.0/fp8"], capsys)
    row = table_rows(out)[folders["h100"].name]
    # Seed 003 names no FP8 scaling recipe: the run's (tensorwise) is named as possibly differing.
    fp8_note = "setup differs: fp8_recipe=tensorwise (baseline nemo_24.09_dtype_fp8)"
    assert row["vs baseline"] == f"{RATIO_576:.2f}x ({fp8_note})"
    assert row["MFU"].endswith("%") and row["days to 1T tokens"] != ""
    assert "- baseline: NVIDIA DGX Cloud benchmarking recipe, Llama 3.1 405B" in out


def test_csv_has_every_column_with_raw_values(results, capsys, tmp_path):
    root, folders = results
    out_csv = tmp_path / "sub" / "report.csv"
    assert run_main([root, "--csv", out_csv], capsys)[0] == 0
    with open(out_csv, newline="") as f:
        rows = {r["run"]: r for r in csv.DictReader(f)}
    assert len(rows) == len(folders)
    expected = {"run", "status", "valid", "model", "dtype", "backend", "gpu_type", "num_gpus"}
    expected |= {"tp", "pp", "cp", "vp", "dp", "global_batch_size", "step_time_s_last"}
    expected |= {"step_time_s_mean", "step_time_s_std", "tokens_per_s", "tokens_per_s_per_gpu"}
    expected |= {"tflops_per_gpu", "mfu", "memory_gib_peak", "loss_last", "proxy", "path"}
    expected |= {"time_to_train_1t_days", "ratio_tokens_per_s", "baseline_note"}
    assert expected <= set(next(iter(rows.values())))
    summary = json.loads((folders["short"] / "summary.json").read_text())
    short = rows[folders["short"].name]
    for key in ("step_time_s_last", "tokens_per_s", "tflops_per_gpu", "loss_last"):
        assert float(short[key]) == summary[key]
    assert (short["status"], short["mfu"], short["path"]) == ("valid", "", str(folders["short"]))
    assert short["baseline_note"].startswith("no baseline for model=llama31_debug")
    big = rows[folders["h100"].name]
    assert float(big["ratio_tokens_per_s"]) == pytest.approx(RATIO_576)
    assert float(big["ratio_step_time_s"]) == pytest.approx(11.0 / 11.24)
    assert float(big["baseline_tokens_per_s"]) == 183664 and big["gpu_type"] == "h100_sxm"
    assert rows[folders["crashed"].name]["status"] == "incomplete"
    dry = rows[folders["dry"].name]
    assert dry["status"] == "dry run" and float(dry["baseline_step_time_s"]) == 11.24
    plan = json.loads((folders["dry"] / "plan.json").read_text())
    assert float(dry["planned_memory_gib"]) == plan["memory_gib"]["total"]
    assert dry["planned_fits"] == "True" and dry["memory_gib_peak"] == ""
    assert float(dry["planned_pipeline_bubble"]) == plan["pipeline_bubble"]
    assert short["planned_memory_gib"] == short["planned_fits"] == ""  # a training run: no plan
    assert dry["ratio_tokens_per_s"] == "" and dry["baseline_note"].startswith(
        "dry run: nothing measured; setup differs: fp8_recipe=tensorwise"
    )


def test_markdown_file_holds_what_stdout_shows(results, capsys, tmp_path):
    root, _ = results
    code, out, _ = run_main([root, "--markdown", tmp_path / "report.md"], capsys)
    assert code == 0 and (tmp_path / "report.md").read_text() == out


def test_plots_are_png_files(results, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    root, _ = results
    code, _, err = run_main([root, "--plots", tmp_path / "plots"], capsys)
    assert code == 0
    for name in report.PLOT_FILES:
        path = tmp_path / "plots" / name
        assert path.read_bytes().startswith(PNG) and str(path) in err


def test_plots_without_matplotlib_name_the_extra(results, capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    code, out, err = run_main([results[0], "--plots", tmp_path], capsys)
    assert code == 2 and out == ""
    assert "--plots needs matplotlib" in err and "pip install 'recipes[report]'" in err


def test_a_run_folder_itself_is_a_valid_path(results, capsys):
    _, folders = results
    code, out, _ = run_main([folders["short"], folders["short"]], capsys)
    assert code == 0 and list(table_rows(out)) == [folders["short"].name]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "missing", "does not exist; pass recipes-train's output_dir"),
        (lambda tmp: tmp / "summary.json", "is a file, not a folder; pass the run folder"),
        (lambda tmp: tmp / "empty", "holds no run folder (a folder with summary.json"),
    ],
)
def test_bad_paths_exit_2_naming_path_rule_and_fix(make, message, tmp_path, capsys, results):
    (tmp_path / "summary.json").write_text("{}")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    path = make(tmp_path)
    code, out, err = run_main([results[0], path], capsys)
    assert code == 2 and out == ""
    assert f"recipes-report: error: PATH {str(path)!r} " in err and message in err


@pytest.mark.parametrize("option", ["--csv", "--markdown", "--plots"])
def test_outputs_inside_a_run_folder_are_refused(option, results, capsys):
    root, folders = results
    before = digest(root)
    target = folders["short"] / "report.out"
    code, out, err = run_main([root, option, target], capsys)
    assert code == 2 and out == ""
    assert f"{option} {str(target)!r} is inside run folder" in err and "never written" in err
    assert digest(root) == before


@pytest.mark.parametrize(
    ("option", "make", "message"),
    [
        ("--csv", lambda tmp: tmp, "is a folder; --csv takes a file name: e.g. "),
        ("--markdown", lambda tmp: tmp, "is a folder; --markdown takes a file name"),
        ("--plots", lambda tmp: tmp / "a_file", "is a file; --plots takes a folder"),
        ("--csv", lambda tmp: tmp / "a_file" / "r.csv", "is a file, not a folder; write it"),
        ("--csv", lambda tmp: tmp / "a_file", "a_file' exists and recipes-report never overwrites"),
        ("--markdown", lambda tmp: tmp / "a_file", "exists and recipes-report never overwrites"),
    ],
)
def test_unwritable_outputs_exit_2_before_the_table(
    option, make, message, results, capsys, tmp_path
):
    (tmp_path / "a_file").write_text("kept")
    code, out, err = run_main([results[0], option, make(tmp_path)], capsys)
    assert code == 2 and out == ""
    assert f"recipes-report: error: {option} " in err and message in err
    assert (tmp_path / "a_file").read_text() == "kept"


def test_plots_never_overwrite_and_unwritable_outputs_exit_2(results, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "loss.png").write_text("kept")
    code, out, err = run_main([results[0], "--plots", tmp_path / "plots"], capsys)
    assert code == 2 and out == "" and "loss.png' exists and recipes-report never" in err
    assert (tmp_path / "plots" / "loss.png").read_text() == "kept"
    # /proc takes no new files, even from root: exit 2 naming the path, not a traceback.
    code, _, err = run_main([results[0], "--csv", "/proc/report.csv"], capsys)
    assert code == 2 and "'/proc/report.csv' cannot be" in err and "write it elsewhere" in err


def test_mistyped_values_are_named_not_fatal(results, capsys, tmp_path):
    """A summary.json or metrics.jsonl with text where a figure belongs (edited by hand, written
    by another tool): the run is still listed, the value is left out and named."""
    _, folders = results
    odd = tmp_path / "odd"
    shutil.copytree(folders["short"], odd)
    summary = json.loads((odd / "summary.json").read_text())
    (odd / "summary.json").write_text(
        json.dumps(summary | {"step_time_s_last": "fast", "model": 5, "valid": "yes"})
    )
    with open(odd / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 4, "loss": "x"}) + "\n")
    code, out, _ = run_main([odd, "--csv", tmp_path / "r.csv"], capsys)
    assert code == 0
    row = table_rows(out)["odd"]
    assert row["step time last (s)"] == "" and row["model"] == "llama31_debug"  # config.yaml
    assert row["valid"] == "no: invalid: summary.json: valid='yes' is not true or false"
    (csv_row,) = csv.DictReader((tmp_path / "r.csv").open())
    assert "summary.json: step_time_s_last='fast' is not a number" in csv_row["problems"]
    assert "summary.json: model=5 is not text" in csv_row["problems"]
    assert "metrics.jsonl: 1 unreadable line(s)" in csv_row["problems"]


def test_metrics_lines_without_a_step_number_count_as_unreadable(tmp_path):
    """A metrics.jsonl line whose step is text, a bool or missing, or that is no JSON object, is
    counted as unreadable like a line with text where a figure belongs, not dropped silently."""
    folder = tmp_path / "run"
    folder.mkdir()
    good = {"step": 1, "loss": 8.0, "step_time_s": 0.5}
    odd = [{"step": "2", "loss": 7.9}, {"step": True, "loss": 7.8}, {"loss": 7.7}, [3, 7.6]]
    lines = [good, *odd, {"step": 2, "loss": 7.5, "step_time_s": 0.4}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    loaded = report.load_run(folder)
    assert [r["step"] for r in loaded.records] == [1, 2]
    assert loaded.problems == [f"metrics.jsonl: {len(odd)} unreadable line(s)"]


def test_report_never_writes_into_run_folders(results, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    root, _ = results
    before = digest(root)
    outputs = ["--csv", tmp_path / "r.csv", "--markdown", tmp_path / "r.md"]
    assert run_main([root, *outputs, "--plots", tmp_path / "p"], capsys)[0] == 0
    assert digest(root) == before


def test_real_run_summary_carries_a_null_baseline_with_the_reason(results):
    _, folders = results
    summary = json.loads((folders["short"] / "summary.json").read_text())
    assert summary["baseline"] is None
    assert summary["baseline_note"].startswith("no baseline for model=llama31_debug")


def test_command_line_entry_point(results):
    out = subprocess.run(
        [sys.executable, "-m", "recipes.results.report", str(results[0] / "nope")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "does not exist" in out.stderr
    usage = subprocess.run(
        [sys.executable, "-m", "recipes.results.report"], capture_output=True, text=True
    )
    assert usage.returncode == 2 and "PATH" in usage.stderr


def test_a_run_without_summary_shows_its_last_step_not_run_under_the_profiler():
    step = {"tokens_per_s": 100.0, "tokens_per_s_per_gpu": 50.0, "memory_gib": 1.0}
    records = [
        {"step": 1, "loss": 9.0, "step_time_s": 1.0, **step},
        {"step": 2, "loss": 8.0, "step_time_s": 1.1, **step, "tokens_per_s": 90.0},
        {"step": 3, "loss": 7.0, "step_time_s": 5.0, **step, "profiled": True},
    ]
    figures = report._figures_from_records(records)
    assert (figures["step_time_s_last"], figures["tokens_per_s"]) == (1.1, 90.0)
    assert (figures["steps"], figures["loss_last"]) == (3, 7.0)  # the loss is the last step's
