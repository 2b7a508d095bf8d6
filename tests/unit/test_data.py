"""Real text data: a tiny BPE tokenizer and C4-style shards in tmp; packing, global-index
addressing, determinism across layouts, exhaustion, the tokenizer's checks, data=hf through
datasets offline, the tokenizer through a local fake Hub, and a short training run."""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tokenizers import Tokenizer
from torch.utils.data import DataLoader

from fake_hub import FakeHub, Repo
from recipes.config import resolve_auto, validate
from recipes.data import GlobalBatchSampler, build_dataset
from recipes.data.c4 import find_shards
from recipes.data.packing import DataExhaustedError
from recipes.errors import ConfigError
from recipes.train import run
from run_folders import step_losses
from tiny_corpus import BOS, EOS, VOCAB, write_corpus, write_tokenizer

SEQ, GBS = 15, 4
"""Packing tests: samples of 16 tokens, global batches of 4."""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> SimpleNamespace:
    """Two train shards and a validation shard in allenai/c4's layout, the tokenizer, and the
    packed train stream computed by hand."""
    root = tmp_path_factory.mktemp("c4")
    shards, tok_dir, train = write_corpus(root)
    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    bos, eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
    stream = []
    for doc in train[0] + train[1]:
        stream += [bos, *tok.encode(doc, add_special_tokens=False).ids, eos]
    return SimpleNamespace(root=root, shards=shards, tokenizer=tok_dir, stream=stream)


def c4_overrides(corpus, *extra: str) -> tuple[str, ...]:
    return ("data=c4", f"data.path={corpus.shards}", f"data.tokenizer={corpus.tokenizer}", *extra)


def packed(compose_cfg, corpus, *extra: str, steps: int = 10):
    cfg = compose_cfg(
        *c4_overrides(corpus, *extra),
        f"trainer.seq_len={SEQ}",
        f"trainer.global_batch_size={GBS}",
        f"trainer.max_steps={steps}",
    )
    return build_dataset(cfg)


def expected(corpus, index: int) -> list[int]:
    return corpus.stream[index * (SEQ + 1) : (index + 1) * (SEQ + 1)]


# -- packing and addressing ---------------------------------------------------------------------
def test_a_sample_is_its_slice_of_the_packed_stream(compose_cfg, corpus):
    ds = packed(compose_cfg, corpus)
    assert len(ds) == 10 * GBS
    for index in range(len(ds)):
        sample = ds[index]
        assert sample.dtype == torch.long and sample.shape == (SEQ + 1,)
        assert sample.tolist() == expected(corpus, index)
    assert ds[0][0] == 0  # the first document's BOS (id 0: the tokenizer's first special token)
    # Documents run on across samples: an EOS (1) followed by the next BOS (0) inside a sample.
    pairs = [tuple(ds[i][j : j + 2].tolist()) for i in range(len(ds)) for j in range(SEQ)]
    assert (1, 0) in pairs


def test_any_index_in_any_order(compose_cfg, corpus):
    ds = packed(compose_cfg, corpus)
    for index in (37, 38, 5, 5, 39, 0, 21, 20):
        assert ds[index].tolist() == expected(corpus, index)


def test_every_data_parallel_split_and_worker_count_reads_the_same_samples(compose_cfg, corpus):
    reference = [expected(corpus, i) for i in range(10 * GBS)]
    for dp_size in (1, 2, 4):
        seen: dict[int, list[int]] = {}
        for rank in range(dp_size):
            ds = packed(compose_cfg, corpus)  # one dataset per rank, as in a real run
            sampler = GlobalBatchSampler(
                global_batch_size=GBS, num_steps=10, dp_rank=rank, dp_size=dp_size
            )
            for indices in sampler:
                seen.update({i: ds[i].tolist() for i in indices})
        assert [seen[i] for i in range(10 * GBS)] == reference, dp_size
    sampler = GlobalBatchSampler(global_batch_size=GBS, num_steps=10, dp_rank=1, dp_size=2)
    loader = DataLoader(packed(compose_cfg, corpus), batch_sampler=sampler, num_workers=2)
    rows = [row.tolist() for batch in loader for row in batch]
    assert rows == [reference[i] for indices in sampler for i in indices]


def test_a_pickled_copy_starts_afresh_and_reads_the_same(compose_cfg, corpus):
    ds = packed(compose_cfg, corpus)
    ds[30]
    copy = pickle.loads(pickle.dumps(ds))  # what a spawned DataLoader worker gets
    assert [copy[i].tolist() for i in (3, 31)] == [expected(corpus, i) for i in (3, 31)]


def test_running_out_names_what_was_needed_and_what_there_is(compose_cfg, corpus):
    available = len(corpus.stream) // (SEQ + 1)
    full_steps = available // GBS
    ds = packed(compose_cfg, corpus, steps=full_steps + 5)
    assert ds[full_steps * GBS - 1].tolist() == expected(corpus, full_steps * GBS - 1)
    # The next step's first sample may exist, but its global batch does not: every rank stops
    # in the same step.
    with pytest.raises(DataExhaustedError) as err:
        ds[full_steps * GBS]
    message = str(err.value)
    assert f"ran out of text at step {full_steps + 1} (sample {full_steps * GBS})" in message
    assert f"packs into {available} samples of trainer.seq_len+1=16 tokens" in message
    assert f"the run needs {(full_steps + 5) * GBS}" in message
    assert f"use trainer.max_steps <= {full_steps}" in message
    assert isinstance(err.value, ConfigError)  # recipes-train reports it and exits 2


def test_bos_and_eos_can_be_left_out(compose_cfg, corpus):
    ds = packed(compose_cfg, corpus, "data.add_bos=false", "data.add_eos=false")
    ids = ds[0].tolist() + ds[1].tolist()
    assert 0 not in ids and 1 not in ids
    assert ds[0].tolist() == [t for t in corpus.stream if t > 1][: SEQ + 1]


def test_shards_in_name_order_and_only_the_split(corpus):
    train = find_shards(str(corpus.shards), "train")
    assert [p.name for p in train] == [
        "c4-train.00000-of-00002.json.gz",
        "c4-train.00001-of-00002.json.gz",
    ]
    assert len(find_shards(str(corpus.shards), "validation")) == 1
    assert find_shards(f"{corpus.shards}/c4-train.*-of-00002.json.gz", "ignored") == train
    assert find_shards(str(train[1]), "ignored") == [train[1]]
    # The root of an allenai/c4 clone (seed 001's dataset_path = "/data/c4/"): its en/ shards.
    assert find_shards(str(corpus.shards.parent), "train") == train


# -- configuration errors -------------------------------------------------------------------------
def check(compose_cfg, *overrides: str) -> None:
    cfg = compose_cfg(*overrides)
    resolve_auto(cfg, cuda_available=False)
    validate(cfg, world_size=1)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (("data=c4",), r"data.path is not set; data=c4 reads local allenai/c4 json\(.gz\) shards"),
        (("data=hf", "data.path=null"), r"data.path is not set; data=hf hands it to"),
        (
            ("data=c4", "data.path={root}/empty", "data.tokenizer={tok}"),
            r"data.path='.*/empty' holds no json\(.gz\) shards; point data.path at a folder",
        ),
        (
            ("data=c4", "data.path={root}", "data.tokenizer={tok}"),
            r"data.path='.*' holds no json\(.gz\) shards; use data.path=.*/c4/en",
        ),
        (
            ("data=c4", "data.path={root}/nowhere", "data.tokenizer={tok}"),
            r"data.path='.*/nowhere' does not exist",
        ),
        (
            ("data=c4", "data.path={shards}", "data.split=test", "data.tokenizer={tok}"),
            r"has no c4-test.\* shards for data.split='test'; its splits are \['train', "
            r"'validation'\]: use one of them",
        ),
        (
            ("data=c4", "data.path={shards}", "data.tokenizer=null"),
            r"data.tokenizer is not set; .* \$STAGE_PATH/tokenizer/<repo>",
        ),
        (
            ("data=c4", "data.path={shards}", "data.tokenizer={root}/no/such/tokenizer"),
            r"data.tokenizer='.*/no/such/tokenizer' does not exist; point it at a folder",
        ),
        (
            ("data=c4", "data.path={shards}", "data.tokenizer={root}/empty"),
            r"is a folder without tokenizer.json",
        ),
        (
            ("data=c4", "data.path={shards}", "data.tokenizer={tok}", "data.bos_token='<s>'"),
            r"data.bos_token='<s>' is not a token of data.tokenizer=.* or data.add_bos=false",
        ),
        (
            ("data=c4", "data.path={shards}", "data.tokenizer={bare}"),
            r"data.bos_token is not set and data.tokenizer=.* has no tokenizer_config.json "
            r"naming a bos_token; set data.bos_token \(Llama 3.1: <\|begin_of_text\|>\)",
        ),
        (
            ("data=c4", "data.path={shards}", "data.tokenizer={broken}"),
            r"data.tokenizer='.*/broken': .*tokenizer.json is not a Hugging Face tokenizer.json "
            r"\(.*\); point data.tokenizer at",
        ),
        (
            ("data=c4", "data.path={shards}", "data.tokenizer={bad_config}"),
            r"tokenizer_config.json is not readable JSON .*; restore it",
        ),
        (
            ("data=c4", "data.path={shards}", "data.tokenizer={tok}", "model.vocab_size=300"),
            r"data.tokenizer='.*' has 320 token ids but model.vocab_size=300; every id must be "
            r"< model.vocab_size: use model.vocab_size=320",
        ),
    ],
)
def test_bad_data_config_names_field_value_rule_and_fix(
    compose_cfg, corpus, tmp_path, overrides, message
):
    (tmp_path / "empty").mkdir()
    bare = write_tokenizer(tmp_path / "bare", config=False)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tokenizer.json").write_text("not json")  # a download cut short
    bad_config = write_tokenizer(tmp_path / "bad_config")
    (bad_config / "tokenizer_config.json").write_text('{"bos_token": ')
    paths = {"root": tmp_path, "shards": corpus.shards, "tok": corpus.tokenizer, "bare": bare}
    paths |= {"broken": tmp_path / "broken", "bad_config": bad_config}
    (tmp_path / "c4" / "en").mkdir(parents=True)  # as in a clone of allenai/c4
    with pytest.raises(ConfigError, match=message):
        check(compose_cfg, *(o.format(**paths) for o in overrides))


def test_a_dry_run_reads_no_data(compose_cfg, corpus):
    check(compose_cfg, "data=c4", "data.path=/cluster/only/c4/en", "dry_run=true")


def test_the_text_field_must_be_there(compose_cfg, corpus):
    ds = packed(compose_cfg, corpus, "data.text_field=body")
    with pytest.raises(ConfigError, match=r"c4-train.00000-of-00002.json.gz:1 has no field "):
        ds[0]
    # ... and recipes-train finds it before anything starts, from the first record
    with pytest.raises(ConfigError, match=r"c4-train.00000-of-00002.json.gz:1 has no field "):
        check(compose_cfg, *c4_overrides(corpus, "data.text_field=body"))


@pytest.mark.parametrize(
    "line, message",
    [
        (
            '{"text": "cut sho',
            r"bad.json:2 is not a JSON object \(Unterminated string starting at: column 10\)",
        ),
        ('{"text": null}', r"bad.json:2: data.text_field='text' holds NoneType, not text"),
        ('["text"]', r"bad.json:2 has no field data.text_field='text' \(it has list\)"),
    ],
)
def test_a_bad_shard_line_is_named_by_file_and_line(compose_cfg, corpus, tmp_path, line, message):
    (tmp_path / "bad.json").write_text('{"text": "fine words"}\n' + line + "\n")
    cfg = compose_cfg(
        "data=c4", f"data.path={tmp_path / 'bad.json'}", f"data.tokenizer={corpus.tokenizer}"
    )
    with pytest.raises(ConfigError, match=message):
        build_dataset(cfg)[1]


def test_empty_shards_and_negative_workers_are_refused_before_anything_starts(
    compose_cfg, corpus, tmp_path
):
    (tmp_path / "empty.json").write_text("\n")
    with pytest.raises(ConfigError, match=r"holds no records \(1 shards, all empty\)"):
        check(
            compose_cfg,
            "data=c4",
            f"data.path={tmp_path / 'empty.json'}",
            f"data.tokenizer={corpus.tokenizer}",
        )
    with pytest.raises(ConfigError, match=r"data.num_workers=-1 must be >= 0"):
        check(compose_cfg, *c4_overrides(corpus, "data.num_workers=-1"))


def test_too_little_text_for_one_step_asks_for_more_text_not_fewer_steps(compose_cfg, corpus):
    seq_len = len(corpus.stream) // GBS  # GBS samples of seq_len+1 need more than there is
    ds = build_dataset(
        compose_cfg(
            *c4_overrides(corpus), f"trainer.seq_len={seq_len}", f"trainer.global_batch_size={GBS}"
        )
    )
    with pytest.raises(DataExhaustedError) as err:
        ds[0]
    message = str(err.value)
    assert "ran out of text at step 1" in message
    assert "give it more text (more shards or data files), or a smaller trainer.seq_len" in message
    assert "max_steps <=" not in message


def test_a_run_out_of_text_in_a_worker_says_why_in_one_line(compose_cfg, corpus, tmp_path):
    """DataLoader workers re-raise with their traceback as the message; the run's
    invalid_reason keeps the error's own message."""
    cfg = compose_cfg(
        *c4_overrides(corpus, "data.num_workers=2"),
        "trainer.seq_len=1000",
        "trainer.max_steps=3",
        "trainer.timing_warmup_steps=1",
        f"output_dir={tmp_path}",
    )
    with pytest.raises(DataExhaustedError):
        run(cfg)
    (folder,) = tmp_path.iterdir()
    reason = json.loads((folder / "summary.json").read_text())["invalid_reason"]
    assert reason.startswith("DataExhaustedError: data.path=") and "ran out of text" in reason
    assert "Traceback" not in reason and "worker process" not in reason


def test_data_hf_opens_the_dataset_before_training(compose_cfg, corpus):
    pytest.importorskip("datasets")
    local = ("data=hf", f"data.path={corpus.shards}", f"data.tokenizer={corpus.tokenizer}")
    with pytest.raises(ConfigError, match=r"BuilderConfig 'en' not found.* data.subset \(null"):
        check(compose_cfg, *local)  # data=hf's subset is allenai/c4's; local files have none
    with pytest.raises(ConfigError, match=r"Bad split: test"):
        check(compose_cfg, *local, "data.subset=null", "data.split=test")
    with pytest.raises(ConfigError, match=r"has no column data.text_field='body' \(it has"):
        check(compose_cfg, *local, "data.subset=null", "data.text_field=body")
    check(compose_cfg, *local, "data.subset=null")


def test_data_hf_without_datasets_names_the_extra(compose_cfg, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "datasets" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"pip install 'recipes\[data\]'"):
        check(compose_cfg, "data=hf")


@pytest.mark.parametrize("data", ["c4", "hf"])
@pytest.mark.parametrize("model", ["llama31_debug", "llama31_8b", "llama31_70b", "llama31_405b"])
def test_every_model_validates_with_real_data(compose_cfg, corpus, model, data):
    if data == "hf":
        pytest.importorskip("datasets")
    check(compose_cfg, *c4_overrides(corpus), f"data={data}", "data.subset=null", f"model={model}")


# -- data=hf through datasets, offline ----------------------------------------------------------
HF_SCRIPT = """
import json, sys
from omegaconf import OmegaConf
from recipes.config import DataConfig
from torch.utils.data import DataLoader
from recipes.data import GlobalBatchSampler
from recipes.data.hf import hf_documents
from recipes.data.packing import PackedTokens
from recipes.data.tokenizer import load_tokenizer

out = {}
for name, keys in json.loads(sys.argv[1]).items():
    data = OmegaConf.merge(OmegaConf.structured(DataConfig), {"name": "hf", **keys})
    docs, source = hf_documents(data)
    fresh = lambda: PackedTokens(docs, load_tokenizer(data), seq_len=15, num_samples=40,
                                 global_batch_size=4, source=source)
    ds = fresh()
    out[name] = [ds[i].tolist() for i in (0, 1, 39, 2)]
    # Two workers, each walking the whole stream (not a share of the files).
    sampler = GlobalBatchSampler(global_batch_size=4, num_steps=10, dp_rank=0, dp_size=1)
    loader = DataLoader(fresh(), batch_sampler=sampler, num_workers=2)
    out[name + "_workers"] = [row.tolist() for batch in loader for row in batch]
    # Resumed past the first document batch: the pass starts there (datasets' skip).
    whole = PackedTokens(docs, load_tokenizer(data), seq_len=15, num_samples=800,
                         global_batch_size=4, source=source)
    sample = whole[500].tolist()
    position = whole.position()
    resumed = PackedTokens(docs, load_tokenizer(data), seq_len=15, num_samples=800,
                           global_batch_size=4, source=source, start=position)
    out[name + "_resume"] = [position[0] >= 1, resumed[500].tolist() == sample,
                             resumed.position() == position]
print(json.dumps(out))
"""


def test_data_hf_reads_local_files_offline_like_c4(corpus, tmp_path):
    pytest.importorskip("datasets")
    common = {"tokenizer": str(corpus.tokenizer)}
    cases = {
        "folder": {**common, "path": str(corpus.shards), "split": "train"},
        "json_files": {
            **common,
            "path": "json",
            "data_files": f"{corpus.shards}/c4-train.*.json.gz",
        },
    }
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf_home"),
    }
    proc = subprocess.run(
        [sys.executable, "-c", HF_SCRIPT, json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(proc.stdout.splitlines()[-1])
    want = [expected(corpus, i) for i in (0, 1, 39, 2)]
    every = [expected(corpus, i) for i in range(40)]
    assert got == {
        "folder": want,
        "json_files": want,
        "folder_workers": every,
        "json_files_workers": every,
        "folder_resume": [True, True, True],
        "json_files_resume": [True, True, True],
    }


# -- the tokenizer through huggingface_hub ------------------------------------------------------
HUB_SCRIPT = """
import json, os, sys
from pathlib import Path
from types import SimpleNamespace
from recipes.data.tokenizer import load_tokenizer
from recipes.errors import ConfigError

results = []
for repo, token in json.loads(sys.argv[1]):
    os.environ.pop("HF_TOKEN", None)
    os.environ.update({"HF_TOKEN": token} if token else {})
    data = SimpleNamespace(name="c4", tokenizer=repo, add_bos=True, add_eos=True,
                           bos_token=None, eos_token=None)
    try:
        tok = load_tokenizer(data)
        results.append({"ids": tok.num_ids, "bos": tok.bos_id, "eos": tok.eos_id})
    except ConfigError as err:
        results.append({"error": str(err)})
print(json.dumps(results))
"""
REPO = "meta-llama/Llama-3.1-8B"


def load_through_hub(steps: list[tuple[str, str | None]], env: dict[str, str]) -> list[dict]:
    """``load_tokenizer`` of each (repo, HF_TOKEN) in one fresh process (huggingface_hub reads
    HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE when it is imported)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    proc = subprocess.run(
        [sys.executable, "-c", HUB_SCRIPT, json.dumps(steps)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**clean, **env},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_a_hub_tokenizer_is_fetched_with_huggingface_hub_then_works_offline(corpus, tmp_path):
    files = {
        name: (corpus.tokenizer / name).read_text()
        for name in ("tokenizer.json", "tokenizer_config.json")
    }
    loaded = {"ids": VOCAB, "bos": 0, "eos": 1}
    home = {"HF_HOME": str(tmp_path / "hf_home")}
    with FakeHub({REPO: Repo(files, gated=True)}) as hub:
        refused, fetched = load_through_hub(
            [(REPO, None), (REPO, "hf_good")], {**home, "HF_ENDPOINT": hub.url}
        )
        assert "is gated and this process has no access" in refused["error"]
        assert "export HF_TOKEN=" in refused["error"]
        assert fetched == loaded
        names = {p.rsplit("/", 1)[1] for p in hub.downloads()}
        assert names == {"tokenizer.json", "tokenizer_config.json"}
    # The Hub is gone: the cached copy serves an offline run; an uncached repo says what to do.
    cached, missing = load_through_hub(
        [(REPO, None), ("meta-llama/Llama-3.1-70B", None)], {**home, "HF_HUB_OFFLINE": "1"}
    )
    assert cached == loaded
    assert "is not in the huggingface_hub cache" in missing["error"]


# -- training on it --------------------------------------------------------------------------
def test_recipes_train_on_c4_shards(compose_cfg, corpus, tmp_path):
    cfg = compose_cfg(
        *c4_overrides(corpus),
        "trainer.max_steps=3",
        "trainer.timing_warmup_steps=1",
        f"output_dir={tmp_path}",
    )
    summary = run(cfg)
    assert summary["valid"] is True and summary["steps"] == 3
    assert math.isfinite(summary["loss_last"])
    # A debug model starts near uniform over its 2048 ids.
    assert summary["loss_first"] == pytest.approx(math.log(2048), abs=1.0)


def test_a_resumed_run_skips_the_text_before_its_step_untokenized(compose_cfg, corpus, tmp_path):
    """Saved at step 4 (past the first document batch), resumed: the pass starts at the
    recorded document batch, and steps 5-6 equal the uninterrupted run's."""
    short = (*c4_overrides(corpus), "trainer.max_steps=6", "trainer.timing_warmup_steps=1")
    first = run(compose_cfg(*short, "checkpoint.every_n_steps=4", f"output_dir={tmp_path / 'a'}"))
    checkpoint = Path(first["run_dir"]) / "checkpoint" / "step_4"
    state = torch.load(checkpoint / "meta.pt", weights_only=False)
    batch, offset = state["TokenDataModule"]["position"]
    assert batch >= 1 and 0 < offset <= 4 * 8 * 257  # a document batch before step 5's samples

    resumed = run(
        compose_cfg(*short, f"checkpoint.resume_from={checkpoint}", f"output_dir={tmp_path / 'b'}")
    )
    log = (Path(resumed["run_dir"]) / "train.log").read_text()
    assert f"text data resumes at document batch {batch} (token {offset})" in log

    uninterrupted = step_losses(first["run_dir"])
    assert step_losses(resumed["run_dir"]) == {step: uninterrupted[step] for step in (5, 6)}
