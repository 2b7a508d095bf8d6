"""setup.sh + launch.sh on a real 2-node Slurm cluster (CPU ranks, gloo), and Hydra sweeps
through the submitit launcher."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = str(ROOT / "launch.sh")
SHORT = ("--", "trainer.max_steps=4", "trainer.timing_warmup_steps=1")


def job_output(cwd: Path, job_id: str) -> str:
    (out,) = cwd.glob(f"slurm-*-{job_id}.out")
    return out.read_text()


def test_debug_job_trains_across_2_nodes_x_2_ranks(slurm, staged, tmp_path):
    env = {"DTYPE": "bf16", "MODEL_SIZE": "debug", "STAGE_PATH": str(staged)}
    job_id = slurm.sbatch("-N", "2", LAUNCH, *SHORT, env=env, cwd=tmp_path)
    info = slurm.wait(job_id)
    output = job_output(tmp_path, job_id)
    results = staged / "results" / "0.1.0" / "bf16" / "debug" / "4"
    log = results / f"log-recipes-llama31_{job_id}.out"
    assert info["JobState"] == "COMPLETED", output + (log.read_text() if log.exists() else "")
    assert "llama31_debug bf16 on 4 GPUs (2 node(s) x 2)" in output
    assert "--ntasks-per-node=2 --ntasks=4" in output

    (run_dir,) = [p for p in results.iterdir() if p.is_dir()]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["valid"] is True and summary["steps"] == 4
    assert (summary["num_gpus"], summary["proxy"], summary["model"]) == (4, False, "llama31_debug")
    assert summary["loss_last"] < summary["loss_first"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["nodes"] == ["n1", "n2"] and manifest["world_size"] == 4
    assert manifest["job_total_gpus"] == 4 and manifest["gpu"]["count_per_node"] == 2
    assert manifest["stage"]["runtime"] == "venv" and manifest["git_sha"]
    assert manifest["env"]["MASTER_ADDR"] == "n1"
    assert manifest["env"]["RECIPES_JOB_LOG"] == str(log)  # the job's log, from the run folder
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["cluster"]["name"] == "slurm"
    assert "step:    4" in log.read_text()  # every rank's output, one file per job


@pytest.mark.parametrize(
    "env, extra, message",
    [
        ({"MODEL_SIZE": "debug"}, (), "DTYPE is required, one of: bf16 fp8; e.g. DTYPE=bf16"),
        ({"DTYPE": "fp16", "MODEL_SIZE": "debug"}, (), "DTYPE='fp16' must be one of: bf16 fp8"),
        ({"DTYPE": "bf16", "MODEL_SIZE": "405b"}, (), "no configuration for 4 GPUs; supported: 32"),
        # A configuration the ranks would refuse: refused once, before srun starts them.
        (
            {"DTYPE": "bf16", "MODEL_SIZE": "debug"},
            ("--", "trainer.micro_batch_size=0"),
            "trainer.micro_batch_size=0 must be >= 1",
        ),
    ],
)
def test_bad_settings_fail_the_job_at_once(slurm, staged, tmp_path, env, extra, message):
    started = time.monotonic()
    env = {**env, "STAGE_PATH": str(staged)}
    job_id = slurm.sbatch("-N", "2", LAUNCH, *extra, env=env, cwd=tmp_path)
    info = slurm.wait(job_id, timeout=120)
    output = job_output(tmp_path, job_id)
    assert (info["JobState"], info["ExitCode"]) == ("FAILED", "2:0"), output
    assert message in output and "srun --nodes" not in output  # no rank started
    assert time.monotonic() - started < 60
    assert not (staged / "results" / "0.1.0" / "bf16" / "405b").exists()


def test_dry_run_plans_the_job_scale_in_one_task(slurm, staged, tmp_path):
    env = {
        "DTYPE": "bf16",
        "MODEL_SIZE": "8b",
        "STAGE_PATH": str(staged),
        "DRY_RUN": "1",
        "GPUS_PER_NODE": "4",
    }
    job_id = slurm.sbatch("-N", "2", LAUNCH, env=env, cwd=tmp_path)
    info = slurm.wait(job_id)
    output = job_output(tmp_path, job_id)
    assert info["JobState"] == "COMPLETED", output
    assert "--nodes=1 --ntasks-per-node=1 --ntasks=1" in output
    (run_dir,) = (staged / "results" / "0.1.0" / "bf16" / "8b" / "8").glob("*_dryrun_*")
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["layout"]["world_size"] == 8 and plan["layout"]["cp"] == 2


def test_hydra_multirun_through_submitit_completes_two_jobs(slurm, staged, tmp_path):
    python = staged / "venv" / "bin" / "python"
    cmd = [
        str(python),
        "-m",
        "recipes.train",
        "-m",
        "cluster=slurm",
        "trainer.lr=1e-3,2e-3",
        "trainer.max_steps=3",
        "trainer.timing_warmup_steps=1",
        f"output_dir={tmp_path}",
    ]
    proc = subprocess.run(
        cmd, env=slurm.env, cwd=tmp_path, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    runs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and p.name != "multirun")
    assert len(runs) == 2
    lrs = set()
    for run_dir in runs:
        assert json.loads((run_dir / "summary.json").read_text())["valid"] is True
        lrs.add(yaml.safe_load((run_dir / "config.yaml").read_text())["trainer"]["lr"])
    assert lrs == {1e-3, 2e-3}
    # One Slurm array job with a task per sweep point, each finished with its result. submitit
    # returns once a task has pickled its result, which can be before Slurm records the task
    # as ended: wait for the record.
    results = sorted(tmp_path.glob("multirun/*/.submitit/*_*/*_result.pkl"))
    assert len(results) == 2
    for result in results:
        assert slurm.wait(result.parent.name, timeout=120)["JobState"] == "COMPLETED"


def test_usr1_saves_and_stops_every_rank_and_a_resubmitted_job_resumes(slurm, staged, tmp_path):
    """Slurm's time-limit warning (USR1 to every task of the job step, as ``--signal=USR1@N``
    sends it): the 4 ranks agree, save one checkpoint and end the job cleanly; the same
    command submitted again with ``resume_from=auto`` goes on from that step."""
    env = {"DTYPE": "bf16", "MODEL_SIZE": "debug", "STAGE_PATH": str(staged)}
    auto = ("checkpoint.resume_from=auto", "trainer.timing_warmup_steps=1")
    results = staged / "results" / "0.1.0" / "bf16" / "debug" / "4" / "usr1"
    out = f"output_dir={results}"
    job_id = slurm.sbatch(
        "-N", "2", LAUNCH, "--", "trainer.max_steps=400", out, *auto, env=env, cwd=tmp_path
    )
    deadline = time.monotonic() + 300
    while (
        not list(results.glob("*/metrics.jsonl"))
        or len(next(results.glob("*/metrics.jsonl")).read_text().splitlines()) < 2
    ):
        assert time.monotonic() < deadline, job_output(tmp_path, job_id)
        time.sleep(0.5)
    subprocess.run(["scancel", "--signal=USR1", job_id], env=slurm.env, check=True, timeout=30)
    info = slurm.wait(job_id)
    assert info["JobState"] == "COMPLETED", job_output(tmp_path, job_id)

    (first,) = [p for p in results.iterdir() if p.is_dir()]
    summary = json.loads((first / "summary.json").read_text())
    assert summary["valid"] is False and "stopped on SIGUSR1" in summary["invalid_reason"]
    (checkpoint,) = (first / "checkpoint").iterdir()
    step = int(checkpoint.name.removeprefix("step_"))
    assert 2 <= step < 400 and summary["steps"] == step
    assert len(list(checkpoint.glob("*.distcp"))) == 4  # every rank wrote its shards

    again = slurm.sbatch(
        "-N", "2", LAUNCH, "--", f"trainer.max_steps={step + 2}", out, *auto, env=env, cwd=tmp_path
    )
    assert slurm.wait(again)["JobState"] == "COMPLETED", job_output(tmp_path, again)
    (second,) = [p for p in results.iterdir() if p.is_dir() and p != first]
    resumed = json.loads((second / "summary.json").read_text())
    assert resumed["valid"] is True and resumed["resumed_from"] == str(checkpoint)
    steps = [
        json.loads(line)["step"] for line in (second / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == [step + 1, step + 2]
