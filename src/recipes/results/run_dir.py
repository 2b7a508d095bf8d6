"""A new, uniquely named folder per run; files in it are created once and never overwritten."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any


def create_run_dir(output_dir: str | Path, prefix: str) -> Path:
    """Make ``output_dir/<time>_<prefix>_<random>``; an existing folder is never reused."""
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    while True:
        path = root / f"{stamp}_{prefix}_{secrets.token_hex(3)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def write_new(path: Path, text: str) -> None:
    """Write ``text`` to a file that must not exist yet."""
    with open(path, "x") as f:
        f.write(text)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to a new file."""
    write_new(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
