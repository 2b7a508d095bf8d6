"""Any Hugging Face dataset, streamed: ``datasets.load_dataset(data.path, name=data.subset,
split=data.split, streaming=True)``, as torchtitan reads C4 (a Hub id or local data files)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from functools import partial
from types import ModuleType

from omegaconf import DictConfig

from recipes.data.c4 import DOCS_PER_BATCH
from recipes.data.packing import Documents
from recipes.errors import ConfigError

EXTRA = "pip install 'recipes[data]' (or pip install 'datasets>=2.19')"


def check_datasets_installed() -> None:
    """data=hf needs the optional ``datasets`` library."""
    if importlib.util.find_spec("datasets") is None:
        raise ConfigError(f"data=hf needs the datasets library, which is not installed: {EXTRA}")


def _datasets() -> ModuleType:
    check_datasets_installed()
    import datasets

    return datasets


def hf_documents(data: DictConfig) -> tuple[Documents, str]:
    """A restartable streaming pass over the dataset, and a description for messages."""
    source = f"data.path={data.path!r}" + (f" (data.subset={data.subset!r})" if data.subset else "")
    load_args = {
        "path": data.path,
        "name": data.subset,
        "split": data.split,
        "data_files": data.data_files,
    }
    # A partial, not a closure: spawned DataLoader workers get the dataset pickled.
    documents = partial(_batches, load_args, data.text_field, source)
    return documents, source


def check_dataset(data: DictConfig) -> None:
    """Open the stream and read its first records, so that a wrong path, subset, split or
    text_field stops the run here, before training, rather than in a DataLoader worker."""
    documents, source = hf_documents(data)
    try:
        next(documents(0), None)
    except ConfigError:
        raise
    except Exception as err:  # datasets raises many types; each message says what is wrong
        raise ConfigError(
            f"datasets.load_dataset could not open {source} with data.split={data.split!r}, "
            f"data.data_files={data.data_files!r}: {err}. Check data.path, data.subset (null for "
            "local files), data.split and data.data_files"
        ) from err


def _batches(load_args: dict, text_field: str, source: str, skip: int) -> Iterator[list[str]]:
    stream = _datasets().load_dataset(**load_args, streaming=True)
    if skip:  # records are read past, not tokenized
        stream = stream.skip(skip * DOCS_PER_BATCH)
    # .iter() rather than iterating the dataset: in a DataLoader worker the latter would read
    # only that worker's share of the files, and the stream must be the whole corpus.
    for batch in stream.iter(batch_size=DOCS_PER_BATCH):
        yield _texts(batch, text_field, source)


def _texts(batch: dict, text_field: str, source: str) -> list[str]:
    if text_field not in batch:
        raise ConfigError(
            f"{source} has no column data.text_field={text_field!r} (it has {sorted(batch)}); "
            "set data.text_field to the column that holds the text"
        )
    return batch[text_field]
