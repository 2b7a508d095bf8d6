"""Training data (synthetic, local C4 shards, any Hugging Face dataset): one global batch per
optimizer step, split across data-parallel ranks."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import closing

import lightning as L
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Sampler

from recipes.data.c4 import c4_documents, find_shards, read_texts
from recipes.data.hf import check_dataset, check_datasets_installed, hf_documents
from recipes.data.packing import Documents, PackedTokens, Position
from recipes.data.synthetic import SyntheticTokens
from recipes.data.tokenizer import check_vocab, load_tokenizer
from recipes.errors import ConfigError

log = logging.getLogger("recipes")


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


def build_dataset(cfg: DictConfig, start: Position | None = None) -> Dataset:
    """The dataset named by ``data.name``, indexed by global sample number; text data begins
    its pass at ``start`` (a resumed run's recorded stream position) where one is given."""
    num_samples = cfg.trainer.max_steps * cfg.trainer.global_batch_size
    if cfg.data.name == "synthetic":
        return SyntheticTokens(
            vocab_size=cfg.model.vocab_size,
            seq_len=cfg.trainer.seq_len,
            num_samples=num_samples,
            seed=cfg.seed,
        )
    documents, source = _documents(cfg.data)
    return PackedTokens(
        documents,
        load_tokenizer(cfg.data),
        seq_len=cfg.trainer.seq_len,
        num_samples=num_samples,
        global_batch_size=cfg.trainer.global_batch_size,
        source=source,
        start=start,
    )


def _documents(data: DictConfig) -> tuple[Documents, str]:
    if data.name == "c4":
        return c4_documents(data)
    if data.name == "hf":
        return hf_documents(data)
    raise ValueError(f"data.name={data.name!r} is unknown; use data=synthetic, c4 or hf")


PATH_HELP = {
    "c4": "data=c4 reads local allenai/c4 json(.gz) shards: set data.path to their folder "
    "(e.g. /data/c4/en) or a glob (e.g. '/data/c4/en/c4-train.0000*-of-01024.json.gz')",
    "hf": "data=hf hands it to datasets.load_dataset: a Hub dataset id (data.path=allenai/c4 "
    "data.subset=en), a local folder of data files, or a builder such as json with "
    "data.data_files=<glob>",
}


def check_data(cfg: DictConfig) -> None:
    """The data keys' rules; unless a dry run, also that the shards and the tokenizer load and
    fit the model. Called from ``config.validate``, before any process group exists."""
    data = cfg.data
    if data.num_workers < 0:
        raise ConfigError(
            f"data.num_workers={data.num_workers} must be >= 0 (0 reads in the training "
            "process); use data.num_workers=0 or a few worker processes, e.g. 2"
        )
    if data.name == "synthetic":
        return
    if not data.path:
        raise ConfigError(f"data.path is not set; {PATH_HELP[data.name]}")
    if data.name == "hf":
        check_datasets_installed()
    if cfg.dry_run:  # a plan reads no data; the files may live only on the cluster
        return
    if data.name == "c4":  # the first record shows a wrong text_field now, not at step 1
        shards = find_shards(data.path, data.split)
        with closing(read_texts(shards, data.text_field)) as texts:
            first = next(texts, None)
        if first is None:
            raise ConfigError(
                f"data.path={data.path!r} holds no records ({len(shards)} shards, all empty); "
                "point it at shards with text"
            )
    check_vocab(load_tokenizer(data), cfg.model.vocab_size)
    if data.name == "hf":
        check_dataset(data)


class TokenDataModule(L.LightningDataModule):
    """Feeds each data-parallel rank its share of every global batch."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.position: Position | None = None
        """Text data: where the stream stands after the last batch trained (rank 0's, which
        checkpoints save; any rank's is a valid place to resume every rank from)."""

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
        # A resumed run starts its text pass where the checkpointed one stood, skipping the
        # text before it untokenized.
        start = self.position if self.trainer.global_step else None
        if start:
            log.info("text data resumes at document batch %d (token %d) of its stream", *start)
        dataset = build_dataset(self.cfg, start)
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=self.cfg.data.num_workers,
            collate_fn=getattr(dataset, "collate", None),
        )

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        if isinstance(batch, (tuple, list)):  # text data: (samples, stream position)
            batch, self.position = batch
        return batch

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state_dict: dict) -> None:
        self.position = state_dict.get("position")
