"""A real 2-node Slurm cluster on this machine (scripts/local_slurm.sh), started and stopped by
these tests, and one stage (setup.sh with CONTAINER=none) that every job runs from."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from fake_hub import LLAMA_TOKENIZER, FakeHub, Repo
from recipes.distributed import RENDEZVOUS_VARS

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "local_slurm.sh"
DONE = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slurm: runs jobs on a real local Slurm cluster (scripts/local_slurm.sh; root)"
    )


def free_ports(count: int) -> int:
    """A base port with ``count`` consecutive free ports (slurmctld, then one per node)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + count > 65535:
            continue
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free ports")


@dataclass
class Cluster:
    """The running cluster: its environment and job helpers."""

    env: dict[str, str]
    state: Path

    def sbatch(self, *args: str, env: dict[str, str] | None = None, cwd: Path) -> str:
        proc = subprocess.run(
            ["sbatch", "--parsable", *args],
            env={**self.env, **(env or {})},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        out = subprocess.run(
            ["scontrol", "show", "job", "-o", job_id],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        return dict(re.findall(r"(\w+)=(\S*)", out))

    def wait(self, job_id: str, timeout: float = 600) -> dict[str, str]:
        """Poll until the job ends; its scontrol record (JobState, ExitCode, ...)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.job(job_id)
            if info.get("JobState") in DONE:
                return info
            time.sleep(1)
        subprocess.run(["scancel", job_id], env=self.env)
        raise AssertionError(f"job {job_id} did not end in {timeout}s: {self.job(job_id)}")


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """Start the cluster for this session (installs slurm-wlm and munge when missing)."""
    if os.geteuid() != 0:
        pytest.skip("the local Slurm cluster needs root (munged, slurmd, /etc/hosts)")
    state = tmp_path_factory.mktemp("slurm")
    # Jobs run on this host: no rendezvous or Slurm variables leak in from the test process.
    inherited = {
        k: v
        for k, v in os.environ.items()
        if k not in RENDEZVOUS_VARS and not k.startswith("SLURM_")
    }
    env = {
        **inherited,
        "LOCAL_SLURM_DIR": str(state),
        "LOCAL_SLURM_PORT": str(free_ports(3)),
        "LOCAL_SLURM_GPUS": "2",
        "OMP_NUM_THREADS": "1",
    }
    start = subprocess.run(
        ["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=900
    )
    assert start.returncode == 0, start.stdout + start.stderr
    env["SLURM_CONF"] = str(state / "etc" / "slurm.conf")
    try:
        yield Cluster(env=env, state=state)
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def staged(slurm, tmp_path_factory):
    """STAGE_PATH staged by setup.sh: a venv (reusing this torch), the code, the tokenizer."""
    stage_path = tmp_path_factory.mktemp("stage")
    env = {
        **slurm.env,
        "STAGE_PATH": str(stage_path),
        "CONTAINER": "none",
        "TORCH_SPEC": f"torch=={torch.__version__}",
        "VENV_SYSTEM_SITE_PACKAGES": "1",
        "SLURM_GPUS_PER_NODE": "2",
        "HF_TOKEN": "hf_good",
        "PYTHON": sys.executable,
    }
    with FakeHub({"meta-llama/Llama-3.1-8B": Repo(LLAMA_TOKENIZER, gated=True)}) as hub:
        env["HF_ENDPOINT"] = hub.url
        proc = subprocess.run(
            ["bash", str(ROOT / "setup.sh")], env=env, capture_output=True, text=True, timeout=900
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert shutil.which("python", path=str(stage_path / "venv" / "bin"))
    return stage_path
