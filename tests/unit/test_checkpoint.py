"""Checkpoint schedule, ``checkpoint.resume_from`` resolution and its errors, in one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from recipes.checkpoint import find_resume_checkpoint
from recipes.distributed import RENDEZVOUS_VARS
from recipes.errors import ConfigError
from recipes.train import run
from run_folders import step_losses

SHORT = ("trainer.max_steps=4", "trainer.timing_warmup_steps=1", "dtype=fp32")


@pytest.fixture(scope="module")
def saved(tmp_path_factory, compose_cfg):
    """Four steps saving every second one; the output folder and the run folder."""
    out = tmp_path_factory.mktemp("results")
    summary = run(compose_cfg(*SHORT, "checkpoint.every_n_steps=2", f"output_dir={out}"))
    return out, summary


def test_every_n_steps_saves_complete_checkpoints(saved):
    _, summary = saved
    found = sorted(p.name for p in (Path(summary["run_dir"]) / "checkpoint").iterdir())
    assert found == ["step_2", "step_4"]
    assert summary["resumed_from"] is None


def test_resume_continues_exactly(saved, compose_cfg, tmp_path):
    out, first = saved
    step_2 = f"{first['run_dir']}/checkpoint/step_2"
    summary = run(compose_cfg(*SHORT, f"checkpoint.resume_from={step_2}", f"output_dir={tmp_path}"))
    assert summary["valid"] is True and summary["steps"] == 2
    assert summary["resumed_from"] == step_2
    uninterrupted = step_losses(Path(first["run_dir"]))
    assert step_losses(Path(summary["run_dir"])) == {s: uninterrupted[s] for s in (3, 4)}


def test_resume_from_a_run_folder_takes_its_newest_checkpoint(saved):
    _, first = saved
    assert find_resume_checkpoint(first["run_dir"], "unused").name == "step_4"


def test_latest_is_the_newest_checkpoint_under_output_dir(saved, compose_cfg):
    out, first = saved
    time.sleep(0.01)
    second = run(
        compose_cfg(
            *SHORT,
            "trainer.max_steps=3",
            "checkpoint.save_at_end=true",
            f"output_dir={out}",
            "run_name=second",
        )
    )
    latest = find_resume_checkpoint("latest", str(out))
    assert str(latest) == f"{second['run_dir']}/checkpoint/step_3"


def test_keep_latest_k_removes_the_runs_older_checkpoints_only(saved, compose_cfg, tmp_path):
    """Each save removes the run's checkpoints older than its newest K; the checkpoint it resumed
    from, in another run folder, stays."""
    _, first = saved
    cfg = compose_cfg(
        *SHORT,
        "trainer.max_steps=7",
        "checkpoint.every_n_steps=1",
        "checkpoint.keep_latest_k=2",
        f"checkpoint.resume_from={first['run_dir']}",
        f"output_dir={tmp_path}",
    )
    with warnings.catch_warnings(record=True) as caught:
        resumed = run(cfg)
    # Lightning's "dataloader is not resumable" does not apply: the sampler starts at step 5.
    assert not [w for w in caught if "resuming from a checkpoint" in str(w.message)]
    assert resumed["valid"] is True and resumed["steps"] == 3
    checkpoints = Path(resumed["run_dir"]) / "checkpoint"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_6", "step_7"]
    assert (Path(first["run_dir"]) / "checkpoint" / "step_4" / "meta.pt").is_file()
    log = (Path(resumed["run_dir"]) / "train.log").read_text()
    assert f"removed {checkpoints / 'step_5'} (keep_latest_k=2)" in log


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("model.n_layers=2",), "was saved with model="),
        (("trainer.max_steps=2",), "raise trainer.max_steps above 2"),
        (("trainer.seq_len=128",), "trainer.seq_len"),
    ],
)
def test_incompatible_resume_stops_before_training(
    saved, compose_cfg, tmp_path, overrides, message
):
    _, first = saved
    step_2 = f"{first['run_dir']}/checkpoint/step_2"
    cfg = compose_cfg(
        *SHORT, *overrides, f"checkpoint.resume_from={step_2}", f"output_dir={tmp_path}"
    )
    with pytest.raises(ConfigError, match=message):
        run(cfg)
    assert not any(tmp_path.iterdir())  # no run folder was started


def test_missing_checkpoints_are_named(tmp_path, compose_cfg):
    with pytest.raises(ConfigError, match="found no checkpoint under output_dir"):
        run(compose_cfg(*SHORT, "checkpoint.resume_from=latest", f"output_dir={tmp_path}"))
    with pytest.raises(ConfigError, match="neither a run folder"):
        run(
            compose_cfg(*SHORT, f"checkpoint.resume_from={tmp_path}/nope", f"output_dir={tmp_path}")
        )
    with pytest.raises(ConfigError, match="every_n_steps=-1 must be >= 0"):
        run(compose_cfg(*SHORT, "checkpoint.every_n_steps=-1", f"output_dir={tmp_path}"))
    with pytest.raises(ConfigError, match="keep_latest_k=-1 must be >= 0; use e.g."):
        run(compose_cfg(*SHORT, "checkpoint.keep_latest_k=-1", f"output_dir={tmp_path}"))
    assert not any(tmp_path.iterdir())  # refused before any run folder


def test_auto_starts_afresh_without_a_checkpoint(tmp_path, compose_cfg):
    summary = run(compose_cfg(*SHORT, "checkpoint.resume_from=auto", f"output_dir={tmp_path}"))
    assert summary["valid"] is True and summary["resumed_from"] is None and summary["steps"] == 4


def test_sigusr1_saves_after_the_step_and_stops_then_auto_resumes(tmp_path):
    """SIGUSR1 (Slurm's --signal warning) mid-run: the run saves and stops at a step's end; a
    requeued job with resume_from=auto goes on from there."""
    cmd = [sys.executable, "-m", "recipes.train", "trainer.max_steps=50", "dtype=fp32"]
    cmd += ["checkpoint.resume_from=auto", f"output_dir={tmp_path}"]
    env = {k: v for k, v in os.environ.items() if k not in RENDEZVOUS_VARS}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "step:    2 " in line:
            proc.send_signal(signal.SIGUSR1)
    assert proc.wait(timeout=120) == 0, "".join(lines)
    (first,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    summary = json.loads((first / "summary.json").read_text())
    assert summary["valid"] is False and "stopped on SIGUSR1" in summary["invalid_reason"]
    (saved,) = (first / "checkpoint").iterdir()
    stopped_at = int(saved.name.removeprefix("step_"))
    assert 2 <= stopped_at < 50
    assert list(step_losses(first)) == list(range(1, stopped_at + 1))

    cmd[3] = f"trainer.max_steps={stopped_at + 2}"
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    (second,) = [p for p in tmp_path.iterdir() if p.is_dir() and p != first]
    assert list(step_losses(second)) == [stopped_at + 1, stopped_at + 2]
    assert json.loads((second / "summary.json").read_text())["resumed_from"] == str(saved)
