"""data=c4 trains the same on two FSDP processes as on one: each rank reads its slice of the
same global samples from the packed stream (five fp32 steps, losses within 1e-4)."""

from __future__ import annotations

import math

import pytest

from tiny_corpus import write_corpus

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def c4(tmp_path_factory) -> tuple[str, ...]:
    shards, tokenizer, _ = write_corpus(tmp_path_factory.mktemp("c4"))
    return ("data=c4", f"data.path={shards}", f"data.tokenizer={tokenizer}")


def test_fsdp2_on_c4_matches_single_process(train_losses, c4):
    reference = train_losses(1, *c4)
    assert len(reference) == 5 and all(math.isfinite(x) for x in reference)
    assert train_losses(2, *c4) == pytest.approx(reference, abs=TOLERANCE)
