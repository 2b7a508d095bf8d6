"""Shared fixtures: compose the real Hydra config tree exactly as ``recipes-train`` does."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from recipes.config import conf_dir, register_configs


@pytest.fixture
def compose_cfg():
    """``compose_cfg(*overrides)`` -> the composed DictConfig (a fresh Hydra each call)."""
    register_configs()

    def _compose(*overrides: str):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
            return compose(config_name="train", overrides=list(overrides))

    yield _compose
    GlobalHydra.instance().clear()
