"""Synthetic pretraining tokens: seeded, reproducible per sample, and learnable.

Sample ``i`` counts upward from a start drawn from ``(seed, i)``, wrapping at the vocabulary
size. Throughput does not depend on the token values, but the rule (next token = this token + 1)
is one a model learns within a few steps, so a short run shows the loss falling; and every
parallel layout sees exactly the same samples.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


class SyntheticTokens(Dataset):
    """``num_samples`` sequences of ``seq_len + 1`` token ids (inputs and shifted labels)."""

    def __init__(self, *, vocab_size: int, seq_len: int, num_samples: int, seed: int) -> None:
        self.vocab_size = vocab_size
        self.seq_len = seq_len
        self.num_samples = num_samples
        self.seed = seed

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        start = torch.randint(self.vocab_size, (1,), generator=gen)
        return (start + torch.arange(self.seq_len + 1)) % self.vocab_size
