"""``logger=tensorboard|wandb``: every step's figures reach the tracker, in the run folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recipes.callbacks import loggers
from recipes.errors import ConfigError
from recipes.train import run

SHORT = ("trainer.max_steps=3", "trainer.timing_warmup_steps=1", "dtype=fp32")


def step_records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_tensorboard_gets_every_step_and_the_config(compose_cfg, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    summary = run(compose_cfg(*SHORT, "logger=tensorboard", f"output_dir={tmp_path}"))
    run_dir = Path(summary["run_dir"])
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    records = step_records(run_dir)
    for key in ("loss", "grad_norm", "lr", "step_time_s", "tokens_per_s", "memory_gib"):
        logged = [(e.step, e.value) for e in events.Scalars(key)]
        expected = [(r["step"], pytest.approx(r[key], rel=1e-6)) for r in records]
        assert logged == expected, key
    assert "mfu" not in events.Tags()["scalars"]  # null on CPU: nothing to plot
    hparams = (run_dir / "tensorboard" / "hparams.yaml").read_text()
    assert "llama31_debug" in hparams and "max_steps: 3" in hparams


def test_wandb_offline_writes_the_run_into_the_run_folder(compose_cfg, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    overrides = ("logger=wandb", "logger.offline=true", "logger.project=bench-test")
    summary = run(compose_cfg(*SHORT, *overrides, f"output_dir={tmp_path}"))
    run_dir = Path(summary["run_dir"])
    (data,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    stored = data.read_bytes()  # W&B's own record log: names and JSON values as plain bytes
    assert run_dir.name.encode() in stored and b"bench-test" in stored
    for record in step_records(run_dir):
        assert json.dumps(record["loss"]).encode() in stored


def test_tracker_problems_stop_the_run_before_it_starts(compose_cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="no W&B API key .* logger.offline=true"):
        run(compose_cfg(*SHORT, "logger=wandb", f"output_dir={out}"))
    with pytest.raises(ConfigError, match="logger='mlflow' is not one of"):
        run(compose_cfg(*SHORT, "logger.name=mlflow", f"output_dir={out}"))
    monkeypatch.setattr(loggers, "_installed", lambda *modules: False)
    with pytest.raises(ConfigError, match=r"needs the tensorboard package.*recipes\[loggers\]"):
        run(compose_cfg(*SHORT, "logger=tensorboard", f"output_dir={out}"))
    assert not out.exists()  # no run folder was started


def test_a_wandb_key_in_netrc_counts(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert loggers._wandb_can_log_in()
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.com")
    assert not loggers._wandb_can_log_in()
