"""torch profiler traces of a few steps, in the run folder (``profiling.enable=true``).

As torchtitan's ``[profiling]`` (``profile_freq``, ``profiler_warmup``, ``profiler_active``):
the steps are cut into windows of ``freq`` optimizer steps; each window ends with ``active``
traced steps, preceded by ``warmup`` steps that run under the profiler but are not kept. So
with freq=10, warmup=3, active=1 steps 7-9 warm the profiler up and step 10 is traced, then
steps 17-19 and 20, and so on. Each window's trace goes to
``<run folder>/profile_trace/iteration_<last traced step>/rank<r>_trace.json.gz`` (Chrome trace
format, one file per profiled rank). A window cut short by ``trainer.max_steps`` is saved with
the steps it traced; one whose traced steps all lie beyond the run is not started.

One training step is one optimizer step (manual optimization), so the profiler's schedule
advances at each ``on_train_batch_end``. This callback comes after
:class:`~recipes.callbacks.benchmark.BenchmarkCallback`, whose timer has stopped by then: a
trace's writing falls outside every step time (it shows in the next step's ``loop_time_s``).
The steps the profiler runs in (warmup and traced) are slower, on every rank (the others wait
for the profiled ones at the next collective): ``metrics.jsonl`` marks them ``"profiled":
true`` and the summary's figures leave them out (:func:`recipes.results.summary.summarize`).
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import lightning as L
from omegaconf import DictConfig
from torch.profiler import ProfilerAction, ProfilerActivity, profile

from recipes.errors import ConfigError

log = logging.getLogger("recipes")

CLEARS_EVENTS = "Warning: Profiler clears events at the end of each cycle"
"""The profiler's notice, at a second window, that it drops the first one's events: one trace
per window is the point, so it says nothing to act on."""

TRACE_FOLDER = "profile_trace"
"""The run folder's folder of traces (torchtitan's default ``save_traces_folder``)."""

RULES = (
    ("freq", ">= 1", lambda v: v >= 1, "use e.g. profiling.freq=10 (trace every 10th step)"),
    ("warmup", ">= 0", lambda v: v >= 0, "use e.g. profiling.warmup=3, or 0 for none"),
    ("active", ">= 1", lambda v: v >= 1, "use e.g. profiling.active=1 (one traced step)"),
)
"""(key, rule, check, fix) of each ``profiling.*`` count on its own."""


def check_profiling(cfg: DictConfig, world_size: int) -> None:
    """Before any process group: the window fits in ``freq`` steps, the ranks exist, and (when
    enabled) the run reaches at least one traced step."""
    p = cfg.profiling
    for key, rule, ok, fix in RULES:
        if not ok(p[key]):
            raise ConfigError(f"profiling.{key}={p[key]} must be {rule}; {fix}")
    if p.warmup + p.active > p.freq:
        raise ConfigError(
            f"profiling.freq={p.freq} must be >= profiling.warmup + profiling.active = "
            f"{p.warmup} + {p.active} (each window of freq steps holds the warmup and the traced "
            f"steps); use profiling.freq={p.warmup + p.active} or more, or fewer warmup/active "
            "steps"
        )
    if p.ranks is not None:
        ranks = list(p.ranks)
        if not ranks:
            raise ConfigError(
                "profiling.ranks=[] names no rank; list the ranks to trace, e.g. "
                "profiling.ranks=[0], or null for the ranks in log_ranks"
            )
        bad = [r for r in ranks if not 0 <= r < world_size]
        if bad:
            raise ConfigError(
                f"profiling.ranks={ranks} names rank {bad[0]}, but the world size is "
                f"{world_size} (ranks 0..{world_size - 1}); list ranks in that range, or null "
                "for the ranks in log_ranks"
            )
        if len(set(ranks)) != len(ranks):
            raise ConfigError(f"profiling.ranks={ranks} names a rank twice; list each rank once")
    max_steps = cfg.trainer.max_steps
    if p.enable and p.freq - p.active + 1 > max_steps:
        raise ConfigError(
            f"profiling.enable=true but profiling.freq={p.freq} with profiling.active="
            f"{p.active} first traces step {p.freq - p.active + 1}, beyond trainer.max_steps="
            f"{max_steps}: nothing would be traced; use profiling.freq <= {max_steps}"
        )


def profiled_ranks(cfg: DictConfig, world_size: int) -> list[int]:
    """``profiling.ranks``, else the ranks in ``log_ranks`` that exist, else every rank."""
    if cfg.profiling.ranks is not None:
        return list(cfg.profiling.ranks)
    if cfg.log_ranks is not None:
        return [r for r in cfg.log_ranks if 0 <= r < world_size]
    return list(range(world_size))


def phase(p: DictConfig, step: int, max_steps: int) -> str | None:
    """What the profiler does in ``step`` (1-based, as in metrics.jsonl): ``"warmup"``,
    ``"active"`` (traced) or None (off). Windows whose traced steps all lie beyond
    ``max_steps`` are not started."""
    if not 1 <= step <= max_steps:
        return None
    pos = (step - 1) % p.freq
    first_active = step - pos + p.freq - p.active
    if first_active > max_steps:
        return None
    if pos >= p.freq - p.active:
        return "active"
    if pos >= p.freq - p.active - p.warmup:
        return "warmup"
    return None


def profiled_steps(cfg: DictConfig):
    """``step -> bool``: whether the profiler runs in that step (warmup or traced) on some rank;
    always False when profiling is off."""
    p, max_steps = cfg.profiling, cfg.trainer.max_steps
    if not p.enable:
        return lambda step: False
    return lambda step: phase(p, step, max_steps) is not None


class ProfilingCallback(L.Callback):
    """Drives ``torch.profiler.profile`` over optimizer steps on the profiled ranks and writes
    one trace per rank per window into the run folder's ``profile_trace/``."""

    def __init__(self, cfg: DictConfig, bench) -> None:
        self.cfg = cfg
        self.p = cfg.profiling
        self.bench = bench  # its run_dir is known (broadcast) after setup
        self.prof: profile | None = None
        self.rank = 0
        self._start_step = 0
        self.written: list[Path] = []

    def _action(self, k: int) -> ProfilerAction:
        """The profiler's schedule: its k-th step is the run's step ``start + k + 1``."""
        step = self._start_step + k + 1
        what = phase(self.p, step, self.cfg.trainer.max_steps)
        if what == "warmup":
            return ProfilerAction.WARMUP
        if what == "active":
            last = step % self.p.freq == 0 or step == self.cfg.trainer.max_steps
            return ProfilerAction.RECORD_AND_SAVE if last else ProfilerAction.RECORD
        return ProfilerAction.NONE

    def _save(self, prof: profile) -> None:
        step = self._start_step + prof.step_num  # the window's last traced step
        folder = Path(self.bench.run_dir) / TRACE_FOLDER / f"iteration_{step}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"rank{self.rank}_trace.json{'.gz' if self.p.gzip else ''}"
        begin = time.monotonic()
        prof.export_chrome_trace(str(path))
        self.written.append(path)
        log.info("profiler trace of step %d: %s (%.2fs)", step, path, time.monotonic() - begin)

    def on_train_start(self, trainer, pl_module) -> None:
        if not self.p.enable or trainer.global_rank not in profiled_ranks(
            self.cfg, trainer.world_size
        ):
            return
        self.rank = trainer.global_rank
        self._start_step = trainer.global_step  # a resumed run starts after its checkpoint
        activities = [ProfilerActivity.CPU]
        if pl_module.device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        self.prof = profile(
            activities=activities,
            schedule=self._action,
            on_trace_ready=self._save,
            record_shapes=self.p.record_shapes,
            profile_memory=self.p.memory,
            with_stack=self.p.with_stack,
        )
        self.prof.start()
        log.info(
            "profiling steps every %d (warmup %d, traced %d) on ranks %s into %s",
            self.p.freq,
            self.p.warmup,
            self.p.active,
            profiled_ranks(self.cfg, trainer.world_size),
            Path(self.bench.run_dir) / TRACE_FOLDER,
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.prof is not None:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=CLEARS_EVENTS)
                self.prof.step()

    def on_train_end(self, trainer, pl_module) -> None:
        self._stop()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        try:
            self._stop()
        except Exception as err:  # the run's own exception is what matters
            log.warning("profiler: could not stop cleanly: %s", err)

    def _stop(self) -> None:
        if self.prof is not None:
            prof, self.prof = self.prof, None
            prof.stop()  # a window cut short by an exception saves what it traced
