"""What this machine offers the megatron backend, found without starting anything heavy.

Used by ``MegatronBackend.validate`` before any process group exists, so every check here is an
import or a version lookup.
"""

from __future__ import annotations

import functools
import importlib
from importlib import metadata

MEGATRON_MIN = "0.16.1"
"""Oldest megatron-core this backend is written for (the newest that installs on Python 3.11)."""

NEMO_CONTAINER = "NVIDIA's NeMo container (nvcr.io/nvidia/nemo), which ships Transformer Engine"


@functools.cache
def megatron_version() -> str | None:
    """Installed megatron-core version, or None."""
    try:
        return metadata.version("megatron-core")
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def te_import_error() -> str | None:
    """None when ``transformer_engine.pytorch`` imports, else why it does not."""
    try:
        importlib.import_module("transformer_engine.pytorch")
    except Exception as err:  # a TE wheel without CUDA/cuDNN fails with OSError and friends
        return f"{type(err).__name__}: {err}".splitlines()[0]
    return None


@functools.cache
def te_version() -> tuple[int, ...] | None:
    """Transformer Engine's (major, minor) version where it imports, else None."""
    if te_import_error() is not None:
        return None
    version = importlib.import_module("transformer_engine").__version__
    return tuple(int(part) for part in version.split(".")[:2] if part.isdigit())


MEGATRON_NOISE = (
    # Import-time notices of optional kernels; the spec actually used is logged by the backend.
    r"Transformer Engine and Apex are not installed",
    r"Apex is not installed",
    # Megatron-core's own known cases (its default cuda_graph_scope, its grad zeroing).
    r"full scope is deprecated",
    r"The \.grad attribute of a Tensor that is not a leaf Tensor",
    r"`torch\.distributed\.all_gather_into_tensor` is deprecated",
)


def quiet_megatron() -> None:
    """Silence Megatron-core's benign warnings and its INFO logging (config dumps per rank)."""
    import logging
    import warnings

    for message in MEGATRON_NOISE:
        warnings.filterwarnings("ignore", message=f".*{message}")
    logging.getLogger("megatron").setLevel(logging.WARNING)
