"""The Hugging Face tokenizer of text data: a local ``tokenizer.json`` (what setup.sh stages) or a
Hub repository fetched with huggingface_hub; documents become ``BOS + ids + EOS``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from omegaconf import DictConfig
from tokenizers import Tokenizer

from recipes.errors import ConfigError

STAGED = "$STAGE_PATH/tokenizer/<repo> (staged by setup.sh)"
"""Where the README and the error messages send users for a tokenizer that needs no network."""


@dataclass(frozen=True)
class TextTokenizer:
    """A loaded tokenizer and the ids that open and close each document."""

    tokenizer: Tokenizer
    source: str
    """What data.tokenizer named, for messages."""
    bos_id: int | None
    """Id put before each document; None adds none."""
    eos_id: int | None
    """Id put after each document; None adds none."""

    @property
    def num_ids(self) -> int:
        """One past the largest token id, special tokens included."""
        return max(self.tokenizer.get_vocab(with_added_tokens=True).values()) + 1

    def encode(self, texts: list[str]) -> list[int]:
        """The documents' ids, each wrapped in BOS/EOS, concatenated in order."""
        # The tokenizer's own post-processor is bypassed, so data.add_bos/add_eos alone decide.
        ids: list[int] = []
        for enc in self.tokenizer.encode_batch(texts, add_special_tokens=False):
            if self.bos_id is not None:
                ids.append(self.bos_id)
            ids.extend(enc.ids)
            if self.eos_id is not None:
                ids.append(self.eos_id)
        return ids


def load_tokenizer(data: DictConfig) -> TextTokenizer:
    """The tokenizer ``data.tokenizer`` names, with the BOS/EOS ids ``data`` asks for."""
    if not data.tokenizer:
        raise ConfigError(
            f"data.tokenizer is not set; data={data.name} tokenizes text: set data.tokenizer to "
            f"a folder holding tokenizer.json, e.g. {STAGED}, or to a Hub repo id such as "
            "meta-llama/Llama-3.1-8B"
        )
    return _load(
        str(data.tokenizer),
        data.bos_token if data.add_bos else None,
        data.eos_token if data.add_eos else None,
        bool(data.add_bos),
        bool(data.add_eos),
    )


@lru_cache(maxsize=4)
def _load(
    spec: str, bos: str | None, eos: str | None, add_bos: bool, add_eos: bool
) -> TextTokenizer:
    # Cached: validation loads it before training, the dataset loads it again.
    tokenizer_json, config_json = tokenizer_files(spec)
    try:
        tokenizer = Tokenizer.from_file(str(tokenizer_json))
    except Exception as err:  # the Rust library raises a bare Exception for a malformed file
        raise ConfigError(
            f"data.tokenizer={spec!r}: {tokenizer_json} is not a Hugging Face tokenizer.json "
            f"({err}); point data.tokenizer at a folder setup.sh staged, {STAGED}, or stage "
            "the tokenizer again"
        ) from None
    try:
        config = json.loads(config_json.read_text()) if config_json else {}
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"data.tokenizer={spec!r}: {config_json} is not readable JSON ({err}); restore it "
            "(setup.sh stages it with the tokenizer) or remove it and set data.bos_token and "
            "data.eos_token"
        ) from None
    if not isinstance(config, dict):
        raise ConfigError(
            f"data.tokenizer={spec!r}: {config_json} holds no JSON object; restore it (setup.sh "
            "stages it with the tokenizer) or remove it and set data.bos_token and data.eos_token"
        )
    return TextTokenizer(
        tokenizer=tokenizer,
        source=spec,
        bos_id=_special_id(tokenizer, spec, "bos_token", bos, config) if add_bos else None,
        eos_id=_special_id(tokenizer, spec, "eos_token", eos, config) if add_eos else None,
    )


def check_vocab(tok: TextTokenizer, vocab_size: int) -> None:
    """Every token id must have a row in the model's embedding."""
    n = tok.num_ids
    if n > vocab_size:
        raise ConfigError(
            f"data.tokenizer={tok.source!r} has {n} token ids but model.vocab_size={vocab_size}; "
            f"every id must be < model.vocab_size: use model.vocab_size={n} (or a model built "
            "for this tokenizer, e.g. model=llama31_8b for the Llama 3.1 tokenizer's 128256), "
            f"or a tokenizer with at most {vocab_size} ids"
        )


def tokenizer_files(spec: str) -> tuple[Path, Path | None]:
    """``tokenizer.json`` and, when there is one, ``tokenizer_config.json`` of ``spec``."""
    local = Path(spec).expanduser()
    if local.is_dir():
        local = local / "tokenizer.json"
        if not local.is_file():
            raise ConfigError(
                f"data.tokenizer={spec!r} is a folder without tokenizer.json; point it at the "
                f"folder setup.sh staged, {STAGED}, or at a tokenizer.json file"
            )
    if local.is_file():
        config = local.with_name("tokenizer_config.json")
        return local, config if config.is_file() else None
    if _looks_like_path(spec):
        raise ConfigError(
            f"data.tokenizer={spec!r} does not exist; point it at a folder holding "
            f"tokenizer.json, e.g. {STAGED}, or name a Hub repo such as meta-llama/Llama-3.1-8B"
        )
    return _hub_files(spec)


def _looks_like_path(spec: str) -> bool:
    # A Hub id is "name" or "owner/name"; anything else can only be meant as a local path.
    return spec.startswith(("/", ".", "~")) or spec.count("/") > 1 or spec.endswith(".json")


def _hub_files(repo: str) -> tuple[Path, Path | None]:
    """Fetch through huggingface_hub, which reads HF_TOKEN, HF_ENDPOINT and HF_HUB_OFFLINE."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    where = f"data.tokenizer={repo!r} (a Hugging Face Hub repo)"
    offline = f"or use a staged copy: data.tokenizer={STAGED}"
    try:
        tokenizer_json = Path(hf_hub_download(repo, "tokenizer.json"))
    except GatedRepoError as err:
        raise ConfigError(
            f"{where} is gated and this process has no access: request access on its Hub page "
            f"and export HF_TOKEN=<token of that account>, {offline}"
        ) from err
    except RepositoryNotFoundError as err:
        raise ConfigError(
            f"{where} was not found, or is private: check the id, set HF_TOKEN, {offline}"
        ) from err
    except LocalEntryNotFoundError as err:
        raise ConfigError(
            f"{where} is not in the huggingface_hub cache and the Hub cannot be reached "
            f"(HF_HUB_OFFLINE=1 or no network): fetch it once online, {offline}"
        ) from err
    except EntryNotFoundError as err:
        raise ConfigError(f"{where} has no tokenizer.json; name a repo that has one") from err
    except HfHubHTTPError as err:
        raise ConfigError(f"{where}: the download failed ({err}); {offline}") from err
    try:
        return tokenizer_json, Path(hf_hub_download(repo, "tokenizer_config.json"))
    except EntryNotFoundError:  # optional: data.bos_token/eos_token can say what it would
        return tokenizer_json, None


def _special_id(tokenizer: Tokenizer, spec: str, key: str, name: str | None, config: dict) -> int:
    """The id of ``data.<key>``, else of ``<key>`` in tokenizer_config.json."""
    flag = "data.add_bos" if key == "bos_token" else "data.add_eos"
    example = "<|begin_of_text|>" if key == "bos_token" else "<|end_of_text|>"
    if name is None:
        named = config.get(key)
        # tokenizer_config.json writes a special token as a string or as an AddedToken dict.
        name = named.get("content") if isinstance(named, dict) else named
    if not name:
        raise ConfigError(
            f"data.{key} is not set and data.tokenizer={spec!r} has no tokenizer_config.json "
            f"naming a {key}; set data.{key} (Llama 3.1: {example}) or {flag}=false"
        )
    token_id = tokenizer.token_to_id(name)
    if token_id is None:
        raise ConfigError(
            f"data.{key}={name!r} is not a token of data.tokenizer={spec!r}; set data.{key} to "
            f"one of its special tokens (Llama 3.1: {example}) or {flag}=false"
        )
    return token_id
