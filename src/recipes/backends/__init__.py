"""The one seam between engines: each backend builds the LightningModule and the Trainer wiring.

``train.py`` asks :func:`get_backend` for ``backend.name`` and never branches on it.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

import lightning as L
from omegaconf import DictConfig

from recipes.errors import ConfigError
from recipes.plan.layout import Layout

BACKENDS = {
    "native": "recipes.backends.native:NativeBackend",
    "megatron": "recipes.backends.megatron:MegatronBackend",
}
"""Backend name -> ``module:class``; imported only when chosen (heavy dependencies stay lazy)."""


class Backend(Protocol):
    """What a backend provides to the training entry point."""

    def validate(self, cfg: DictConfig, layout: Layout) -> None:
        """Raise ConfigError for settings this backend cannot run, before any process starts."""

    def build_module(self, cfg: DictConfig, layout: Layout) -> L.LightningModule:
        """The LightningModule whose ``training_step`` runs one global batch."""

    def trainer_kwargs(self, cfg: DictConfig, layout: Layout) -> dict[str, Any]:
        """Strategy, precision and device arguments for ``lightning.Trainer``."""


def get_backend(name: str) -> Backend:
    """Instantiate the backend registered under ``name``."""
    if name not in BACKENDS:
        raise ConfigError(f"backend={name!r} is not one of {sorted(BACKENDS)}; pick one of them")
    module_name, class_name = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)()
