"""The native Llama 3.1: exact parameter counts, parity with Hugging Face, deterministic init."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from recipes.config import ModelConfig, RopeScalingConfig, conf_dir
from recipes.models.llama import Llama, num_params, precompute_freqs_cis, rope_inv_freq

# Llama 3.1 as published by Meta.
EXPECTED_PARAMS = {
    "llama31_8b": 8_030_261_248,
    "llama31_70b": 70_553_706_496,
    "llama31_405b": 405_853_388_800,
}


def model_cfg(name: str):
    """Compose conf/model/<name>.yaml onto the schema, as Hydra does."""
    return OmegaConf.merge(
        OmegaConf.structured(ModelConfig), OmegaConf.load(conf_dir() / "model" / f"{name}.yaml")
    )


def materialize(cfg, seed: int) -> Llama:
    """The production path: build on meta, allocate on CPU, initialise from ``seed``."""
    with torch.device("meta"):
        model = Llama(cfg)
    model.to_empty(device="cpu")
    torch.manual_seed(seed)
    model.init_weights()
    return model


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_param_count_on_meta(name):
    cfg = model_cfg(name)
    with torch.device("meta"):
        model = Llama(cfg)
    params = list(model.parameters())
    assert all(p.is_meta for p in params)
    assert model.freqs_cis.is_meta
    assert model.freqs_cis.shape == (cfg.max_seq_len, cfg.dim // cfg.n_heads // 2)
    assert sum(p.numel() for p in params) == num_params(cfg) == EXPECTED_PARAMS[name]


def test_module_names_follow_torchtitan():
    names = {name for name, _ in materialize(model_cfg("llama31_debug"), 0).named_parameters()}
    for leaf in ("attention.wq", "attention.wk", "attention.wv", "attention.wo"):
        assert f"layers.0.{leaf}.weight" in names
    for leaf in ("feed_forward.w1", "feed_forward.w2", "feed_forward.w3"):
        assert f"layers.3.{leaf}.weight" in names
    assert {"tok_embeddings.weight", "norm.weight", "output.weight"} <= names
    assert "layers.0.attention_norm.weight" in names and "layers.0.ffn_norm.weight" in names


# --- parity with Hugging Face transformers ---------------------------------------------------

# original_max_position 64 with head_dim 16 puts RoPE frequencies in all three llama3 bands.
TINY = ModelConfig(
    name="tiny",
    dim=64,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    ffn_dim=160,
    vocab_size=128,
    rope_theta=500000.0,
    rope_scaling=RopeScalingConfig(
        factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position=64
    ),
    max_seq_len=128,
)


def hf_model(cfg: ModelConfig):
    """An fp32, eager-attention Hugging Face Llama with the same hyperparameters."""
    transformers = pytest.importorskip("transformers")
    scaling = cfg.rope_scaling
    hf_cfg = transformers.LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.dim,
        intermediate_size=cfg.ffn_dim,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads,
        max_position_embeddings=cfg.max_seq_len,
        rms_norm_eps=cfg.norm_eps,
        rope_theta=cfg.rope_theta,
        rope_scaling={
            "rope_type": "llama3",
            "factor": scaling.factor,
            "low_freq_factor": scaling.low_freq_factor,
            "high_freq_factor": scaling.high_freq_factor,
            "original_max_position_embeddings": scaling.original_max_position,
        },
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        attn_implementation="eager",
    )
    return transformers.LlamaForCausalLM(hf_cfg).float().eval()


def meta_to_hf_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder q/k rows from Meta's interleaved RoPE pairs to HF's rotate-half halves."""
    out_dim, in_dim = w.shape
    return (
        w.view(n_heads, out_dim // n_heads // 2, 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)
    )


def to_hf_state_dict(model: Llama, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    sd = {
        "model.embed_tokens.weight": model.tok_embeddings.weight,
        "model.norm.weight": model.norm.weight,
        "lm_head.weight": model.output.weight,
    }
    for i, block in model.layers.items():
        p = f"model.layers.{i}."
        attn, ffn = block.attention, block.feed_forward
        sd[p + "self_attn.q_proj.weight"] = meta_to_hf_rows(attn.wq.weight, cfg.n_heads)
        sd[p + "self_attn.k_proj.weight"] = meta_to_hf_rows(attn.wk.weight, cfg.n_kv_heads)
        sd[p + "self_attn.v_proj.weight"] = attn.wv.weight
        sd[p + "self_attn.o_proj.weight"] = attn.wo.weight
        sd[p + "mlp.gate_proj.weight"] = ffn.w1.weight
        sd[p + "mlp.up_proj.weight"] = ffn.w3.weight
        sd[p + "mlp.down_proj.weight"] = ffn.w2.weight
        sd[p + "input_layernorm.weight"] = block.attention_norm.weight
        sd[p + "post_attention_layernorm.weight"] = block.ffn_norm.weight
    return {k: v.detach().clone() for k, v in sd.items()}


def test_rope_frequencies_match_hf_and_cover_all_bands():
    rope_utils = pytest.importorskip("transformers.modeling_rope_utils")
    hf = hf_model(TINY)
    head_dim = TINY.dim // TINY.n_heads
    ours = rope_inv_freq(head_dim, TINY.rope_theta, TINY.rope_scaling)
    theirs, _ = rope_utils.ROPE_INIT_FUNCTIONS["llama3"](hf.config, device="cpu")
    torch.testing.assert_close(ours, theirs.float(), rtol=0, atol=0)
    torch.testing.assert_close(ours, hf.model.rotary_emb.inv_freq.float(), rtol=0, atol=0)

    plain = rope_inv_freq(head_dim, TINY.rope_theta, None)
    kept = ours == plain
    divided = torch.isclose(ours, plain / TINY.rope_scaling.factor, rtol=1e-6, atol=0)
    interpolated = ~kept & ~divided
    assert kept.any() and divided.any() and interpolated.any(), (plain, ours)


def test_logits_and_loss_match_hf():
    hf = hf_model(TINY)
    model = materialize(TINY, seed=0).eval()
    with torch.no_grad():
        # Non-unit norm gains, so a swapped or missing norm weight cannot hide.
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(0.2 * torch.randn_like(p))
    hf.load_state_dict(to_hf_state_dict(model, TINY), strict=True)

    tokens = torch.randint(0, TINY.vocab_size, (2, 96), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(tokens)
        out = hf(input_ids=tokens, labels=tokens)
    assert logits.shape == (2, 96, TINY.vocab_size)
    torch.testing.assert_close(logits, out.logits, rtol=0, atol=1e-5)
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
    torch.testing.assert_close(loss, out.loss, rtol=0, atol=1e-6)


# --- initialisation and materialization ------------------------------------------------------


def test_init_is_deterministic_per_seed():
    a, b, c = (materialize(TINY, seed).state_dict() for seed in (7, 7, 8))
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    for k in a:
        # Norm gains are ones whatever the seed; every random weight must change with it.
        assert torch.equal(a[k], c[k]) == k.endswith("norm.weight"), k


def test_init_scales():
    cfg = model_cfg("llama31_debug")
    model = materialize(cfg, seed=0)
    last = model.layers[str(cfg.n_layers - 1)]
    depth_std = cfg.init_std / (2 * cfg.n_layers) ** 0.5
    assert last.attention.wo.weight.std().item() == pytest.approx(depth_std, rel=0.05)
    assert last.attention.wq.weight.std().item() == pytest.approx(cfg.init_std, rel=0.05)
    out_std = cfg.dim**-0.5
    assert model.output.weight.abs().max().item() <= 3 * out_std
    assert all(torch.all(m.weight == 1) for n, m in model.named_modules() if n.endswith("norm"))


def test_meta_then_materialize_gives_finite_forward():
    cfg = model_cfg("llama31_debug")
    model = materialize(cfg, seed=0)
    head_dim = cfg.dim // cfg.n_heads
    expected = precompute_freqs_cis(head_dim, cfg.max_seq_len, cfg.rope_theta, cfg.rope_scaling)
    assert torch.equal(model.freqs_cis, expected)
    assert all(p.device.type == "cpu" for p in model.parameters())
    tokens = torch.randint(0, cfg.vocab_size, (2, 32))
    logits = model(tokens)
    assert logits.shape == (2, 32, cfg.vocab_size)
    assert torch.isfinite(logits).all()


def test_pipeline_stages_compose_to_full_model():
    model = materialize(TINY, seed=0)
    first, second = copy.deepcopy(model), copy.deepcopy(model)
    del first.layers["1"]
    first.norm, first.output = None, None
    del second.layers["0"]
    second.tok_embeddings = None
    assert "layers.1.attention.wq.weight" in dict(second.named_parameters())
    tokens = torch.randint(0, TINY.vocab_size, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(second(first(tokens)), model(tokens), rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:Casting complex values to real")
def test_dtype_cast_of_module_is_reported():
    model = materialize(TINY, seed=0).to(torch.bfloat16)
    with pytest.raises(RuntimeError, match="freqs_cis"):
        model(torch.zeros(1, 4, dtype=torch.long))
