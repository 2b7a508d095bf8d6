"""A tiny text corpus for the real-data tests: a byte-level BPE tokenizer with Llama 3.1's
document tokens, and allenai/c4-style ``.json.gz`` shards of seeded pseudo-sentences."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"
VOCAB = 320
"""Token ids of the tokenizer: 2 special, 256 bytes, the rest merges; fits llama31_debug."""
WORDS = ["the", "a", "model", "learns", "to", "predict", "the", "next", "token", "of", "text"]


def documents(shard: int, n: int) -> list[str]:
    """``n`` documents of 20 to 60 words, the same for the same ``shard``."""
    rng = random.Random(shard)
    return [
        f"doc {shard}.{i}: " + " ".join(rng.choices(WORDS, k=rng.randint(20, 60))) for i in range(n)
    ]


def write_tokenizer(folder: Path, *, config: bool = True) -> Path:
    """``tokenizer.json`` (and, with ``config``, a ``tokenizer_config.json`` naming BOS/EOS)."""
    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=[BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(documents(99, 50), trainer)
    tok.save(str(folder / "tokenizer.json"))
    if config:  # as Llama 3.1's: one token as a string, one as an AddedToken dict
        bos_eos = {"bos_token": BOS, "eos_token": {"content": EOS, "special": True}}
        (folder / "tokenizer_config.json").write_text(json.dumps(bos_eos))
    return folder


def write_shard(path: Path, docs: list[str]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for doc in docs:
            f.write(json.dumps({"text": doc, "url": "https://example.com"}) + "\n")


def write_corpus(root: Path, docs_per_shard: int = 150) -> tuple[Path, Path, list[list[str]]]:
    """``root/c4/en`` with two train shards and a validation shard, and the tokenizer staged as
    setup.sh would; returns (shard folder, tokenizer folder, the train shards' documents)."""
    shards = root / "c4" / "en"
    shards.mkdir(parents=True)
    train = [documents(0, docs_per_shard), documents(1, docs_per_shard)]
    for i, docs in enumerate(train):
        write_shard(shards / f"c4-train.{i:05d}-of-00002.json.gz", docs)
    write_shard(shards / "c4-validation.00000-of-00001.json.gz", ["held out"] * 10)
    tokenizer = write_tokenizer(root / "tokenizer" / "meta-llama" / "Llama-3.1-8B")
    return shards, tokenizer, train
