"""Reading a run folder back in tests."""

from __future__ import annotations

import json
from pathlib import Path


def step_losses(run_dir: str | Path) -> dict[int, float]:
    """``metrics.jsonl``'s loss by step number, in the order the steps ran."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines)}
