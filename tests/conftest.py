"""Shared fixtures: compose the real Hydra config tree exactly as ``recipes-train`` does."""

from __future__ import annotations

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from recipes.config import conf_dir, register_configs


def compose(*overrides: str):
    """The composed DictConfig for ``overrides`` (a fresh Hydra each call)."""
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
            return hydra_compose(config_name="train", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def compose_cfg():
    """``compose_cfg(*overrides)`` -> the composed DictConfig."""
    return compose
