"""Training data: one global batch per optimizer step, split across data-parallel ranks."""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Sampler

from recipes.data.synthetic import SyntheticTokens


class GlobalBatchSampler(Sampler[list[int]]):
    """Yields, per step, this rank's contiguous slice of global batch ``step``.

    Samples are numbered globally (step * global_batch + position), so every layout and every
    data-parallel size trains on the same samples in the same steps, and a run resumed at step
    ``start_step`` goes on with the samples the uninterrupted run would have seen.
    """

    def __init__(
        self,
        *,
        global_batch_size: int,
        num_steps: int,
        dp_rank: int,
        dp_size: int,
        start_step: int = 0,
    ):
        self.local = global_batch_size // dp_size
        self.global_batch_size = global_batch_size
        self.num_steps = num_steps
        self.start_step = start_step
        self.offset = dp_rank * self.local

    def __len__(self) -> int:
        return self.num_steps - self.start_step

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.num_steps):
            first = step * self.global_batch_size + self.offset
            yield list(range(first, first + self.local))


def build_dataset(cfg: DictConfig):
    """The dataset named by ``data.name``."""
    num_samples = cfg.trainer.max_steps * cfg.trainer.global_batch_size
    if cfg.data.name == "synthetic":
        return SyntheticTokens(
            vocab_size=cfg.model.vocab_size,
            seq_len=cfg.trainer.seq_len,
            num_samples=num_samples,
            seed=cfg.seed,
        )
    raise ValueError(f"data.name={cfg.data.name!r} is unknown; use data=synthetic")


class TokenDataModule(L.LightningDataModule):
    """Feeds each data-parallel rank its share of every global batch."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def train_dataloader(self) -> DataLoader:
        # The strategy knows the data-parallel group (a slice of the world under TP/PP/CP).
        dp = getattr(self.trainer.strategy, "distributed_sampler_kwargs", None) or {}
        sampler = GlobalBatchSampler(
            global_batch_size=self.cfg.trainer.global_batch_size,
            num_steps=self.cfg.trainer.max_steps,
            dp_rank=dp.get("rank", 0),
            dp_size=dp.get("num_replicas", 1),
            # Restored from a checkpoint before the loader is built: a resumed run starts there.
            start_step=self.trainer.global_step,
        )
        return DataLoader(
            build_dataset(self.cfg), batch_sampler=sampler, num_workers=self.cfg.data.num_workers
        )
