"""Real multi-process runs on CPU (gloo): launch ``recipes-train`` under torchrun, read losses.

A parallel layout is checked by comparing its per-step losses with the single-process run of the
same config and seed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SHORT = ("trainer.max_steps=5", "trainer.timing_warmup_steps=1", "dtype=fp32")
"""Five fp32 steps: the comparison the parity tests make."""


def launch(nproc: int, overrides: tuple[str, ...], out: Path) -> subprocess.CompletedProcess:
    """Run ``recipes-train`` on ``nproc`` local processes (torchrun when more than one)."""
    train = ["-m", "recipes.train", *SHORT, *overrides, f"output_dir={out}"]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd += [f"--nproc_per_node={nproc}", *train]
    else:
        cmd = [sys.executable, *train]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)


def run_folder(proc: subprocess.CompletedProcess, out: Path) -> Path:
    """The one run folder a successful launch wrote."""
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]
    (run_dir,) = [p for p in out.iterdir() if p.is_dir() and p.name != "multirun"]
    return run_dir


def losses_in(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines]


@pytest.fixture(scope="session")
def train_run(tmp_path_factory):
    """``train_run(nproc, *overrides)`` -> the run folder; identical launches are cached."""
    cache: dict[tuple, Path] = {}

    def _run(nproc: int, *overrides: str) -> Path:
        key = (nproc, overrides)
        if key not in cache:
            out = tmp_path_factory.mktemp(f"np{nproc}")
            cache[key] = run_folder(launch(nproc, overrides, out), out)
        return cache[key]

    return _run


@pytest.fixture(scope="session")
def train_losses(train_run):
    """``train_losses(nproc, *overrides)`` -> per-step losses of that (cached) launch."""
    return lambda nproc, *overrides: losses_in(train_run(nproc, *overrides))
