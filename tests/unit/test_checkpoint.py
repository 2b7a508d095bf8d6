"""Checkpoint schedule, ``checkpoint.resume_from`` resolution and its errors, in one process."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from recipes.checkpoint import find_resume_checkpoint
from recipes.errors import ConfigError
from recipes.train import run

SHORT = ("trainer.max_steps=4", "trainer.timing_warmup_steps=1", "dtype=fp32")


def losses(run_dir) -> dict[int, float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines)}


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
    uninterrupted = losses(Path(first["run_dir"]))
    assert losses(Path(summary["run_dir"])) == {s: uninterrupted[s] for s in (3, 4)}


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
