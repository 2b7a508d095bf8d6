"""profiling.*: torch profiler traces of a window of steps every freq steps, in the run folder,
and those steps left out of the summary's timing. Real CPU runs of llama31_debug."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from recipes.callbacks.profiling import phase, profiled_ranks
from recipes.distributed import RENDEZVOUS_VARS
from recipes.errors import ConfigError
from recipes.train import check_and_plan, run

SMALL = ("trainer.seq_len=64", "trainer.timing_warmup_steps=1")


def steps_of(freq: int, warmup: int, active: int, max_steps: int) -> dict[str, list[int]]:
    p = OmegaConf.create({"freq": freq, "warmup": warmup, "active": active})
    out: dict[str, list[int]] = {"warmup": [], "active": []}
    for step in range(1, max_steps + 1):
        what = phase(p, step, max_steps)
        if what is not None:
            out[what].append(step)
    return out


def test_windows_end_at_multiples_of_freq_as_torchtitan():
    # torchtitan's defaults: profile_freq=10, profiler_warmup=3, profiler_active=1.
    assert steps_of(10, 3, 1, 25) == {"warmup": [7, 8, 9, 17, 18, 19], "active": [10, 20]}
    # Every step of the window: no waiting step.
    assert steps_of(2, 0, 2, 4) == {"warmup": [], "active": [1, 2, 3, 4]}


def test_a_window_cut_by_max_steps_keeps_its_traced_steps_and_none_is_started_for_nothing():
    # Window 6-10 traces 9-10: the run ends at 9, so step 9 alone is traced.
    assert steps_of(5, 1, 2, 9) == {"warmup": [3, 8], "active": [4, 5, 9]}
    # Window 6-10 would trace 9-10 only: a run ending at 8 does not warm it up.
    assert steps_of(5, 1, 2, 8) == {"warmup": [3], "active": [4, 5]}


def test_profiled_ranks_default_to_the_logged_ranks():
    def ranks(profiling_ranks, log_ranks, world):
        cfg = OmegaConf.create({"profiling": {"ranks": profiling_ranks}, "log_ranks": log_ranks})
        return profiled_ranks(cfg, world)

    assert ranks(None, [0], 4) == [0]
    assert ranks(None, [0, 1, 7], 4) == [0, 1]  # LOG_RANK may name ranks a small run lacks
    assert ranks(None, None, 3) == [0, 1, 2]
    assert ranks([2, 3], [0], 4) == [2, 3]


BAD = {
    "profiling.freq=0": "profiling.freq=0 must be >= 1; use e.g. profiling.freq=10",
    "profiling.active=0": "profiling.active=0 must be >= 1; use e.g. profiling.active=1",
    "profiling.warmup=-1": "profiling.warmup=-1 must be >= 0; use e.g. profiling.warmup=3",
    "profiling.freq=3": (
        "profiling.freq=3 must be >= profiling.warmup + profiling.active = 3 + 1 (each window "
        "of freq steps holds the warmup and the traced steps); use profiling.freq=4 or more"
    ),
    "profiling.ranks=[1]": (
        "profiling.ranks=[1] names rank 1, but the world size is 1 (ranks 0..0); list ranks in "
        "that range, or null for the ranks in log_ranks"
    ),
    "profiling.ranks=[]": "profiling.ranks=[] names no rank; list the ranks to trace",
    "profiling.ranks=[0,0]": "profiling.ranks=[0, 0] names a rank twice; list each rank once",
    "profiling.freq=50": (
        "profiling.enable=true but profiling.freq=50 with profiling.active=1 first traces step "
        "50, beyond trainer.max_steps=20: nothing would be traced; use profiling.freq <= 20"
    ),
}


@pytest.mark.parametrize("override", list(BAD))
def test_bad_values_are_refused_with_field_value_rule_and_fix(compose_cfg, tmp_path, override):
    cfg = compose_cfg("profiling.enable=true", override, f"output_dir={tmp_path}/out")
    with pytest.raises(ConfigError) as err:
        check_and_plan(cfg, launched=1)
    assert BAD[override] in str(err.value)


def test_disabled_profiling_still_checks_its_values_but_not_against_the_run(compose_cfg):
    with pytest.raises(ConfigError, match="profiling.active=0 must be >= 1"):
        check_and_plan(compose_cfg("profiling.active=0"), launched=1)
    check_and_plan(compose_cfg("profiling.freq=50"), launched=1)  # nothing to trace: off anyway


def test_cli_refuses_a_profiled_rank_beyond_the_world_before_any_process_group(tmp_path):
    # As under torchrun with 2 processes: judged before the process group would start.
    env = {k: v for k, v in os.environ.items() if k not in RENDEZVOUS_VARS}
    proc = subprocess.run(
        [sys.executable, "-m", "recipes.train", "profiling.enable=true", "profiling.ranks=[0,2]"]
        + [f"output_dir={tmp_path}/out"],
        cwd=tmp_path,
        env={**env, "WORLD_SIZE": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "profiling.ranks=[0, 2] names rank 2, but the world size is 2" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "out").exists()


def read_trace(path: Path) -> dict:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        return json.load(f)


def profiler_steps(trace: dict) -> set[str]:
    """The ProfilerStep#<n> spans a trace holds (n counts the run's steps from 0)."""
    return {
        e["name"] for e in trace["traceEvents"] if e.get("name", "").startswith("ProfilerStep#")
    }


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_traces_of_the_scheduled_steps_in_the_run_folder(compose_cfg, tmp_path):
    cfg = compose_cfg(
        *SMALL,
        "trainer.max_steps=7",
        "profiling.enable=true",
        "profiling.freq=3",
        "profiling.warmup=1",
        "profiling.active=1",
        f"output_dir={tmp_path}",
    )
    summary = run(cfg)
    assert summary["valid"]
    run_dir = Path(summary["run_dir"])
    traces = sorted(p.relative_to(run_dir) for p in (run_dir / "profile_trace").rglob("*.*"))
    assert [str(p) for p in traces] == [
        "profile_trace/iteration_3/rank0_trace.json.gz",
        "profile_trace/iteration_6/rank0_trace.json.gz",
    ]
    for step, path in ((3, traces[0]), (6, traces[1])):
        trace = read_trace(run_dir / path)
        assert len(trace["traceEvents"]) > 100
        assert profiler_steps(trace) == {f"ProfilerStep#{step - 1}"}  # that step only
        assert any(e.get("name") == "aten::mm" for e in trace["traceEvents"])
    # Warmup and traced steps are marked; the summary's figures leave them out.
    records = metrics(run_dir)
    assert [r["step"] for r in records if r.get("profiled")] == [2, 3, 5, 6]
    assert summary["profiled_steps"] == [2, 3, 5, 6]
    assert summary["steady_state_steps"] == 2  # steps 4 and 7 (step 1 is timing warmup)
    steady = [r["step_time_s"] for r in records if r["step"] in (4, 7)]
    assert summary["step_time_s_mean"] == pytest.approx(sum(steady) / 2)
    assert summary["step_time_s_last"] == records[-1]["step_time_s"]  # step 7: not profiled
    assert summary["loss_last"] == records[-1]["loss"]


def test_plain_json_memory_and_a_window_cut_by_the_last_step(compose_cfg, tmp_path):
    cfg = compose_cfg(
        *SMALL,
        "trainer.max_steps=5",
        "profiling.enable=true",
        "profiling.freq=3",
        "profiling.warmup=0",
        "profiling.active=2",
        "profiling.gzip=false",
        "profiling.record_shapes=false",
        "profiling.memory=true",
        f"output_dir={tmp_path}",
    )
    summary = run(cfg)
    run_dir = Path(summary["run_dir"])
    found = sorted(str(p.relative_to(run_dir)) for p in (run_dir / "profile_trace").rglob("*.*"))
    # Window 4-6 traces 5-6; the run ends at 5, which is saved under its own number.
    assert found == [
        "profile_trace/iteration_3/rank0_trace.json",
        "profile_trace/iteration_5/rank0_trace.json",
    ]
    first = read_trace(run_dir / found[0])
    assert profiler_steps(first) == {"ProfilerStep#1", "ProfilerStep#2"}
    assert any(e.get("name") == "[memory]" for e in first["traceEvents"])
    assert profiler_steps(read_trace(run_dir / found[1])) == {"ProfilerStep#4"}
    assert summary["profiled_steps"] == [2, 3, 5]
    assert summary["steady_state_steps"] == 1
    assert summary["step_time_s_last"] == metrics(run_dir)[3]["step_time_s"]  # step 4


def test_profiling_off_writes_no_trace_and_marks_no_step(compose_cfg, tmp_path):
    summary = run(compose_cfg(*SMALL, "trainer.max_steps=3", f"output_dir={tmp_path}"))
    run_dir = Path(summary["run_dir"])
    assert not (run_dir / "profile_trace").exists()
    assert summary["profiled_steps"] == []
    assert not any("profiled" in r for r in metrics(run_dir))
