"""The native Llama and Megatron-core's GPTModel compute the same function from the same weights.

Single process, Megatron's parallel state initialised in the test on a gloo world of one, with
the CPU shims of ``recipes.backends.megatron.cpu`` active only for this module.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

pytest.importorskip("megatron.core")

from recipes.backends.megatron import cpu, provider  # noqa: E402
from recipes.backends.megatron.convert import native_to_megatron, rope_permutation  # noqa: E402
from recipes.backends.native.module import cross_entropy  # noqa: E402
from recipes.models.llama import Llama  # noqa: E402


@pytest.fixture(scope="module")
def megatron_world():
    """Megatron parallel state of one process (tp = pp = cp = dp = 1) on gloo."""
    from megatron.core import parallel_state, tensor_parallel

    with cpu.patched():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        parallel_state.initialize_model_parallel()
        tensor_parallel.model_parallel_cuda_manual_seed(1234)
        try:
            yield
        finally:
            parallel_state.destroy_model_parallel()
            dist.destroy_process_group()


def both_models(compose_cfg, *overrides):
    cfg = compose_cfg("backend=megatron", "dtype=fp32", "cluster.accelerator=cpu", *overrides)
    torch.manual_seed(0)
    native = Llama(cfg.model)
    native.init_weights()
    (megatron,) = provider.build_chunks(cfg, provider.transformer_config(cfg))
    megatron.load_state_dict(native_to_megatron(native.state_dict(), cfg), strict=True)
    return cfg, native.eval(), megatron.eval()


@pytest.mark.parametrize(
    "overrides",
    [(), ("model.vocab_size=2000",)],
    ids=["debug", "padded_vocab"],
)
def test_same_weights_same_logits_and_loss(megatron_world, compose_cfg, overrides):
    cfg, native, megatron = both_models(compose_cfg, *overrides)
    vocab = cfg.model.vocab_size
    tokens = torch.randint(vocab, (2, 65), generator=torch.Generator().manual_seed(1))
    inputs, labels = tokens[:, :-1], tokens[:, 1:]
    with torch.no_grad():
        native_logits = native(inputs)
        logits = megatron(input_ids=inputs, position_ids=None, attention_mask=None)
        per_token = megatron(
            input_ids=inputs, position_ids=None, attention_mask=None, labels=labels
        )
    assert logits.shape[-1] >= vocab
    assert (logits[..., :vocab] - native_logits).abs().max() < 1e-5
    assert abs(per_token.mean() - cross_entropy(native_logits, labels)) < 1e-5


def test_padded_vocab_is_never_in_the_loss(megatron_world, compose_cfg):
    """Huge padded logits change nothing: the loss only sees the real vocabulary."""
    cfg, _, megatron = both_models(compose_cfg, "model.vocab_size=2000")
    with torch.no_grad():
        megatron.output_layer.weight[2000:] = 1e3
    tokens = torch.randint(2000, (1, 33), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        loss = megatron(tokens[:, :-1], None, None, labels=tokens[:, 1:]).mean()
    assert loss < 10  # ln(2000) = 7.6 at initialisation; padded logits would make it ~1e3


def test_rope_permutation_pairs_features_by_frequency():
    perm = rope_permutation(8)
    assert perm.tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
