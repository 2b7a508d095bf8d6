"""backend=megatron: every Megatron-core layout trains like one process, on CPU (gloo), for real.

Five fp32 steps from one seed; losses within 1e-4 of the single-process megatron run. Layouts
that need a GPU with Transformer Engine (FP8, TE layers) are at the end, marked ``gpu``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

pytest.importorskip("megatron.core")

from recipes.backends.megatron import env  # noqa: E402

TOLERANCE = 1e-4
MEGATRON = ("backend=megatron", "cluster.accelerator=cpu", "trainer.seq_len=128")
"""CPU and gloo even on a GPU host; short sequences keep the eight launches near 2.5 minutes."""
REFERENCE = (*MEGATRON, "checkpoint.save_at_end=true")
"""The single-process run every layout is compared with; it also leaves a checkpoint."""

LAYOUTS = {
    "tp2": ("parallelism.tp=2",),
    "tp2_sp": ("parallelism.tp=2", "parallelism.sequence_parallel=true"),
    "pp2": ("parallelism.pp=2",),
    "pp2_vp2": ("parallelism.pp=2", "parallelism.vp=2", "checkpoint.save_at_end=true"),
    "cp2": ("parallelism.cp=2",),
    "dp2_distributed_optimizer": ("backend.use_distributed_optimizer=true",),
    # dp_replicate=2: two distributed-optimizer instances; and the non-overlapped reduce/gather.
    "dp2_two_optimizer_instances_no_overlap": (
        "parallelism.dp_replicate=2",
        "backend.overlap_grad_reduce=false",
        "backend.overlap_param_gather=false",
    ),
}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_layout_matches_single_process(train_losses, name):
    reference = train_losses(1, *REFERENCE)
    assert len(reference) == 5 and reference[-1] < reference[0]
    losses = train_losses(2, *MEGATRON, *LAYOUTS[name])
    assert losses == pytest.approx(reference, abs=TOLERANCE)


def test_comm_timeout_reaches_every_megatron_group(train_run, train_losses):
    """Megatron's groups, its expert-data-parallel gloo group included, and the world's all wait
    cluster.comm_timeout_minutes, as the manifest reads them from the live groups."""
    overrides = (*MEGATRON, "parallelism.tp=2", "cluster.comm_timeout_minutes=7")
    manifest = json.loads((train_run(2, *overrides) / "manifest.json").read_text())
    assert manifest["comm_timeout_minutes"] == [7.0]
    assert train_losses(2, *overrides) == pytest.approx(train_losses(1, *REFERENCE), abs=TOLERANCE)


def _checkpoints(root) -> dict[tuple[int, int], str]:
    """Megatron checkpoints under the session's run folders, by (pp, vp) of their run."""
    found = {}
    for step_dir in root.glob("np*/*/checkpoint/step_5"):
        cfg = OmegaConf.load(step_dir.parents[1] / "config.yaml")
        found[(cfg.parallelism.pp, cfg.parallelism.vp)] = str(step_dir)
    return found


def test_checkpoint_is_layout_independent(train_losses, tmp_path_factory, tmp_path):
    """dist_checkpointing from PP2 x VP2 holds the same tensors, under the same global keys,
    as the single process's: model and optimizer state are ready to load in any layout."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    train_losses(1, *REFERENCE)
    train_losses(2, *MEGATRON, *LAYOUTS["pp2_vp2"])
    found = _checkpoints(tmp_path_factory.getbasetemp())
    states = []
    for layout in ((1, 1), (2, 2)):
        dcp_to_torch_save(found[layout], tmp_path / f"{layout}.pt")
        states.append(torch.load(tmp_path / f"{layout}.pt", weights_only=False))
    single, pipelined = states
    assert set(single) == set(pipelined)
    assert "decoder.layers.self_attention.linear_qkv.weight" in single
    assert "optimizer.state.exp_avg.decoder.layers.mlp.linear_fc1.weight" in single
    for key, value in single.items():
        if torch.is_tensor(value):
            assert torch.allclose(value, pipelined[key], atol=1e-5, rtol=0), key


@pytest.mark.skipif(env.te_import_error() is None, reason="Transformer Engine imports here")
def test_fp8_without_transformer_engine_stops_before_any_process_group(tmp_path):
    cmd = [sys.executable, "-m", "recipes.train", *MEGATRON, "dtype=fp8", f"output_dir={tmp_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Transformer Engine" in out and "NeMo container" in out
    assert "Initializing distributed" not in out  # Lightning never set up a process group
    assert not any(tmp_path.iterdir())  # and no run folder was written


ON_GPU = ("backend=megatron", "cluster.accelerator=gpu", "trainer.seq_len=128")
GPU_TE = pytest.mark.skipif(
    not torch.cuda.is_available() or env.te_import_error() is not None,
    reason="needs a CUDA GPU with Transformer Engine (the NeMo container); "
    f"here: cuda={torch.cuda.is_available()}, TE: {env.te_import_error() or 'ok'}",
)


@pytest.mark.gpu
@GPU_TE
@pytest.mark.parametrize("dtype", ["fp8", "fp8_delayed"])
def test_te_fp8_recipes_train(train_losses, dtype):
    losses = train_losses(1, *ON_GPU, f"dtype={dtype}")
    assert losses[-1] < losses[0]


@pytest.mark.gpu
@GPU_TE
def test_te_layers_train_with_tp2_sp_and_cp2(train_losses):
    """TE layer spec with TE's own SP and CP attention (needs 4 GPUs). On GPU Megatron draws each
    tensor-parallel shard from its own seed, so this checks training, not equality."""
    if torch.cuda.device_count() < 4:
        pytest.skip("needs 4 GPUs")
    layout = ("parallelism.tp=2", "parallelism.sequence_parallel=true", "parallelism.cp=2")
    losses = train_losses(4, *ON_GPU, "dtype=bf16", *layout)
    assert losses[-1] < losses[0]
