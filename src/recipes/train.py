"""``recipes-train``: compose -> validate -> (plan) -> backend -> Trainer.fit -> summary."""

from __future__ import annotations

import json
import logging
import signal
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from recipes import distributed, metrics
from recipes.backends import Backend, get_backend
from recipes.callbacks.benchmark import BenchmarkCallback
from recipes.callbacks.garbage import GarbageCollection
from recipes.callbacks.loggers import check_logger
from recipes.callbacks.profiling import ProfilingCallback, check_profiling, profiled_steps
from recipes.checkpoint import SIGNAL_STOP, CheckpointCallback, check_resume, check_schedule
from recipes.config import compose, conf_dir, register_configs, resolve_auto, validate
from recipes.data import TokenDataModule
from recipes.errors import ConfigError, LayoutError, error_message
from recipes.plan.layout import Layout
from recipes.plan.scale import published_hint
from recipes.results.run_dir import check_output_dir
from recipes.results.summary import RunShape

log = logging.getLogger("recipes")

register_configs()
# Lightning 2.6 calls a torch pytree API that newer torch deprecates; it changes nothing here.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
# Lightning notices an installed srun even when this process was not started by one.
warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system")
RESUME_WARNING = r"You're resuming from a checkpoint that ended before the epoch ended"


def setup_logging(rank: int, log_ranks: Sequence[int] | None = (0,)) -> None:
    """INFO on the ranks in ``log_ranks`` (every rank when None), warnings only elsewhere, so a
    multi-rank log reads like one; lines carry the rank when more than rank 0 logs."""
    verbose = log_ranks is None or rank in log_ranks
    tag = "" if log_ranks is not None and list(log_ranks) == [0] else f"[rank{rank}] "
    console = logging.StreamHandler(sys.stdout)
    console.setLevel(logging.INFO if verbose else logging.WARNING)
    console.setFormatter(logging.Formatter(f"%(asctime)s - {tag}%(name)s - %(message)s"))
    # The level filters at the console, so the run folder's log file still gets INFO lines.
    # force: replace Hydra's own handler so every line has one format.
    logging.basicConfig(level=logging.INFO, handlers=[console], force=True)


def run_shape(cfg: DictConfig, layout: Layout) -> RunShape:
    """FLOPs per step and the peak that MFU is measured against, fixed for the whole run."""
    name, dtype = metrics.device_name(cfg.cluster.accelerator), cfg.dtype.name
    peak = metrics.peak_for(name, dtype, cfg.cluster.peak_tflops)
    flops = metrics.flops_per_step_by_convention(
        cfg.model, seq_len=cfg.trainer.seq_len, global_batch_size=cfg.trainer.global_batch_size
    )
    return RunShape(
        seq_len=cfg.trainer.seq_len,
        global_batch_size=cfg.trainer.global_batch_size,
        num_gpus=layout.world_size,
        flops_per_step=flops,
        peak=peak,
        peak_bf16=metrics.peak_for(name, "bf16") if dtype == "fp8" else None,
        peak_note=None if peak else metrics.peak_unknown_reason(name, dtype),
    )


def check_and_plan(
    cfg: DictConfig, launched: int | None = None
) -> tuple[Layout, Backend, Path | None]:
    """All validation, before any process group or GPU is touched; the layout, the backend and
    the checkpoint to resume from. ``launched``: the world size (default: this process's)."""
    resolve_auto(cfg, cuda_available=torch.cuda.is_available())
    check_output_dir(cfg.output_dir)
    launched = launched or distributed.world_size()
    planned = cfg.cluster.num_gpus
    if planned is not None and not cfg.dry_run and planned != launched:
        raise ConfigError(
            f"cluster.num_gpus={planned} but {launched} processes were launched; cluster.num_gpus "
            "is what a dry run plans for: drop it, or add dry_run=true"
        )
    try:
        layout = validate(cfg, planned if cfg.dry_run and planned else launched)
    except LayoutError as err:
        if not (cfg.dry_run and planned):
            raise
        hint = published_hint(cfg.model.name, cfg.dtype.name, planned)
        raise LayoutError(f"{err}{hint}") from None
    backend = get_backend(cfg.backend.name)
    backend.validate(cfg, layout)
    check_schedule(cfg)
    check_logger(cfg)
    check_profiling(cfg, layout.world_size)
    return layout, backend, check_resume(cfg)


def check_command_line(overrides: list[str], world_size: int) -> None:
    """Raise the ConfigError every rank of a ``world_size``-process launch would raise, once, in
    the launcher (whose exit code is then 2, where torchrun's would be 1); Hydra's refusals of
    the command line become ConfigErrors too."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = compose(overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(f"{type(err).__name__}: {err}") from None
    check_and_plan(cfg, world_size)


def run(cfg: DictConfig) -> dict | None:
    """Train (or, with ``dry_run``, only plan) and return the run summary."""
    layout, backend, resume = check_and_plan(cfg)
    if cfg.dry_run:
        from recipes.plan.estimate import dry_run

        return dry_run(cfg, layout)
    L.seed_everything(cfg.seed, verbose=False)
    bench = BenchmarkCallback(cfg, run_shape(cfg, layout), layout.world_size, resume)
    bench.profiled = profiled_steps(cfg)
    # After bench: writing a trace falls outside the step's timing.
    callbacks = [bench, ProfilingCallback(cfg, bench), CheckpointCallback(cfg, bench)]
    if cfg.trainer.gc_every_n_steps:  # first: its collection falls inside the timed step
        callbacks.insert(0, GarbageCollection(cfg.trainer.gc_every_n_steps))
    trainer = L.Trainer(
        max_steps=cfg.trainer.max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=callbacks,
        **backend.trainer_kwargs(cfg, layout),
    )
    with distributed.process_group_scope(), warnings.catch_warnings():
        # Lightning calls a loader resumed mid-epoch "not resumable"; this one's sampler starts at
        # the checkpoint's step (data.GlobalBatchSampler), with the samples the uninterrupted run
        # would have seen there.
        warnings.filterwarnings("ignore", message=RESUME_WARNING)
        module = backend.build_module(cfg, layout)
        trainer.fit(module, datamodule=TokenDataModule(cfg), ckpt_path=resume)
    return bench.summary


def exit_code(summary: dict | None) -> int:
    """0 for a valid run, a plan, and a run that saved and stopped on SIGUSR1 (to be resumed);
    1 for any other invalid run (non-finite loss, stopped early). Data that runs out mid-run
    raises a ConfigError instead, which ends the run with exit code 2."""
    if summary is None or summary.get("valid", True):
        return 0
    return 0 if (summary["invalid_reason"] or "").startswith(SIGNAL_STOP) else 1


_task_started = False
"""Whether Hydra got as far as calling the task: an exit before it is Hydra's own refusal of the
command line (an unknown key or option, a value of the wrong type)."""


def main() -> None:
    """Console entry point ``recipes-train``: exit code 2 for bad input, whether Hydra refuses
    the command line (it exits 1 itself) or this project's checks refuse the configuration."""
    try:
        _hydra_main()
    except SystemExit as exit_:
        if exit_.code == 1 and not _task_started:
            raise SystemExit(2) from None
        raise


@hydra.main(version_base=None, config_path=str(conf_dir()), config_name="train")
def _hydra_main(cfg: DictConfig) -> dict | None:
    """One run (one job of a multirun): exit code 2 for a configuration error, 143 when
    terminated (SIGTERM), else :func:`exit_code`; a multirun's jobs return instead, so one
    invalid run does not end the sweep."""
    global _task_started
    _task_started = True
    rank = distributed.global_rank()
    setup_logging(rank, cfg.log_ranks)
    try:
        summary = run(cfg)
    except ConfigError as err:
        log.error("configuration error: %s", error_message(err))
        sys.exit(2)
    except SIGTERMException:
        log.error("terminated by SIGTERM; the run folder's summary.json says after which step")
        sys.exit(128 + signal.SIGTERM)
    if rank == 0 and summary is not None:
        print(json.dumps(summary, indent=2))
    code = exit_code(summary)
    if code and HydraConfig.get().mode != RunMode.MULTIRUN:
        sys.exit(code)
    return summary


if __name__ == "__main__":
    main()
