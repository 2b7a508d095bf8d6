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


def losses_of(proc: subprocess.CompletedProcess, out: Path) -> list[float]:
    """Per-step losses from the one run folder the launch wrote."""
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]
    (run_dir,) = [p for p in out.iterdir() if p.is_dir() and p.name != "multirun"]
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines]


@pytest.fixture(scope="session")
def train_losses(tmp_path_factory):
    """``train_losses(nproc, *overrides)`` -> per-step losses; identical launches are cached."""
    cache: dict[tuple, list[float]] = {}

    def _run(nproc: int, *overrides: str) -> list[float]:
        key = (nproc, overrides)
        if key not in cache:
            out = tmp_path_factory.mktemp(f"np{nproc}")
            cache[key] = losses_of(launch(nproc, overrides, out), out)
        return cache[key]

    return _run
