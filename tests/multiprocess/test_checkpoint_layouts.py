"""Save in one layout, resume in another: the resumed steps equal the uninterrupted run's.

The single-process run trains five fp32 steps; a 2-process FSDP2 run of the same config saves
at step 3; runs resumed from that checkpoint in other layouts train steps 4 and 5, whose losses
must match the single process's within the layout tolerance.
"""

from __future__ import annotations

import json

import pytest

from run_folders import step_losses

TOLERANCE = 1e-4
SAVE_AT = 3

RESUME_LAYOUTS = {
    "one_process": (1, ()),
    "tp2_sp": (2, ("parallelism.tp=2", "parallelism.sequence_parallel=true")),
    "pp2_vp2": (2, ("parallelism.pp=2", "parallelism.vp=2")),
}


def continues(run_dir, reference: list[float]) -> bool:
    """Whether the resumed run trained steps 4 and 5, as the uninterrupted reference did."""
    resumed = step_losses(run_dir)
    expected = dict(enumerate(reference, start=1))
    return list(resumed) == [4, 5] and all(
        abs(resumed[s] - expected[s]) <= TOLERANCE for s in resumed
    )


@pytest.fixture(scope="module")
def fsdp2_run(train_run):
    return train_run(2, f"checkpoint.every_n_steps={SAVE_AT}")


def test_checkpoint_folder_holds_dcp_shards_and_lightning_state(fsdp2_run):
    step = fsdp2_run / "checkpoint" / f"step_{SAVE_AT}"
    assert sorted(p.name for p in step.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert (step / "meta.pt").is_file() and (step / ".metadata").is_file()
    # Scheduled saves only: step 5 is not a multiple of 3 and save_at_end is off.
    assert [p.name for p in (fsdp2_run / "checkpoint").iterdir()] == [f"step_{SAVE_AT}"]


def test_keep_latest_k_leaves_the_newest_finished_checkpoints(train_run):
    """Two ranks save after every step; once both have written, rank 0 removes all but the
    newest two, and the run goes on to its end."""
    run_dir = train_run(2, "checkpoint.every_n_steps=1", "checkpoint.keep_latest_k=2")
    kept = sorted((run_dir / "checkpoint").iterdir())
    assert [p.name for p in kept] == ["step_4", "step_5"]
    for step in kept:
        assert (step / "meta.pt").is_file() and len(list(step.glob("*.distcp"))) == 2
    assert json.loads((run_dir / "summary.json").read_text())["valid"] is True


@pytest.mark.parametrize("name", list(RESUME_LAYOUTS))
def test_resumed_layout_continues_the_single_process_run(train_losses, train_run, fsdp2_run, name):
    reference = train_losses(1)
    nproc, overrides = RESUME_LAYOUTS[name]
    resumed = train_run(nproc, *overrides, f"checkpoint.resume_from={fsdp2_run}")
    assert continues(resumed, reference), (step_losses(resumed), reference)
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["valid"] is True
    assert summary["resumed_from"] == str(fsdp2_run / "checkpoint" / f"step_{SAVE_AT}")


MEGATRON = ("backend=megatron", "cluster.accelerator=cpu", "trainer.seq_len=128")
MEGATRON_RESUME_LAYOUTS = {
    "one_process": (1, ()),
    "pp2_vp2": (2, ("parallelism.pp=2", "parallelism.vp=2")),
}


@pytest.mark.parametrize("name", list(MEGATRON_RESUME_LAYOUTS))
def test_megatron_tp2_checkpoint_resumes_in_other_layouts(train_losses, train_run, name):
    pytest.importorskip("megatron.core")
    reference = train_losses(1, *MEGATRON, "checkpoint.save_at_end=true")
    saved = train_run(2, *MEGATRON, "parallelism.tp=2", f"checkpoint.every_n_steps={SAVE_AT}")
    nproc, overrides = MEGATRON_RESUME_LAYOUTS[name]
    resumed = train_run(nproc, *MEGATRON, *overrides, f"checkpoint.resume_from={saved}")
    assert continues(resumed, reference), (step_losses(resumed), reference)
