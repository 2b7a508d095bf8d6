"""launch.sh checks DTYPE and MODEL_SIZE before anything starts."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

LAUNCH = Path(__file__).resolve().parents[2] / "launch.sh"


def launch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DTYPE", "MODEL_SIZE", "STAGE_PATH")
        and not k.startswith(("SLURM_", "PYTORCH_"))
    }
    return subprocess.run(
        ["bash", str(LAUNCH), *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "env, message",
    [
        ({"MODEL_SIZE": "8b"}, "DTYPE is required, one of: bf16 fp8; e.g. DTYPE=bf16"),
        (
            {"DTYPE": "fp16", "MODEL_SIZE": "8b"},
            "DTYPE='fp16' must be one of: bf16 fp8; e.g. DTYPE=bf16",
        ),
        (
            {"DTYPE": "bf16"},
            "MODEL_SIZE is required, one of: 8b 70b 405b debug; e.g. MODEL_SIZE=8b",
        ),
        ({"DTYPE": "bf16", "MODEL_SIZE": "7b"}, "MODEL_SIZE='7b'"),
    ],
)
def test_missing_or_wrong_env_fails_fast_with_valid_values(env, message):
    proc = launch(env)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_runs_the_debug_model_on_this_machine(tmp_path):
    proc = launch(
        {"DTYPE": "bf16", "MODEL_SIZE": "debug"},
        "--",
        "trainer.max_steps=3",
        "trainer.timing_warmup_steps=1",
        f"output_dir={tmp_path}",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run_dir,) = tmp_path.iterdir()
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert (config["model"]["name"], config["dtype"]["name"]) == ("llama31_debug", "bf16")
    assert (run_dir / "summary.json").is_file()
    # The rank ran with launch.sh's allocator setting, and its manifest says so.
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["env"]["PYTORCH_ALLOC_CONF"] == "expandable_segments:True"


@pytest.mark.parametrize(
    "override, message",
    [
        ("parallelism.tp=4", "dp_replicate*tp*pp*cp=4 does not divide the world size 2"),
        ("trainer.maxsteps=3", "trainer.maxsteps"),  # refused by Hydra itself
    ],
)
def test_a_bad_config_for_local_ranks_exits_2_before_torchrun(tmp_path, override, message):
    """Each torchrun rank would refuse it with exit code 2, and torchrun would exit 1: the
    launcher checks the configuration once, for the world size it is about to start."""
    env = {"DTYPE": "bf16", "MODEL_SIZE": "debug", "NGPU": "2"}
    proc = launch(env, "--", override, f"output_dir={tmp_path}/out")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "torch.distributed" not in proc.stderr and "ChildFailedError" not in proc.stderr
    assert not (tmp_path / "out").exists()
