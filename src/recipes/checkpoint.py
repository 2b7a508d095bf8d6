"""Checkpoints in the run folder (``checkpoint/step_<N>``): when to save, and which to resume.

Both backends save through ``Trainer.save_checkpoint`` into a folder of sharded files (torch DCP
on the native backend, Megatron ``dist_checkpointing`` on the megatron one) plus Lightning's
loop, schedule and callback state; a later run loads it with ``Trainer.fit(ckpt_path=...)``
into whatever layout it runs, and continues at the next step with the same data.
"""

from __future__ import annotations

import logging
import re
import shutil
import signal
import threading
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from recipes.callbacks.benchmark import BenchmarkCallback
from recipes.errors import ConfigError

log = logging.getLogger("recipes")

STEP_DIR = re.compile(r"step_(\d+)")
RUN_CONFIG = "config.yaml"
"""The resolved config every run folder holds; a checkpoint is read against its run's."""
LOADER_STATE = "meta.pt"
"""Lightning's file of loop, schedule and callback state inside a checkpoint folder."""


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoint" / f"step_{step}"


def step_of(path: Path) -> int:
    match = STEP_DIR.fullmatch(path.name)
    if match is None:
        raise ValueError(f"{path} is not a checkpoint/step_<N> folder")
    return int(match.group(1))


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """The run's finished checkpoints (Lightning's state file is written last), oldest first."""
    found = [
        p
        for p in (run_dir / "checkpoint").glob("step_*")
        if STEP_DIR.fullmatch(p.name) and (p / LOADER_STATE).is_file()
    ]
    return sorted(found, key=step_of)


def latest_checkpoint(output_dir: str) -> Path | None:
    """The most recently finished checkpoint of any run under ``output_dir``."""
    runs = [p.parent for p in Path(output_dir).glob(f"**/{RUN_CONFIG}")]
    found = [ckpt for run in runs for ckpt in complete_checkpoints(run)]
    return max(found, key=lambda p: (p / LOADER_STATE).stat().st_mtime, default=None)


def find_resume_checkpoint(resume_from: str, output_dir: str) -> Path | None:
    """The checkpoint folder ``checkpoint.resume_from`` names (None: ``auto`` found none)."""
    if resume_from in ("latest", "auto"):
        found = latest_checkpoint(output_dir)
        if found is None and resume_from == "latest":
            raise ConfigError(
                f"checkpoint.resume_from=latest found no checkpoint under output_dir="
                f"{output_dir!r}; save one with checkpoint.every_n_steps=N (or save_at_end=true), "
                "name a run folder, or use auto to start afresh when there is none"
            )
        return found
    path = Path(resume_from)
    if STEP_DIR.fullmatch(path.name) and (path / LOADER_STATE).is_file():
        return path
    if (path / RUN_CONFIG).is_file():
        found = complete_checkpoints(path)
        if found:
            return found[-1]
    raise ConfigError(
        f"checkpoint.resume_from={resume_from!r} is neither a run folder holding a finished "
        "checkpoint/step_<N> nor such a checkpoint folder; name one of those, or use latest"
    )


def check_resume(cfg: DictConfig) -> Path | None:
    """The checkpoint to resume from, checked against this run's config."""
    if not cfg.checkpoint.resume_from:
        return None
    path = find_resume_checkpoint(cfg.checkpoint.resume_from, cfg.output_dir)
    if path is None:
        log.info(
            "checkpoint.resume_from=auto: no checkpoint under %s; starting afresh", cfg.output_dir
        )
        return None
    saved = OmegaConf.load(path.parents[1] / RUN_CONFIG)
    step = step_of(path)
    for key in ("model", "backend.name", "trainer.seq_len"):
        ours, theirs = OmegaConf.select(cfg, key), OmegaConf.select(saved, key)
        if isinstance(ours, DictConfig):
            ours, theirs = OmegaConf.to_container(ours), OmegaConf.to_container(theirs)
        if ours != theirs:
            raise ConfigError(
                f"checkpoint.resume_from={str(path)!r} was saved with {key}={theirs!r}, this run "
                f"has {key}={ours!r}; resume with the same {key} or start a new run"
            )
    if step >= cfg.trainer.max_steps:
        raise ConfigError(
            f"checkpoint.resume_from={str(path)!r} is at step {step}, not before "
            f"trainer.max_steps={cfg.trainer.max_steps}; raise trainer.max_steps above {step}"
        )
    return path


def load_loader_state(path: Path) -> dict:
    """Lightning's loop, schedule and callback state, from the checkpoint folder's own file."""
    # Written by this package's save into the folder; not a file from elsewhere.
    return torch.load(path / LOADER_STATE, weights_only=False)


def check_schedule(cfg: DictConfig) -> None:
    every = cfg.checkpoint.every_n_steps
    if every < 0:
        raise ConfigError(
            f"checkpoint.every_n_steps={every} must be >= 0; use 0 for no scheduled checkpoint"
        )
    keep = cfg.checkpoint.keep_latest_k
    if keep < 0:
        raise ConfigError(
            f"checkpoint.keep_latest_k={keep} must be >= 0; use e.g. keep_latest_k=2 (the two "
            "newest checkpoints), or 0 to keep every one"
        )


def purge_older(run_dir: Path, keep: int) -> list[Path]:
    """Remove the run's finished checkpoints older than its newest ``keep``; return them.

    Only this run folder's: the checkpoint a run resumed from lies in another run folder and is
    never touched."""
    older = complete_checkpoints(run_dir)[:-keep]
    for path in older:
        shutil.rmtree(path)
    return older


SIGNAL_STOP = "stopped on SIGUSR1"
"""How the ``invalid_reason`` of a run that saved and stopped on SIGUSR1 begins."""


class CheckpointCallback(L.Callback):
    """Saves ``checkpoint/step_<N>`` in the run folder every N steps, after the last one, and
    when SIGUSR1 arrives (then stops); with ``keep_latest_k`` it then removes the run's older
    ones.

    It runs after :class:`BenchmarkCallback` has closed the step's timing, so saving never
    counts in a step time. The signal handler is installed before ``Trainer.fit``, so
    Lightning's own SLURM handler (which would save from inside the handler, mid-step) stands
    aside; the ranks agree on a signal at a step's end, since it may reach them at different
    times.
    """

    def __init__(self, cfg: DictConfig, bench: BenchmarkCallback) -> None:
        self.every = cfg.checkpoint.every_n_steps
        self.at_end = cfg.checkpoint.save_at_end
        self.keep = cfg.checkpoint.keep_latest_k
        self.bench = bench
        self.saved_step: int | None = None
        self.max_steps = cfg.trainer.max_steps
        # Python takes signal handlers in the main thread only (not where run() is called from
        # another thread, e.g. in a notebook's worker).
        self.on_signal = (
            cfg.checkpoint.on_signal and threading.current_thread() is threading.main_thread()
        )
        self.signalled = False
        if self.on_signal:
            self._previous_handler = signal.signal(signal.SIGUSR1, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self.signalled = True

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self.on_signal:
            signal.signal(signal.SIGUSR1, self._previous_handler)
            self.on_signal = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._stop_on_signal(trainer):
            self.save(trainer)
            self.bench.invalid_reason = (
                f"{SIGNAL_STOP} after step {trainer.global_step}; resume with "
                f"checkpoint.resume_from={self.bench.run_dir}"
            )
            trainer.should_stop = True
        elif self.every and trainer.global_step % self.every == 0 and not trainer.should_stop:
            self.save(trainer)

    def _stop_on_signal(self, trainer: L.Trainer) -> bool:
        if not self.on_signal or trainer.global_step >= self.max_steps:
            return False  # the last step ends the run anyway
        return trainer.strategy.reduce_boolean_decision(self.signalled, all=False)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.at_end and self.bench.invalid_reason is None:
            self.save(trainer)

    def save(self, trainer: L.Trainer) -> None:
        step = trainer.global_step
        if step == self.saved_step:
            return
        path = checkpoint_path(self.bench.run_dir, step)
        trainer.save_checkpoint(path, weights_only=False)  # every rank has written on return
        self.saved_step = step
        log.info("checkpoint: %s", path)
        if self.keep:
            if trainer.is_global_zero:
                for older in purge_older(self.bench.run_dir, self.keep):
                    log.info("checkpoint: removed %s (keep_latest_k=%d)", older, self.keep)
            # No rank starts its next step's timer while rank 0 is still removing folders.
            trainer.strategy.barrier("keep_latest_k")
