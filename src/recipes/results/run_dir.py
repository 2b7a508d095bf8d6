"""A new, uniquely named folder per run; files in it are created once and never overwritten."""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from recipes.errors import ConfigError

RUN_DIR_FILES = ("config.yaml", "manifest.json")
"""What every run folder (a training run's or a dry run's) holds from its start."""


def is_run_dir(path: Path) -> bool:
    return all((path / name).is_file() for name in RUN_DIR_FILES)


def file_in_the_way(path: Path) -> Path | None:
    """The file, ``path`` itself or one of its parents, that keeps ``path`` from being (or
    becoming) a folder; None when there is none."""
    return next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)


def unwritable(path: Path) -> Path | None:
    """The nearest existing one of ``path`` and its parents, where this user cannot create files
    in it; None where ``path`` can be written or created."""
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        return existing
    # access() answers yes to root everywhere, and some file systems (/proc) refuse what it
    # allows: make and remove an empty folder there to be sure.
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".recipes-write-check-", dir=existing))
    except OSError:
        return existing
    return None


def check_output_dir(output_dir: str) -> None:
    """``output_dir`` must be (or become) a folder of run folders, not a file and not a folder
    inside a run folder (whose runs a report, which does not look into runs, would miss)."""
    if not str(output_dir).strip():
        raise ConfigError(
            f"output_dir={output_dir!r} names no folder (an unset shell variable?); name one, "
            "e.g. output_dir=results (the default)"
        )
    root = Path(output_dir).expanduser().absolute()
    blocking = file_in_the_way(root)
    if blocking is not None:
        where = "is a file" if blocking == root else f"lies under {str(blocking)!r}, a file"
        raise ConfigError(
            f"output_dir={output_dir!r} {where}; output_dir must be a folder (each run "
            "gets a new folder in it): name another path"
        )
    run_dir = next((p for p in (root, *root.parents) if is_run_dir(p)), None)
    if run_dir is not None:
        raise ConfigError(
            f"output_dir={output_dir!r} lies inside the run folder {str(run_dir)!r}; runs go "
            f"side by side in a results folder: use output_dir={str(run_dir.parent)!r}"
        )
    locked = unwritable(root)
    if locked is not None:
        raise ConfigError(
            f"output_dir={output_dir!r} cannot be {'written' if locked == root else 'created'}: "
            f"{str(locked)!r} is not writable by this user; name a folder you can write to"
        )


def create_run_dir(output_dir: str | Path, prefix: str) -> Path:
    """Make ``output_dir/<time>_<prefix>_<random>``; an existing folder is never reused."""
    root = Path(output_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        root.mkdir(parents=True, exist_ok=True)
        while True:
            path = root / f"{stamp}_{prefix}_{secrets.token_hex(3)}"
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
    except OSError as err:  # what check_output_dir cannot see: a read-only or special file system
        raise ConfigError(
            f"output_dir={str(output_dir)!r}: the run folder cannot be created there "
            f"({err.strerror}); name a folder you can write to"
        ) from None


def write_new(path: Path, text: str) -> None:
    """Write ``text`` to a file that must not exist yet."""
    with open(path, "x") as f:
        f.write(text)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to a new file."""
    write_new(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
