"""The config tree ships inside the wheel, so a non-editable install finds it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from recipes.config import conf_dir

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not (ROOT / "pyproject.toml").exists(), reason="needs the source tree")
def test_wheel_contains_every_config_file(tmp_path):
    pytest.importorskip("hatchling")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("recipes-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        f"recipes/conf/{p.relative_to(ROOT / 'conf')}" for p in (ROOT / "conf").rglob("*.yaml")
    }
    assert shipped and shipped <= names
    assert "recipes/train.py" in names


def test_conf_dir_holds_the_root_config():
    assert (conf_dir() / "train.yaml").is_file()
