"""A multirun's jobs are all checked before the first one starts (a Hydra callback)."""

from __future__ import annotations

import sys
from typing import Any

from hydra import compose
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from recipes import distributed
from recipes.errors import ConfigError, error_message


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """Each job's overrides, as Hydra's basic sweeper expands ``a=1,2 b=3,4`` (every
    combination, in its order)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def job_world_size(config: DictConfig) -> int:
    """The processes each job gets: submitit's nodes x tasks_per_node on Slurm, else this
    process's world (a local multirun runs its jobs here)."""
    launcher = config.hydra.launcher
    if on_submitit(launcher):
        return int(launcher.nodes) * int(launcher.tasks_per_node)
    return distributed.world_size()


def on_submitit(launcher: DictConfig) -> bool:
    """Whether the sweep's jobs go to Slurm through hydra-submitit-launcher."""
    return "submitit" in str(launcher.get("_target_", ""))


class CheckSweep(Callback):
    """Before a multirun starts its first job, compose every job's config and run the checks
    ``recipes-train`` runs, so a refused job stops the sweep before any job has run (exit 2).
    Nothing is written: a run folder only appears when a job starts training."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from recipes.train import check_and_plan

        jobs = sweep_jobs(list(config.hydra.overrides.task))
        world = job_world_size(config)
        for number, job in enumerate(jobs):
            try:
                check_and_plan(compose(config_name="train", overrides=job), world)
            except ConfigError as err:
                # An exception here would only be a warning (Hydra guards its callbacks).
                print(
                    f"configuration error: sweep job #{number} of {len(jobs)} "
                    f"({' '.join(job)}): {error_message(err)}{slurm_hint(config, err)}; "
                    "no job has run",
                    file=sys.stderr,
                )
                sys.exit(2)


def slurm_hint(config: DictConfig, err: ConfigError) -> str:
    """On Slurm a job's processes are the launcher's, not this process's: say which keys set
    them when the error is about how many there are."""
    launcher = config.hydra.launcher
    if not on_submitit(launcher) or "process" not in str(err):
        return ""
    return (
        f" (each Slurm job of this sweep runs hydra.launcher.nodes={launcher.nodes} x "
        f"hydra.launcher.tasks_per_node={launcher.tasks_per_node} processes: set those to "
        "launch more)"
    )
