"""Documents packed into one token stream, read as samples addressed by global index.

Sample ``i`` is tokens ``[i * (seq_len + 1), (i + 1) * (seq_len + 1))`` of the stream made by
concatenating every document's ``BOS + ids + EOS`` in corpus order: a pure function of the data,
the tokenizer and ``seq_len``, whatever the parallel layout, the workers or the starting step.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Dataset, get_worker_info

from recipes.data.tokenizer import TextTokenizer
from recipes.errors import ConfigError

Documents = Callable[[int], Iterator[list[str]]]
"""A pass over the corpus in batches of document texts, after skipping its first ``n`` batches
(cheaply: the skipped text is never tokenized)."""
Position = tuple[int, int]
"""Where a pass may start: (document batches before it, their length in tokens)."""


class DataExhaustedError(ConfigError):
    """The corpus holds fewer samples than the run needs (fixed by more data or fewer steps)."""


class PackedTokens(Dataset):
    """Map-style over global sample index; the stream is tokenized lazily, walking forward.

    Indices asked in increasing order (what ``GlobalBatchSampler`` does on every rank) cost one
    pass over the corpus up to the last sample; an index behind the kept window restarts the
    pass. Only the tokens from the current sample to the end of its global batch are kept.

    A resumed run passes ``start``, the :meth:`position` its checkpoint recorded: the pass then
    begins at that document batch without tokenizing what lies before it.
    """

    def __init__(
        self,
        documents: Documents,
        tokenizer: TextTokenizer,
        *,
        seq_len: int,
        num_samples: int,
        global_batch_size: int,
        source: str,
        start: Position | None = None,
    ) -> None:
        self.documents = documents
        self.tokenizer = tokenizer
        self.width = seq_len + 1
        self.num_samples = num_samples
        self.global_batch_size = global_batch_size
        self.source = source
        self.start = tuple(start) if start else (0, 0)
        self._pass: Iterator[tuple[int, torch.Tensor]] | None = None
        self._chunks: deque[tuple[int, torch.Tensor]] = deque()
        self._start = 0  # stream offset of the first kept token
        self._end = 0  # stream offset just past the last kept token

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> torch.Tensor:
        begin = index * self.width
        if self._pass is None or begin < self._start:
            self._open(begin)
        # Read to the end of the sample's global batch, so that every rank runs out in the same
        # step, before any of them enters that step's collectives.
        batch = index // self.global_batch_size
        self._fill((batch + 1) * self.global_batch_size * self.width, index)
        self._drop_before(begin)
        return self._slice(begin, begin + self.width)

    def __getstate__(self) -> dict:
        # A generator cannot be pickled (spawned DataLoader workers): a copy starts afresh.
        state = self.__dict__.copy()
        state.update(_chunks=deque(), _start=0, _end=0, _pass=None)
        return state

    def position(self) -> Position | None:
        """Where a pass could start to serve the last sample read (None before any)."""
        return (self._chunks[0][0], self._start) if self._chunks else None

    def collate(self, samples: list[torch.Tensor]) -> tuple[torch.Tensor, Position | None]:
        """The DataLoader's batch: the samples, and the stream position after them, read from
        the copy of the dataset that made them (a worker's own, where there are workers)."""
        worker = get_worker_info()
        dataset = worker.dataset if worker is not None else self
        return torch.stack(samples), dataset.position()

    def _open(self, begin: int) -> None:
        """Start a pass that reaches ``begin``: at ``start`` when that lies before it."""
        skip, offset = self.start if begin >= self.start[1] else (0, 0)
        self._pass = self._tokens(skip)
        self._chunks = deque()
        self._start = self._end = offset

    def _tokens(self, skip: int) -> Iterator[tuple[int, torch.Tensor]]:
        for number, texts in enumerate(self.documents(skip), start=skip):
            ids = self.tokenizer.encode(list(texts))
            if ids:
                yield number, torch.tensor(ids, dtype=torch.long)

    def _fill(self, end: int, index: int) -> None:
        while self._end < end:
            chunk = next(self._pass, None)
            if chunk is None:
                raise self._exhausted(index, end)
            self._chunks.append(chunk)
            self._end += len(chunk[1])

    def _drop_before(self, begin: int) -> None:
        while self._chunks and self._start + len(self._chunks[0][1]) <= begin:
            self._start += len(self._chunks.popleft()[1])

    def _slice(self, begin: int, end: int) -> torch.Tensor:
        pieces, offset = [], self._start
        for _, chunk in self._chunks:
            lo, hi = max(begin - offset, 0), min(end - offset, len(chunk))
            if lo < hi:
                pieces.append(chunk[lo:hi])
            offset += len(chunk)
            if offset >= end:
                break
        return torch.cat(pieces)

    def _exhausted(self, index: int, end: int) -> DataExhaustedError:
        available = self._end // self.width
        g = self.global_batch_size
        more = "give it more text (more shards or data files)"
        if available < g:  # not even one step: fewer steps cannot help
            fix = f"{more}, or a smaller trainer.seq_len or trainer.global_batch_size"
        else:
            fix = f"{more}, or use trainer.max_steps <= {available // g}"
        return DataExhaustedError(
            f"{self.source} ran out of text at step {index // g + 1} (sample {index}): it packs "
            f"into {available} samples of trainer.seq_len+1={self.width} tokens "
            f"({self._end:,} tokens), that step needs {end // self.width}, and the run needs "
            f"{self.num_samples} (trainer.max_steps x trainer.global_batch_size={g}); {fix}"
        )
