"""Experiment trackers (``logger=tensorboard|wandb``): Lightning's loggers, writing into the run
folder. The benchmark callback makes one once the run folder exists and hands it every step's
record; ``metrics.jsonl`` stays the record the summaries and reports read."""

from __future__ import annotations

import importlib.util
import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from recipes.errors import ConfigError

LOGGERS = ("none", "tensorboard", "wandb")
EXTRA = "pip install 'recipes[loggers]'"


def check_logger(cfg: DictConfig) -> None:
    """Before any process group: the tracker is known, its library installed, and W&B (online)
    has an API key, so a job never fails at its first step for want of one."""
    name = cfg.logger.name
    if name not in LOGGERS:
        raise ConfigError(f"logger={name!r} is not one of {list(LOGGERS)}; pick one of them")
    if name == "tensorboard" and not _installed("tensorboard", "tensorboardX"):
        raise ConfigError(
            "logger=tensorboard needs the tensorboard package, which is not installed: "
            f"{EXTRA} (or pip install tensorboard), or use logger=none"
        )
    if name == "wandb":
        if not _installed("wandb"):
            raise ConfigError(
                f"logger=wandb needs the wandb package, which is not installed: {EXTRA} "
                "(or pip install wandb), or use logger=none"
            )
        if not cfg.logger.offline and not _wandb_can_log_in():
            raise ConfigError(
                "logger=wandb finds no W&B API key (WANDB_API_KEY, or `wandb login`'s ~/.netrc "
                "entry); set one, or set logger.offline=true to keep the run local"
            )


def _installed(*modules: str) -> bool:
    return any(importlib.util.find_spec(m) is not None for m in modules)


def _wandb_can_log_in() -> bool:
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def build_logger(cfg: DictConfig, run_dir: Path) -> Logger | None:
    """The tracker ``logger.name`` asks for, writing under ``run_dir``, with the resolved
    config as its hyperparameters; None for ``logger=none``."""
    name = cfg.logger.name
    if name == "none":
        return None
    if name == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        tracker = TensorBoardLogger(
            save_dir=run_dir, name="tensorboard", version="", default_hp_metric=False
        )
    else:
        from lightning.pytorch.loggers import WandbLogger

        tracker = WandbLogger(
            name=run_dir.name,
            save_dir=run_dir,
            project=cfg.logger.project,
            entity=cfg.logger.entity,
            offline=cfg.logger.offline,
        )
    tracker.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return tracker


def numeric(record: dict[str, Any]) -> dict[str, float]:
    """The figures of a step record a tracker can plot (None and the step number left out)."""
    return {
        k: float(v)
        for k, v in record.items()
        if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def close(tracker: Logger, status: str) -> None:
    """Flush and close the tracker; a W&B run is finished so the next run starts its own."""
    tracker.finalize(status)
    finish = getattr(tracker.experiment, "finish", None)
    if callable(finish):
        finish(exit_code=0 if status == "success" else 1)
