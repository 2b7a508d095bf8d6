"""End-to-end CPU runs of ``recipes-train``: loss falls, the run folder is complete and new."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from recipes.config import conf_dir, resolve_auto, validate
from recipes.distributed import RENDEZVOUS_VARS
from recipes.errors import ConfigError
from recipes.optim import lr_factor
from recipes.plan.estimate import memory_per_rank
from recipes.results import report
from recipes.train import check_command_line, run

SUMMARY_FIELDS = {
    "valid",
    "step_time_s_last",
    "step_time_s_mean",
    "tokens_per_s",
    "tokens_per_s_per_gpu",
    "tflops_per_gpu",
    "mfu",
    "time_to_train_1t_days",
    "flops_convention",
}
STEP_FIELDS = {
    "step",
    "loss",
    "grad_norm",
    "step_time_s",
    "tokens_per_s",
    "tflops_per_gpu",
    "mfu",
    "memory_gib",
}


def folder_digest(path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, compose_cfg):
    out = tmp_path_factory.mktemp("results")
    cfg = compose_cfg("trainer.max_steps=12", f"output_dir={out}")
    return out, run(cfg)


def test_short_cpu_run_lowers_the_loss(first_run):
    _, summary = first_run
    assert summary["valid"] is True
    assert summary["steps"] == 12
    assert summary["loss_last"] < summary["loss_first"] - 1.0


def test_run_folder_holds_config_metrics_summary_manifest_log(first_run):
    _, summary = first_run
    run_dir = Path(summary["run_dir"])
    assert {p.name for p in run_dir.iterdir()} == {
        "config.yaml",
        "metrics.jsonl",
        "summary.json",
        "manifest.json",
        "train.log",
    }
    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved.keys() >= SUMMARY_FIELDS
    assert saved["flops_convention"] == "dgxc"
    assert saved["mfu"] is None and "cluster.peak_tflops" in saved["peak_note"]
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 13))
    assert all(r.keys() >= STEP_FIELDS for r in lines)
    assert saved["step_time_s_last"] == lines[-1]["step_time_s"]
    # The loop time holds the step and what runs between steps, and the steps tile the loop.
    assert all(r["loop_time_s"] > r["step_time_s"] > 0 for r in lines)
    between = sum(r["loop_time_s"] - r["step_time_s"] for r in lines)
    assert between < 0.5 * sum(r["step_time_s"] for r in lines)
    assert saved["steady_state_steps"] == 10  # the two timing-warmup steps are left out
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    # Each step's lr is the one it trained with (warmup from lr/3), not the next step's.
    t = config["trainer"]
    schedule = {k: t[k] for k in ("warmup_steps", "max_steps", "min_lr_ratio")}
    used = [t["lr"] * lr_factor(i, **schedule) for i in range(12)]
    assert [r["lr"] for r in lines] == pytest.approx(used)
    assert lines[0]["lr"] == pytest.approx(t["lr"] / 3)
    assert (config["model"]["name"], config["dtype"]["name"]) == ("llama31_debug", "fp32")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["versions"]["torch"] and manifest["accelerator"]["device_name"] == "cpu"
    log_text = (run_dir / "train.log").read_text()
    assert "step:   12" in log_text
    # Seed 003 reads step times with `grep train_step_timing`: NeMo's name, the same figure.
    timing = [line for line in log_text.splitlines() if "train_step_timing in s: " in line]
    assert len(timing) == 12 and f"in s: {lines[-1]['step_time_s']:.3f}" in timing[-1]
    assert "mfu(bf16 peak)" not in log_text  # an fp32 run has no second peak


LOSS_BASELINE = Path(__file__).parents[1] / "assets" / "losses" / "llama31_debug_cpu_fp32.json"


def test_losses_match_the_recorded_baseline(first_run):
    """The embedded default's 12 losses against those recorded (as torchtitan keeps
    tests/assets/losses): a change to the model, its init, the data or the optimizer shows here
    even when the loss still falls. Float noise across CPUs stays far below the tolerance; another
    torch minor version does not (2.11's losses differ by up to 1%, from the first step on), so
    the file names the torch it was recorded on (the one CI installs) and other versions skip.
    After an intended change: RECIPES_WRITE_LOSS_BASELINE=1 rewrites the file."""
    run_dir = Path(first_run[1]["run_dir"])
    losses = [json.loads(x)["loss"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    torch_version = ".".join(torch.__version__.split(".")[:2])
    if os.environ.get("RECIPES_WRITE_LOSS_BASELINE") == "1":
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        record = {"config": "recipes-train trainer.max_steps=12", "seed": config["seed"]}
        record["torch"] = torch_version
        LOSS_BASELINE.write_text(json.dumps(record | {"losses": losses}, indent=2) + "\n")
    recorded = json.loads(LOSS_BASELINE.read_text())
    if recorded["torch"] != torch_version:
        pytest.skip(f"losses recorded on torch {recorded['torch']}, this is {torch.__version__}")
    assert losses == pytest.approx(recorded["losses"], rel=1e-5)


def test_an_fp8_step_line_shows_mfu_against_both_peaks():
    from recipes.callbacks.benchmark import format_line

    record = {
        "step": 3,
        "loss": 7.5,
        "grad_norm": 1.25,
        "memory_gib": 61.2,
        "memory_pct": 77.4,
        "step_time_s": 1.5,
        "tokens_per_s_per_gpu": 5461.3,
        "tflops_per_gpu": 1000.0,
        "mfu": 0.2528,
        "mfu_vs_bf16_peak": 0.5056,
    }
    line = format_line(record)
    assert line.endswith("tflops: 1,000.00  mfu: 25.28%  mfu(bf16 peak): 50.56%")
    assert "train_step_timing in s: 1.500  tps: 5,461" in line


def test_second_run_gets_a_new_folder_and_leaves_the_first_alone(first_run, compose_cfg):
    out, summary = first_run
    first = Path(summary["run_dir"])
    before = folder_digest(first)
    second = run(
        compose_cfg("trainer.max_steps=3", "trainer.timing_warmup_steps=1", f"output_dir={out}")
    )
    assert Path(second["run_dir"]) != first
    assert folder_digest(first) == before
    assert len(list(out.iterdir())) == 2


def test_same_seed_same_losses(tmp_path, compose_cfg):
    def losses(seed):
        cfg = compose_cfg(
            "trainer.max_steps=3",
            "trainer.timing_warmup_steps=1",
            f"seed={seed}",
            f"output_dir={tmp_path}",
        )
        path = run(cfg)["run_dir"]
        return [
            json.loads(x)["loss"] for x in (Path(path) / "metrics.jsonl").read_text().splitlines()
        ]

    assert losses(7) == losses(7)
    assert losses(7) != losses(8)


def test_a_proxy_run_gets_no_time_to_train(first_run, tmp_path, compose_cfg):
    """A proxy has fewer layers than its model: its speed is not the model's (seed 003)."""
    cfg = compose_cfg("trainer.max_steps=3", "proxy=true", f"output_dir={tmp_path}")
    summary = run(cfg)
    assert summary["proxy"] is True and summary["time_to_train_1t_days"] is None
    assert summary["tokens_per_s"] > 0
    assert first_run[1]["time_to_train_1t_days"] > 0  # the same model, not a proxy


def test_nan_marks_the_run_invalid_and_stops_it(tmp_path, compose_cfg):
    cfg = compose_cfg("trainer.lr=1e30", "trainer.warmup_steps=0", f"output_dir={tmp_path}")
    summary = run(cfg)
    assert summary["valid"] is False
    assert "non-finite grad_norm=nan" in summary["invalid_reason"]
    assert summary["steps"] < cfg.trainer.max_steps


def test_output_dir_must_be_a_results_folder_not_a_run_folder_or_a_file(first_run, compose_cfg):
    out, summary = first_run
    inside = Path(summary["run_dir"]) / "more"
    with pytest.raises(ConfigError, match=rf"output_dir='{inside}' lies inside the run folder "):
        run(compose_cfg(f"output_dir={inside}"))
    assert not inside.exists()
    a_file = Path(summary["run_dir"]) / "summary.json"
    with pytest.raises(ConfigError, match=r"summary.json' is a file; output_dir must be a folder"):
        run(compose_cfg(f"output_dir={a_file}"))
    with pytest.raises(ConfigError, match=r"lies under '.*summary.json', a file"):
        run(compose_cfg(f"output_dir={a_file}/sub"))


def test_output_dir_that_cannot_be_written_is_refused(tmp_path, compose_cfg, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    access = os.access  # root may write anywhere: pretend this folder is another user's
    monkeypatch.setattr(
        os, "access", lambda path, mode: Path(path) != locked and access(path, mode)
    )
    with pytest.raises(ConfigError, match=r"output_dir='.*/locked/results' cannot be created: "):
        run(compose_cfg(f"output_dir={locked}/results", "dry_run=true"))
    assert not any(locked.iterdir())
    monkeypatch.setattr(os, "access", access)
    # An empty output_dir (output_dir=$UNSET) would put run folders in the current folder.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"output_dir='' names no folder .*output_dir=results"):
        run(compose_cfg("output_dir=", "dry_run=true"))
    # /proc takes no new folders, whoever asks (root too, whom access() lets write anywhere):
    # refused by the checks, before any process group, and no probe is left behind.
    with pytest.raises(ConfigError, match=r"output_dir='/proc/recipes-results' cannot be created"):
        check_command_line(["output_dir=/proc/recipes-results"], 1)
    check_command_line([f"output_dir={tmp_path}/results"], 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["locked"]


@pytest.fixture
def collections():
    """Python's garbage collections while this test runs: (generation, automatic on?) each."""
    seen: list[tuple[int, bool]] = []

    def record(phase, info):
        if phase == "start":
            seen.append((info["generation"], gc.isenabled()))

    gc.callbacks.append(record)
    yield seen
    gc.callbacks.remove(record)


@pytest.mark.parametrize("every, scheduled", [(2, [1, 1, 1]), (0, [])])
def test_garbage_collection_runs_on_the_step_schedule(
    tmp_path, compose_cfg, collections, every, scheduled
):
    cfg = compose_cfg(
        "trainer.max_steps=6", f"trainer.gc_every_n_steps={every}", f"output_dir={tmp_path}"
    )
    assert run(cfg)["valid"]
    # While automatic collection is off, the only collections are the scheduled young-generation
    # ones, after steps 2, 4 and 6; with 0 it is never turned off. Either way it is on after.
    assert [gen for gen, automatic in collections if not automatic] == scheduled
    assert gc.isenabled()


def test_dry_run_plans_without_training(tmp_path, compose_cfg):
    cfg = compose_cfg(
        "model=llama31_8b",
        "dry_run=true",
        "cluster.gpu_type=h100_sxm",
        "trainer.seq_len=8192",
        f"output_dir={tmp_path}",
    )
    result = run(cfg)
    run_dir = Path(result["run_dir"])
    assert {p.name for p in run_dir.iterdir()} == {"config.yaml", "manifest.json", "plan.json"}
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["dtype"] == "bf16" and plan["params_total"] == 8_030_261_248
    assert plan["params_per_shard"] == plan["params_total"]  # one GPU: no TP or PP shard
    assert plan["fits"] is False  # 8B with AdamW states on one 80 GiB GPU does not fit
    assert plan["fitting_layouts"] == []  # nor does any recomputation make it fit
    assert plan["step_time_s_at_mfu"]["0.40"] == pytest.approx(
        plan["model_flops_per_step"]["dgxc"] / (989.4e12 * 0.4)
    )
    # Without a GPU here or named, the plan is this CPU's: it says how to plan for a GPU.
    cpu = json.loads(
        (
            Path(run(compose_cfg("dry_run=true", f"output_dir={tmp_path}"))["run_dir"])
            / "plan.json"
        ).read_text()
    )
    assert cpu["dtype"] == "fp32" and cpu["peak"] is None and cpu["step_time_s_at_mfu"] == {}
    assert (
        "no GPU named to plan for" in cpu["note"]
        and "cluster.gpu_type=<one of h100_sxm" in cpu["note"]
    )


def planned_memory(compose_cfg, world: int, *overrides: str) -> dict[str, float]:
    cfg = compose_cfg("model=llama31_8b", "trainer.seq_len=8192", *overrides)
    resolve_auto(cfg, cuda_available=True)
    return memory_per_rank(cfg, validate(cfg, world_size=world))


def test_dry_run_memory_follows_checkpointing_cp_sharding_and_the_backend(compose_cfg):
    """Checkpointing keeps fewer activations (full: one block input a layer, plus the layer
    being recomputed); native FSDP shards states over dp_shard x cp; Megatron's distributed
    optimizer keeps bf16 weights and fp32 gradients whole and shards 12 bytes a parameter."""
    ac = {
        mode: planned_memory(compose_cfg, 8, f"backend.activation_checkpointing={mode}")
        for mode in ("none", "selective", "full")
    }
    assert ac["none"]["activations"] > ac["selective"]["activations"] > ac["full"]["activations"]
    assert ac["none"]["model_states"] == ac["full"]["model_states"]
    # 8B (32 layers, dim 4096): full keeps 32 block inputs + one whole layer, x 8192 tokens, bf16
    whole_layer = 4 * 4096 + 2 * 4096 + 2 * 1024 + 4 * 14336
    assert ac["full"]["activations"] == pytest.approx((32 * 4096 + whole_layer) * 8192 * 2 / 2**30)

    fsdp8 = planned_memory(compose_cfg, 8)
    cp2 = planned_memory(compose_cfg, 8, "parallelism.cp=2")
    assert cp2["model_states"] == pytest.approx(fsdp8["model_states"])  # 4 x 2 = 8 shards
    assert cp2["activations"] == pytest.approx(fsdp8["activations"] / 2)

    params = 8_030_261_248
    megatron = planned_memory(compose_cfg, 8, "backend=megatron", "dtype=bf16")
    assert megatron["model_states"] == pytest.approx(params * (6 + 12 / 8) / 2**30)
    assert megatron["gathered_params"] == 0


def test_dry_run_activations_follow_the_pipeline_schedule_and_the_backends_swiglu(compose_cfg):
    """The first pipeline stage holds pp micro-batches under 1F1B, pp + (pp - 1) / vp under
    interleaved 1F1B (its warm-up), every one under GPipe; Megatron's fused bias-SwiGLU keeps
    three FFN-wide tensors a token where eager PyTorch keeps four."""
    pp4 = ("parallelism.pp=4", "trainer.global_batch_size=16")  # 8 ranks: dp 2, 8 micro-batches

    def activations(*overrides: str) -> float:
        return planned_memory(compose_cfg, 8, "dtype=bf16", *pp4, *overrides)["activations"]

    one_f_one_b = activations()
    assert activations("parallelism.pp_schedule=gpipe") == pytest.approx(one_f_one_b * 8 / 4)
    interleaved = activations("parallelism.vp=2")  # 32 layers: 8 a stage, two chunks of 4
    assert interleaved == pytest.approx(one_f_one_b * (4 + 3 / 2) / 4)
    # Fewer micro-batches than the warm-up wants: all of them, no more.
    few = ("trainer.global_batch_size=8",)  # 4 micro-batches
    assert activations("parallelism.vp=2", *few) == pytest.approx(one_f_one_b)

    native = planned_memory(compose_cfg, 8, "dtype=bf16")["activations"]
    megatron = planned_memory(compose_cfg, 8, "dtype=bf16", "backend=megatron")["activations"]
    per_token = {f: 6 * 4096 + 2 * 1024 + f * 14336 for f in (3, 4)}
    assert megatron / native == pytest.approx(per_token[3] / per_token[4])


def launcher_free_env() -> dict[str, str]:
    """This process's environment without what an earlier in-process run's process group left
    (MASTER_PORT would make the child bind a port this process still holds)."""
    return {k: v for k, v in os.environ.items() if k not in RENDEZVOUS_VARS}


def cli(*args: str, cwd, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "recipes.train", *args],
        cwd=cwd,
        env={**launcher_free_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_bad_value_exits_with_the_rule_and_writes_nothing(tmp_path):
    # As under torchrun with 3 processes: the layout is judged before any process group starts.
    proc = cli(
        "parallelism.tp=3", f"output_dir={tmp_path}/out", cwd=tmp_path, env={"WORLD_SIZE": "3"}
    )
    assert proc.returncode == 2
    assert "parallelism.tp=3 does not divide model.n_heads=8; use tp in {1, 2}" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("override", ["trainer.max_step=3", "trainer.max_steps=abc", "model=x"])
def test_cli_hydra_refusals_exit_2_too(tmp_path, override):
    proc = cli(override, f"output_dir={tmp_path}/out", cwd=tmp_path)
    assert proc.returncode == 2
    assert override.split("=")[0 if override != "model=x" else 1] in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_dry_run_on_several_processes_writes_one_plan(tmp_path):
    for rank in ("1", "0"):
        proc = cli(
            "dry_run=true",
            "model=llama31_8b",
            "cluster.num_gpus=8",
            f"output_dir={tmp_path}",
            cwd=tmp_path,
            env={"RANK": rank},
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    (plan,) = tmp_path.glob("*/plan.json")


def test_cli_local_multirun_sweep(tmp_path):
    """A job that diverges is marked invalid and the sweep goes on to the next one."""
    proc = cli(
        "-m",
        "trainer.lr=1e30,1e-3,2e-3",
        "trainer.warmup_steps=0",
        "trainer.max_steps=3",
        "trainer.timing_warmup_steps=1",
        f"output_dir={tmp_path}/out",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = sorted(p for p in (tmp_path / "out").iterdir() if p.name != "multirun")
    assert len(runs) == 3
    valid = {
        yaml.safe_load((p / "config.yaml").read_text())["trainer"]["lr"]: json.loads(
            (p / "summary.json").read_text()
        )["valid"]
        for p in runs
    }
    assert valid == {1e30: False, 1e-3: True, 2e-3: True}


def test_a_multirun_of_dry_runs_compares_layouts_in_one_report(tmp_path, capsys):
    proc = cli(
        "-m",
        "dry_run=true",
        "model=llama31_405b",
        "backend=megatron",
        "dtype=bf16",
        "cluster.num_gpus=576",
        "cluster.gpu_type=h100_sxm",
        "trainer.seq_len=8192",
        "trainer.global_batch_size=576",
        "parallelism.tp=8",
        "parallelism.sequence_parallel=true",
        "parallelism.cp=1,2",
        "parallelism.pp=9",
        f"output_dir={tmp_path}/plans",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report.main([str(tmp_path / "plans")]) == 0
    table = capsys.readouterr().out
    planned = {}
    for folder in (tmp_path / "plans").glob("*_dryrun_*"):
        plan = json.loads((folder / "plan.json").read_text())
        planned[plan["layout"]["cp"]] = plan
        fits = "fits" if plan["fits"] else "does not fit"
        assert f"| {plan['memory_gib']['total']:.1f} planned ({fits}) |" in table
    assert set(planned) == {1, 2}
    # CP shards each sequence's activations: cp=2 fits where cp=1 does not.
    assert planned[2]["fits"] is True and planned[1]["fits"] is False


def test_cli_multirun_checks_every_job_before_the_first_runs(tmp_path):
    proc = cli("-m", "trainer.max_steps=3,0", f"output_dir={tmp_path}/out", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "configuration error: sweep job #1 of 2 (trainer.max_steps=0 output_dir=" in proc.stderr
    assert "trainer.max_steps=0 must be >= 1" in proc.stderr and "no job has run" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_slurm_sweep_refused_for_its_process_count_names_the_launcher_keys(tmp_path):
    """A submitit job gets nodes x tasks_per_node processes (1 x 1 by default), not this
    process's: the refusal says which keys give it more. Nothing reaches Slurm."""
    proc = cli(
        "-m", "cluster=slurm", "parallelism.tp=1,2", f"output_dir={tmp_path}/out", cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "sweep job #1 of 2 (cluster=slurm parallelism.tp=2" in proc.stderr
    assert (
        "(each Slurm job of this sweep runs hydra.launcher.nodes=1 x "
        "hydra.launcher.tasks_per_node=1 processes: set those to launch more)"
    ) in proc.stderr
    assert not (tmp_path / "out").exists()


def test_cli_exit_code_says_whether_the_run_is_valid(tmp_path):
    """0 for a valid run, 1 for a run marked invalid (here a diverging loss), 143 when Slurm
    (or anyone) terminates it with SIGTERM, whose step the summary names."""
    proc = cli("trainer.lr=1e30", "trainer.warmup_steps=0", f"output_dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "non-finite" in proc.stdout and "Traceback" not in proc.stderr

    cmd = [sys.executable, "-m", "recipes.train", "trainer.max_steps=500"]
    cmd += [f"output_dir={tmp_path}/term"]
    child = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=launcher_free_env()
    )
    lines = []
    for line in child.stdout:
        lines.append(line)
        if "step:    2 " in line:
            child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=120) == 128 + signal.SIGTERM, "".join(lines)
    (folder,) = (tmp_path / "term").iterdir()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["valid"] is False
    assert summary["invalid_reason"].startswith("terminated by SIGTERM after step ")


NAMED_LAYOUTS = [
    ("cp2", ("model=llama31_8b", "cluster.num_gpus=8"), {"dp_shard": 4, "cp": 2}),
    ("tp8_sp", ("model=llama31_70b", "cluster.num_gpus=64"), {"dp_shard": 8, "tp": 8}),
    (
        "tp4_pp4_vp5_cp2_sp",
        ("model=llama31_70b", "backend=megatron", "cluster.num_gpus=64"),
        {"dp_shard": 2, "tp": 4, "pp": 4, "vp": 5, "cp": 2},
    ),
    (
        "tp8_pp9_vp7_cp2_sp",
        ("model=llama31_405b", "backend=megatron", "cluster.num_gpus=576"),
        {"dp_shard": 4, "tp": 8, "pp": 9, "vp": 7, "cp": 2},
    ),
]


def test_every_named_layout_is_planned_below():
    named = {p.stem for p in (conf_dir() / "parallelism").glob("*.yaml")} - {"auto"}
    assert named == {case[0] for case in NAMED_LAYOUTS}


@pytest.mark.parametrize("layout, overrides, degrees", NAMED_LAYOUTS)
def test_named_layouts_plan_their_model_at_their_scale(
    tmp_path, compose_cfg, layout, overrides, degrees
):
    cfg = compose_cfg(
        f"parallelism={layout}",
        *overrides,
        "dry_run=true",
        "cluster.gpu_type=h100_sxm",
        "trainer.seq_len=8192",
        "trainer.global_batch_size=504",
        f"output_dir={tmp_path}",
    )
    plan = json.loads((Path(run(cfg)["run_dir"]) / "plan.json").read_text())
    assert {k: plan["layout"][k] for k in degrees} == degrees
    assert plan["layout"]["sequence_parallel"] is layout.endswith("_sp")
