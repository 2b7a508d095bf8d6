"""Shared fixtures: compose the real Hydra config tree exactly as ``recipes-train`` does."""

from __future__ import annotations

import pytest

from recipes.config import compose as compose_overrides


def compose(*overrides: str):
    """The composed DictConfig for ``overrides`` (a fresh Hydra each call)."""
    return compose_overrides(list(overrides))


@pytest.fixture(scope="session")
def compose_cfg():
    """``compose_cfg(*overrides)`` -> the composed DictConfig."""
    return compose
