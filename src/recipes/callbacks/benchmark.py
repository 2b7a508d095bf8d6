"""Per-step benchmark logging, the NaN/inf guard, and the run folder's files.

Each step gets one log line in torchtitan's shape and one JSON line in ``metrics.jsonl``; the run
ends with ``summary.json``. A NaN or infinite loss or gradient norm marks the run invalid and
stops it, since every later figure would be meaningless.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from recipes import metrics
from recipes.callbacks.loggers import build_logger, close, numeric
from recipes.errors import error_message
from recipes.results.baselines import baseline_for
from recipes.results.manifest import build_manifest
from recipes.results.run_dir import create_run_dir, write_json, write_new
from recipes.results.summary import RunShape, is_finite, summarize

log = logging.getLogger("recipes")

GIB = 1024**3


def memory_gib(device: torch.device) -> tuple[float, float | None]:
    """Peak memory of this process on its device in GiB, and the device's capacity."""
    if device.type == "cuda":
        used = torch.cuda.max_memory_reserved(device) / GIB
        return used, torch.cuda.get_device_properties(device).total_memory / GIB
    peak_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux reports KiB
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    return peak_rss_kib / 1024**2, total


def format_line(record: dict[str, Any]) -> str:
    """One human line per step, torchtitan style; the step time under NeMo's name (seed 003:
    ``grep train_step_timing``), and for FP8 the MFU against the BF16 peak as well (torchtitan's
    FP8 ``mfu`` is against the BF16 peak)."""

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.2f}%"

    mem = f"{record['memory_gib']:.2f}GiB"
    if record["memory_pct"] is not None:
        mem += f"({record['memory_pct']:.2f}%)"
    line = (
        f"step: {record['step']:>4}  loss: {record['loss']:8.4f}  "
        f"grad_norm: {record['grad_norm']:8.4f}  memory: {mem}  "
        f"train_step_timing in s: {record['step_time_s']:.3f}  "
        f"tps: {record['tokens_per_s_per_gpu']:,.0f}  "
        f"tflops: {record['tflops_per_gpu']:,.2f}  mfu: {pct(record['mfu'])}"
    )
    if "mfu_vs_bf16_peak" in record:
        line += f"  mfu(bf16 peak): {pct(record['mfu_vs_bf16_peak'])}"
    return line


class BenchmarkCallback(L.Callback):
    """Times every step, logs it, guards against NaN/inf, and writes the run folder."""

    def __init__(
        self, cfg: DictConfig, shape: RunShape, world_size: int, resumed_from: Path | None = None
    ) -> None:
        self.cfg = cfg
        self.resumed_from = resumed_from
        self.shape = shape
        self.world_size = world_size
        self.records: list[dict[str, Any]] = []
        self.run_dir: Path | None = None
        self.invalid_reason: str | None = None
        self.summary: dict[str, Any] | None = None
        self._t0 = 0.0
        self._last_end = 0.0
        self._lr = 0.0
        self._log_file: logging.Handler | None = None
        self.tracker: Logger | None = None
        self.profiled: Callable[[int], bool] = lambda step: False
        """Whether the profiler runs in a step (recipes.callbacks.profiling): such steps are
        marked ``"profiled": true`` and left out of the summary's figures."""

    # -- run folder ---------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        path = None
        if trainer.is_global_zero:
            prefix = self.cfg.run_name or f"{self.cfg.model.name}_{self.cfg.dtype.name}"
            path = str(create_run_dir(self.cfg.output_dir, prefix))
        self.run_dir = Path(trainer.strategy.broadcast(path))
        if not trainer.is_global_zero:
            return
        write_new(self.run_dir / "config.yaml", OmegaConf.to_yaml(self.cfg, resolve=True))
        write_json(self.run_dir / "manifest.json", build_manifest(self.world_size))
        self._log_file = logging.FileHandler(self.run_dir / "train.log")
        self._log_file.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(message)s"))
        logging.getLogger().addHandler(self._log_file)
        # The log file gets every step even where no logging was set up (a test, a notebook).
        self._saved_level = log.level
        log.setLevel(logging.INFO)
        log.info("run folder: %s", self.run_dir)
        self.tracker = build_logger(self.cfg, self.run_dir)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._log_file is not None:
            logging.getLogger().removeHandler(self._log_file)
            self._log_file.close()
            self._log_file = None
            log.setLevel(self._saved_level)

    # -- timing -------------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module) -> None:
        _synchronize(pl_module.device)
        self._last_end = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # The step's own LR: training_step moves the schedule on after its optimizer step.
        self._lr = trainer.optimizers[0].param_groups[0]["lr"]
        _synchronize(pl_module.device)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        _synchronize(pl_module.device)
        end = time.perf_counter()
        step_time = end - self._t0
        # The whole loop since the previous step ended: data, Lightning, the other callbacks.
        loop_time, self._last_end = end - self._last_end, end
        loss = float(outputs["loss"])
        grad_norm = float(outputs["grad_norm"])
        used, total = memory_gib(pl_module.device)
        record = {
            "step": trainer.global_step,
            "loss": loss,
            "grad_norm": grad_norm,
            "lr": self._lr,
            "step_time_s": step_time,
            "loop_time_s": loop_time,
            **self.shape.figures(step_time),
            "memory_gib": used,
            "memory_pct": None if total is None else 100 * used / total,
        }
        if self.profiled(record["step"]):
            record["profiled"] = True
        self.records.append(record)
        if trainer.is_global_zero:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            if self.tracker is not None:
                self.tracker.log_metrics(numeric(record), step=record["step"])
        # Every rank logs its line (its own step time and memory); the console shows the ranks
        # in log_ranks (LOG_RANK), the run folder's train.log rank 0's.
        if record["step"] % self.cfg.trainer.log_every_n_steps == 0 or not is_finite(loss):
            log.info(format_line(record))
        if not is_finite(loss, grad_norm):
            bad = ", ".join(
                f"{k}={record[k]}" for k in ("loss", "grad_norm") if not is_finite(record[k])
            )
            self.invalid_reason = f"non-finite {bad} at step {record['step']}"
            log.error("run marked invalid: %s; stopping", self.invalid_reason)
            trainer.should_stop = True

    # -- summary ------------------------------------------------------------------------------
    def on_train_end(self, trainer, pl_module) -> None:
        self._finish(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):  # Slurm's scancel or time limit
            reason = f"terminated by SIGTERM after step {trainer.global_step}"
        else:
            reason = f"{type(exception).__name__}: {error_message(exception)}"
        self.invalid_reason = self.invalid_reason or reason
        self._finish(trainer)

    def _finish(self, trainer: L.Trainer) -> None:
        if self.summary is not None or self.run_dir is None:
            return
        summary = summarize(
            self.records, self.shape, timing_warmup_steps=self.cfg.trainer.timing_warmup_steps
        )
        if trainer.global_step < self.cfg.trainer.max_steps and self.invalid_reason is None:
            self.invalid_reason = (
                f"stopped after step {trainer.global_step} of {self.cfg.trainer.max_steps}"
            )
        self.summary = {
            "valid": self.invalid_reason is None,
            "invalid_reason": self.invalid_reason,
            "run_dir": str(self.run_dir),
            "model": self.cfg.model.name,
            "dtype": self.cfg.dtype.name,
            "backend": self.cfg.backend.name,
            "proxy": self.cfg.get("proxy", False),
            "num_gpus": self.world_size,
            "seq_len": self.cfg.trainer.seq_len,
            "global_batch_size": self.cfg.trainer.global_batch_size,
            "resumed_from": self.resumed_from and str(self.resumed_from),
            **summary,
        }
        if self.summary["proxy"]:  # fewer layers: its speed is not the model's (seed 003)
            self.summary["time_to_train_1t_days"] = None
        if trainer.is_global_zero:
            device = metrics.device_name(self.cfg.cluster.accelerator)
            self.summary |= baseline_for(self.summary, self.cfg, device)
            write_json(self.run_dir / "summary.json", self.summary)
        if self.tracker is not None:
            close(self.tracker, "success" if self.summary["valid"] else "failed")
            self.tracker = None


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
