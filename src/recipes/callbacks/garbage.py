"""Python's garbage collector on a step schedule while training.

Left automatic, the cyclic collector runs whenever enough objects have been allocated: at a
different moment on each rank, pausing that rank. At scale one rank pausing mid-step holds up
every other at the next collective. So, as torchtitan (``gc_freq``), NeMo
(``GarbageCollectionCallback``) and Megatron-LM (``--manual-gc``) do, automatic collection is
off from the first step to the end of training, and every rank runs a young-generation
collection after the same steps. It runs before the step's timer stops (this
callback comes before :class:`~recipes.callbacks.benchmark.BenchmarkCallback`), so its cost is
counted in that step's time, and on a GPU it overlaps the kernels still queued.
"""

from __future__ import annotations

import gc

import lightning as L


class GarbageCollection(L.Callback):
    """Automatic collection off while training; ``gc.collect(1)`` after every N-th step."""

    def __init__(self, every_n_steps: int) -> None:
        self.every_n_steps = every_n_steps
        self._was_enabled: bool | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self._was_enabled = gc.isenabled()
        gc.collect()  # start from a clean heap: what model building left behind
        gc.disable()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            gc.collect(1)

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        if self._was_enabled:
            gc.enable()
        self._was_enabled = None
