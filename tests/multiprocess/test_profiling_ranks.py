"""profiling.ranks on a real 2-process gloo run: one trace per profiled rank per window."""

from __future__ import annotations

import gzip
import json


def test_each_profiled_rank_writes_its_own_trace_per_window(train_run):
    run_dir = train_run(
        2,
        "trainer.seq_len=64",
        "profiling.enable=true",
        "profiling.freq=2",
        "profiling.warmup=1",
        "profiling.active=1",
        "profiling.ranks=[0,1]",
    )
    traces = sorted(str(p.relative_to(run_dir)) for p in (run_dir / "profile_trace").rglob("*.*"))
    assert traces == [
        f"profile_trace/iteration_{step}/rank{rank}_trace.json.gz"
        for step in (2, 4)
        for rank in (0, 1)
    ]
    for path in traces:
        with gzip.open(run_dir / path, "rt") as f:
            trace = json.load(f)
        step = int(path.split("/")[1].removeprefix("iteration_"))
        names = {e.get("name", "") for e in trace["traceEvents"]}
        assert {n for n in names if n.startswith("ProfilerStep#")} == {f"ProfilerStep#{step - 1}"}
        assert trace["distributedInfo"]["rank"] == int(path[-15])  # rank<r>_trace.json.gz
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r.get("profiled")] == [1, 2, 3, 4]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["profiled_steps"] == [1, 2, 3, 4] and summary["steady_state_steps"] == 1
