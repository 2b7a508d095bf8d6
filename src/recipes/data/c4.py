"""Local allenai/c4-layout shards: ``*.json`` / ``*.json.gz`` files, one JSON object a line,
read in file-name order (``c4/en/c4-train.00000-of-01024.json.gz``, ...)."""

from __future__ import annotations

import glob
import gzip
import json
import logging
from collections.abc import Iterable, Iterator
from functools import partial
from itertools import islice
from pathlib import Path

from omegaconf import DictConfig

from recipes.data.packing import Documents
from recipes.errors import ConfigError

log = logging.getLogger(__name__)

SUFFIXES = (".json", ".json.gz", ".jsonl", ".jsonl.gz")
DOCS_PER_BATCH = 128
"""Documents tokenized per call (the tokenizer batches them across threads)."""


def find_shards(path: str, split: str) -> list[Path]:
    """The shard files ``data.path`` names, sorted: a file, a glob, or a folder.

    In a folder holding allenai/c4's ``c4-<split>.*`` files, only ``data.split``'s are taken;
    any other folder gives all its json(.gz) files.
    """
    where = Path(path).expanduser()
    if where.is_dir():
        shards = _shards_in(where)
        if not shards and (english := _shards_in(where / "en")):
            # The root of an allenai/c4 clone (seed 001's dataset_path = "/data/c4/"): its
            # English variant, as torchtitan's loader picks it (load_dataset(path, name="en")).
            log.info("data.path=%s is an allenai/c4 clone: reading its en/ shards", path)
            where, shards = where / "en", english
        if any(p.name.startswith("c4-") for p in shards):
            shards = [p for p in shards if p.name.startswith(f"c4-{split}.")]
    elif where.is_file():
        shards = [where]
    else:
        found = glob.glob(str(where), recursive=True)
        shards = sorted(Path(p) for p in found if Path(p).is_file())
    if not shards:
        raise ConfigError(_no_shards(path, split, where))
    return shards


def _shards_in(folder: Path) -> list[Path]:
    """The json(.gz) files directly in ``folder``, sorted; none when it is not a folder."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(SUFFIXES))


def _no_shards(path: str, split: str, where: Path) -> str:
    fix = (
        "point data.path at a folder of allenai/c4 shards (e.g. /data/c4/en), a glob (e.g. "
        "'/data/c4/en/c4-train.0000*-of-01024.json.gz') or one file"
    )
    if not where.is_dir():
        missing = "matches no files" if any(c in path for c in "*?[") else "does not exist"
        return f"data.path={path!r} {missing}; {fix}"
    splits = sorted({p.name.split(".")[0].removeprefix("c4-") for p in where.glob("c4-*.json*")})
    if splits:
        return (
            f"data.path={path!r} has no c4-{split}.* shards for data.split={split!r}; its "
            f"splits are {splits}: use one of them"
        )
    for sub in ("en", "c4/en"):  # a clone of the allenai/c4 repository, or its parent
        if (where / sub).is_dir():
            return f"data.path={path!r} holds no json(.gz) shards; use data.path={where / sub}"
    return f"data.path={path!r} holds no json(.gz) shards; {fix}"


def read_texts(shards: list[Path], text_field: str, skip: int = 0) -> Iterator[str]:
    """The ``text_field`` of every record, shard after shard, line after line, after the first
    ``skip`` records (counted, not parsed)."""
    for shard in shards:
        opener = gzip.open if shard.name.endswith(".gz") else open
        with opener(shard, "rt", encoding="utf-8") as lines:
            for lineno, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                if skip:
                    skip -= 1
                    continue
                yield _text(line, text_field, f"{shard}:{lineno}")


def _text(line: str, text_field: str, where: str) -> str:
    """The text of one JSON line, or an error that names the shard and line."""
    try:
        record = json.loads(line.strip())
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"{where} is not a JSON object ({err.msg}: column {err.colno}); every line of a "
            "data=c4 shard must be one JSON object: fix or remove that shard"
        ) from None
    if not isinstance(record, dict) or text_field not in record:
        fields = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise ConfigError(
            f"{where} has no field data.text_field={text_field!r} (it has {fields}); set "
            "data.text_field to the field that holds the text"
        )
    text = record[text_field]
    if not isinstance(text, str):
        raise ConfigError(
            f"{where}: data.text_field={text_field!r} holds {type(text).__name__}, not text; "
            "set data.text_field to the field that holds the text, or fix that line"
        )
    return text


def batched(items: Iterable[str], n: int = DOCS_PER_BATCH) -> Iterator[list[str]]:
    """Lists of ``n`` items (the last one shorter)."""
    it = iter(items)
    while batch := list(islice(it, n)):
        yield batch


def c4_documents(data: DictConfig) -> tuple[Documents, str]:
    """A restartable pass over the shards of ``data.path``, and a description for messages."""
    shards = find_shards(data.path, data.split)
    # A partial, not a closure: spawned DataLoader workers get the dataset pickled.
    documents = partial(_batches, shards, data.text_field)
    return documents, f"data.path={data.path!r} ({len(shards)} shards)"


def _batches(shards: list[Path], text_field: str, skip: int) -> Iterator[list[str]]:
    return batched(read_texts(shards, text_field, skip * DOCS_PER_BATCH))
