"""Native ``Llama`` weights as an unsharded Megatron ``GPTModel`` state dict (tp = pp = 1).

The two models compute the same function: Megatron's fused ``linear_qkv`` holds, per query
group, that group's query heads then its key and value head; ``linear_fc1`` stacks the SwiGLU
gate over the up projection; and Megatron's RoPE rotates feature ``i`` with ``i + head_dim/2``
where Meta's pairs ``2i`` with ``2i+1``, so query and key rows are permuted within each head
(the permutation Megatron-Bridge and NeMo apply to Hugging Face Llama weights).
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from recipes.backends.megatron.provider import padded_vocab_size


def rope_permutation(head_dim: int) -> torch.Tensor:
    """Row order taking Meta's interleaved RoPE pairs to Megatron's half-split ones."""
    return torch.cat([torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)])


def _pad_rows(weight: torch.Tensor, rows: int) -> torch.Tensor:
    return torch.cat([weight, weight.new_zeros(rows - weight.shape[0], weight.shape[1])])


def native_to_megatron(
    state: dict[str, torch.Tensor], cfg: DictConfig, *, te_spec: bool = False
) -> dict[str, torch.Tensor]:
    """Megatron state dict of the native ``Llama`` weights ``state`` for ``cfg.model``.

    ``te_spec`` names the norms as Transformer Engine's fused norm-linear layers hold them.
    """
    model = cfg.model
    head_dim = model.dim // model.n_heads
    rep = model.n_heads // model.n_kv_heads
    perm = rope_permutation(head_dim)
    vocab = padded_vocab_size(
        model.vocab_size, cfg.backend.make_vocab_size_divisible_by, cfg.parallelism.tp
    )
    attn_norm = (
        "self_attention.linear_qkv.layer_norm_weight" if te_spec else "input_layernorm.weight"
    )
    mlp_norm = "mlp.linear_fc1.layer_norm_weight" if te_spec else "pre_mlp_layernorm.weight"
    out = {
        "embedding.word_embeddings.weight": _pad_rows(state["tok_embeddings.weight"], vocab),
        "decoder.final_layernorm.weight": state["norm.weight"],
        "output_layer.weight": _pad_rows(state["output.weight"], vocab),
    }
    for i in range(model.n_layers):
        src, dst = f"layers.{i}.", f"decoder.layers.{i}."
        q = state[src + "attention.wq.weight"].view(model.n_heads, head_dim, -1)[:, perm]
        k = state[src + "attention.wk.weight"].view(model.n_kv_heads, head_dim, -1)[:, perm]
        v = state[src + "attention.wv.weight"].view(model.n_kv_heads, head_dim, -1)
        q = q.reshape(model.n_kv_heads, rep * head_dim, -1)
        qkv = torch.cat([q, k, v], dim=1).reshape(-1, model.dim)
        gate, up = state[src + "feed_forward.w1.weight"], state[src + "feed_forward.w3.weight"]
        out |= {
            dst + attn_norm: state[src + "attention_norm.weight"],
            dst + "self_attention.linear_qkv.weight": qkv,
            dst + "self_attention.linear_proj.weight": state[src + "attention.wo.weight"],
            dst + mlp_norm: state[src + "ffn_norm.weight"],
            dst + "mlp.linear_fc1.weight": torch.cat([gate, up]),
            dst + "mlp.linear_fc2.weight": state[src + "feed_forward.w2.weight"],
        }
    return out
