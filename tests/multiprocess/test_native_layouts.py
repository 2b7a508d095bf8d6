"""Every native layout trains like one process: five fp32 steps from one seed, real processes
on CPU (gloo), losses within 1e-4 of the single-process run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

TOLERANCE = 1e-4

LAYOUTS = {
    # name: (processes, overrides)
    "fsdp2": (2, ()),
    "hsdp_2x2": (4, ("parallelism.dp_replicate=2",)),
    "tp2": (2, ("parallelism.tp=2",)),
    "tp2_sp": (2, ("parallelism.tp=2", "parallelism.sequence_parallel=true")),
    "fsdp2_tp2_sp": (4, ("parallelism.tp=2", "parallelism.sequence_parallel=true")),
    "pp2_1f1b": (2, ("parallelism.pp=2",)),
    "pp2_gpipe": (2, ("parallelism.pp=2", "parallelism.pp_schedule=gpipe")),
    "pp2_vp2_interleaved": (2, ("parallelism.pp=2", "parallelism.vp=2")),
    "cp2": (2, ("parallelism.cp=2",)),
    "fsdp2_ac_full": (2, ("backend.activation_checkpointing=full",)),
    "tp2_sp_ac_selective": (
        2,
        (
            "parallelism.tp=2",
            "parallelism.sequence_parallel=true",
            "backend.activation_checkpointing=selective",
        ),
    ),
}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_layout_matches_single_process(train_losses, name):
    nproc, overrides = LAYOUTS[name]
    reference = train_losses(1)
    assert len(reference) == 5 and reference[-1] < reference[0]
    assert train_losses(nproc, *overrides) == pytest.approx(reference, abs=TOLERANCE)


def test_comm_timeout_reaches_the_world_and_every_mesh_group(train_run):
    """PP2 makes mesh groups beside the world's (one per dimension of size 1); all of them wait
    cluster.comm_timeout_minutes, as the manifest reads them from the live groups."""
    run_dir = train_run(2, "parallelism.pp=2", "cluster.comm_timeout_minutes=7")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["comm_timeout_minutes"] == [7.0]
    default = json.loads((train_run(2, *LAYOUTS["tp2"][1]) / "manifest.json").read_text())
    assert default["comm_timeout_minutes"] == [30.0]


COMPILED = {
    "fsdp2": (),
    # TP hands the first compiled block a view of a DTensor's local tensor (see apply_compile).
    "tp2_sp_ac_selective": (
        "parallelism.tp=2",
        "parallelism.sequence_parallel=true",
        "backend.activation_checkpointing=selective",
    ),
    "pp2": ("parallelism.pp=2",),
}


@pytest.mark.parametrize("name", list(COMPILED))
def test_compiled_blocks_and_loss_match_eager_single_process(train_losses, name):
    reference = train_losses(1)
    compiled = train_losses(2, "backend.compile=true", *COMPILED[name])
    assert compiled == pytest.approx(reference, abs=TOLERANCE)


# fp8 rounds to 3 mantissa bits, so a last-bit difference (e.g. a clip coefficient from a norm
# summed in another order) flips some roundings and grows to ~1e-3 within a few steps. With one
# micro-batch per rank and no clipping, FSDP2 with fp8 all-gather is bitwise the single process.
FP8 = ("dtype=fp8", "trainer.micro_batch_size=4", "trainer.grad_clip=0")


def test_fsdp2_fp8_all_gather_matches_single_process_fp8(train_losses):
    reference = train_losses(1, *FP8)
    fp32 = train_losses(1, "trainer.micro_batch_size=4", "trainer.grad_clip=0")
    assert reference != fp32  # the fp8 path really ran
    sharded = train_losses(2, *FP8, "dtype.fp8_fsdp_all_gather=true")
    assert sharded == pytest.approx(reference, abs=TOLERANCE)


def test_compiled_fp8_tracks_eager_fp8(train_losses):
    """Compiled, torchao's scale and cast ops fuse into the blocks' kernels: the same fp8 run up
    to rounding (a few 1e-3 of loss, see above), not a different one."""
    eager = train_losses(1, *FP8)
    compiled = train_losses(1, *FP8, "backend.compile=true")
    assert compiled != eager  # the compiled path really ran
    assert compiled == pytest.approx(eager, abs=1e-2)
    assert compiled[-1] < compiled[0] - 0.3


def test_fp8_rowwise_trains_eager_and_compiled(train_losses):
    losses = train_losses(1, "dtype=fp8_rowwise")
    assert losses[-1] < losses[0] - 0.3
    compiled = train_losses(1, "dtype=fp8_rowwise", "backend.compile=true")
    assert compiled == pytest.approx(losses, abs=1e-2)  # the same run up to rounding


def test_torchrun_runs_the_console_script(tmp_path):
    """The documented form: torchrun --nproc_per_node N "$(command -v recipes-train)" ..."""
    script = shutil.which("recipes-train")
    assert script, "recipes-train is not on PATH: install the package"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += [
        script,
        "trainer.max_steps=2",
        "trainer.timing_warmup_steps=1",
        "log_ranks=[1]",  # LOG_RANK=1: that rank's console shows its step lines
        f"output_dir={tmp_path}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    (run_dir,) = tmp_path.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["valid"] and summary["num_gpus"] == 2
    assert "[rank1] recipes - step:    2  loss:" in proc.stdout
    assert "[rank0]" not in proc.stdout
    assert "step:    2" in (run_dir / "train.log").read_text()  # rank 0's, in the run folder
