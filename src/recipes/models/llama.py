"""Pure-PyTorch Llama 3.1 (the native backend's model), numerically identical to Meta's reference.

Module names follow torchtitan (``tok_embeddings``, ``layers.<i>.attention.wq``, ...) so its
tensor/pipeline parallel plans apply unchanged. Build on ``meta``, parallelize, then
``to_empty(device=...)`` and ``init_weights()``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from recipes.config import ModelConfig, RopeScalingConfig
from recipes.errors import ConfigError


def rope_inv_freq(
    head_dim: int,
    theta: float,
    scaling: RopeScalingConfig | None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Inverse RoPE frequencies (float32, ``head_dim // 2``), with Llama 3.1's ``llama3`` scaling.

    Wavelengths longer than ``original_max_position / low_freq_factor`` are divided by
    ``factor``, those shorter than ``original_max_position / high_freq_factor`` are kept, and
    the band between is interpolated smoothly.
    """
    # Explicit float32: a bf16 default dtype (Lightning's "true" precision) must not leak in.
    exponents = torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim
    inv_freq = 1.0 / (theta**exponents)
    if scaling is None:
        return inv_freq
    orig = scaling.original_max_position
    low_freq_wavelen = orig / scaling.low_freq_factor
    high_freq_wavelen = orig / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    smooth = (orig / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    interpolated = (1 - smooth) * inv_freq / scaling.factor + smooth * inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / scaling.factor, interpolated)
    return torch.where(wavelen < high_freq_wavelen, inv_freq, scaled)


def precompute_freqs_cis(
    head_dim: int,
    end: int,
    theta: float,
    scaling: RopeScalingConfig | None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """RoPE rotations ``exp(i * position * inv_freq)``, complex64 ``[end, head_dim // 2]``."""
    inv_freq = rope_inv_freq(head_dim, theta, scaling, device)
    positions = torch.arange(end, device=device, dtype=torch.float32)
    angles = torch.outer(positions, inv_freq)
    return torch.polar(torch.ones_like(angles), angles)


def apply_rotary_emb(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """Rotate ``x[B, S, H, D]`` by position; Meta's convention pairs features (2i, 2i+1)."""
    x_complex = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    rotated = x_complex * freqs_cis[None, :, None, :]
    return torch.view_as_real(rotated).flatten(3).type_as(x)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Repeat each K/V head ``n_rep`` times along dim 2, so query head h reads kv head h // n_rep.

    Explicit rather than SDPA's ``enable_gqa`` because not every attention backend (context
    parallel, some fused kernels) accepts that flag.
    """
    if n_rep == 1:
        return x
    b, s, n_kv, d = x.shape
    return x[:, :, :, None, :].expand(b, s, n_kv, n_rep, d).reshape(b, s, n_kv * n_rep, d)


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in float32 and cast back before the weight, as Meta does."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise the last dimension of ``x``."""
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight

    def reset_parameters(self) -> None:
        """Unit gain."""
        nn.init.ones_(self.weight)


SDPA_KERNELS = {
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}
"""``backend.sdpa_backends`` names (recipes.config.SDPA_BACKENDS) to torch's attention kernels."""


class Attention(nn.Module):
    """Causal grouped-query self-attention with RoPE on queries and keys; no biases."""

    sdpa_priority: list[SDPBackend] | None = None
    """Attention kernels in the order SDPA tries them (:func:`set_sdpa_priority`); None keeps
    torch's own order."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.head_dim = cfg.dim // cfg.n_heads
        self.n_rep = cfg.n_heads // cfg.n_kv_heads
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * self.head_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
        """Attend over ``x[B, S, dim]``."""
        b, s, _ = x.shape
        # -1 heads: under tensor parallelism each rank holds only its share of the heads.
        q = self.wq(x).view(b, s, -1, self.head_dim)
        k = self.wk(x).view(b, s, -1, self.head_dim)
        v = self.wv(x).view(b, s, -1, self.head_dim)
        # Sliced here, where the full sequence is present (sequence parallelism shards it
        # between blocks; context parallelism shards the table and the sequence alike).
        freqs_cis = freqs_cis[:s]
        q, k = apply_rotary_emb(q, freqs_cis), apply_rotary_emb(k, freqs_cis)
        k, v = repeat_kv(k, self.n_rep), repeat_kv(v, self.n_rep)
        # Inside the module, so activation checkpointing's recompute picks the same kernel.
        order = self.sdpa_priority
        with sdpa_kernel(order, set_priority=True) if order else contextlib.nullcontext():
            out = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
            )
        return self.wo(out.transpose(1, 2).reshape(b, s, -1))

    def init_weights(self, std_in: float, std_out: float) -> None:
        """q/k/v get ``std_in``; the output projection the depth-scaled ``std_out``."""
        for linear in (self.wq, self.wk, self.wv):
            nn.init.normal_(linear.weight, mean=0.0, std=std_in)
        nn.init.trunc_normal_(self.wo.weight, std=std_out, a=-3 * std_out, b=3 * std_out)


class FeedForward(nn.Module):
    """SwiGLU: ``w2(silu(w1 x) * w3 x)``; no biases."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the gated MLP."""
        return self.w2(F.silu(self.w1(x)) * self.w3(x))

    def init_weights(self, std_in: float, std_out: float) -> None:
        """The gate gets ``std_in``; w2 and w3 the depth-scaled ``std_out``, as torchtitan does."""
        nn.init.normal_(self.w1.weight, mean=0.0, std=std_in)
        for linear in (self.w2, self.w3):
            nn.init.trunc_normal_(linear.weight, std=std_out, a=-3 * std_out, b=3 * std_out)


class TransformerBlock(nn.Module):
    """Pre-norm block: ``h = x + attn(norm(x))``, ``out = h + ffn(norm(h))``."""

    def __init__(self, layer_id: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.attention = Attention(cfg)
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg.dim, cfg.ffn_dim)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)

    def forward(self, x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
        """Run one block over ``x[B, S, dim]``."""
        h = x + self.attention(self.attention_norm(x), freqs_cis)
        return h + self.feed_forward(self.ffn_norm(h))

    def init_weights(self, init_std: float) -> None:
        """Depth init: output-side weights shrink with ``1 / sqrt(2 * (layer_id + 1))``."""
        depth_std = init_std / math.sqrt(2 * (self.layer_id + 1))
        self.attention.init_weights(init_std, depth_std)
        self.feed_forward.init_weights(init_std, depth_std)
        self.attention_norm.reset_parameters()
        self.ffn_norm.reset_parameters()


SIZES = ("dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "vocab_size", "max_seq_len")
MODEL_RULES = (
    *((key, ">= 1", lambda v: v >= 1) for key in SIZES),
    ("norm_eps", "> 0", lambda v: v > 0),
    ("rope_theta", "> 0", lambda v: v > 0),
    ("init_std", "> 0", lambda v: v > 0),
)
"""(key, rule, check) of each ``model.*`` size on its own."""


def check_shape(cfg: ModelConfig) -> None:
    """Reject shapes the attention cannot be built with, naming the field and a fix."""
    for key, rule, ok in MODEL_RULES:
        if not ok(getattr(cfg, key)):
            raise ConfigError(
                f"model.{key}={getattr(cfg, key)} must be {rule}; leave it at the model's value "
                f"(model=llama31_8b etc. set it) or give a size {rule}"
            )
    if cfg.dim % cfg.n_heads:
        raise ConfigError(
            f"model.dim={cfg.dim} is not divisible by model.n_heads={cfg.n_heads}; "
            "choose n_heads dividing dim"
        )
    if cfg.n_heads % cfg.n_kv_heads:
        raise ConfigError(
            f"model.n_heads={cfg.n_heads} is not divisible by model.n_kv_heads={cfg.n_kv_heads}; "
            "choose n_kv_heads dividing n_heads"
        )
    if (cfg.dim // cfg.n_heads) % 2:
        raise ConfigError(
            f"head_dim = model.dim / model.n_heads = {cfg.dim // cfg.n_heads} is odd; "
            "RoPE needs an even head_dim"
        )
    check_rope_scaling(cfg.rope_scaling)


def check_rope_scaling(rope: RopeScalingConfig | None) -> None:
    """Llama 3.1's frequency scaling divides by ``factor`` and by ``high - low``; Llama 3.1 sets
    factor 8, low 1, high 4, original context 8192."""
    if rope is None:
        return
    llama31 = (("factor", 8.0), ("low_freq_factor", 1.0), ("original_max_position", 8192))
    for key, default in llama31:
        value = getattr(rope, key)
        if not value > 0:
            raise ConfigError(
                f"model.rope_scaling.{key}={value} must be > 0; use Llama 3.1's "
                f"{key}={default}, or model.rope_scaling=null for plain RoPE"
            )
    if not rope.high_freq_factor > rope.low_freq_factor:
        raise ConfigError(
            f"model.rope_scaling.high_freq_factor={rope.high_freq_factor} must be > "
            f"low_freq_factor={rope.low_freq_factor} (the band between them is interpolated); "
            "use Llama 3.1's low_freq_factor=1.0 and high_freq_factor=4.0"
        )


class Llama(nn.Module):
    """Llama 3.1 decoder: embedding, ``n_layers`` blocks, final norm, untied output head.

    ``tok_embeddings``, ``norm`` and ``output`` may be set to None (pipeline stages), and
    entries of ``layers`` deleted; ``forward`` then passes hidden states through.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        check_shape(cfg)
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        # A dict keyed by the original index keeps parameter names stable when a pipeline
        # stage deletes the blocks it does not own.
        self.layers = nn.ModuleDict({str(i): TransformerBlock(i, cfg) for i in range(cfg.n_layers)})
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        # Non-persistent: derived from the config, so checkpoints need not carry it.
        self.register_buffer("freqs_cis", self._freqs_cis(device=None), persistent=False)

    def _freqs_cis(self, device: torch.device | str | None) -> torch.Tensor:
        cfg = self.cfg
        return precompute_freqs_cis(
            cfg.dim // cfg.n_heads, cfg.max_seq_len, cfg.rope_theta, cfg.rope_scaling, device
        )

    def init_weights(self, buffer_device: torch.device | str | None = None) -> None:
        """Recompute ``freqs_cis`` and draw every weight from the torch RNG in a fixed order.

        Call after ``to_empty``: the buffer's memory is then uninitialised. ``buffer_device``
        defaults to the buffer's current device.
        """
        device = self.freqs_cis.device if buffer_device is None else buffer_device
        with torch.no_grad():
            self.freqs_cis = self._freqs_cis(device)
        std = self.cfg.init_std
        if self.tok_embeddings is not None:
            nn.init.normal_(self.tok_embeddings.weight, mean=0.0, std=std)
        for block in self.layers.values():
            block.init_weights(std)
        if self.norm is not None:
            self.norm.reset_parameters()
        if self.output is not None:
            out_std = self.cfg.dim**-0.5
            nn.init.trunc_normal_(self.output.weight, std=out_std, a=-3 * out_std, b=3 * out_std)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids ``[B, S]`` (or hidden states ``[B, S, dim]`` on a later pipeline stage) to
        logits ``[B, S, vocab]`` (or hidden states where ``output`` is None)."""
        if not self.freqs_cis.is_complex():
            raise RuntimeError(
                f"freqs_cis has dtype {self.freqs_cis.dtype}: module.to(dtype) cast away its "
                "imaginary part; call init_weights() after the cast or use a mixed-precision "
                "policy (FSDP MixedPrecisionPolicy) instead of converting the module"
            )
        h = self.tok_embeddings(tokens) if self.tok_embeddings is not None else tokens
        seq_len = h.shape[1]
        if seq_len > self.freqs_cis.shape[0]:
            raise ValueError(
                f"sequence length {seq_len} exceeds model.max_seq_len={self.freqs_cis.shape[0]}; "
                "raise model.max_seq_len or shorten trainer.seq_len"
            )
        for block in self.layers.values():
            h = block(h, self.freqs_cis)
        h = self.norm(h) if self.norm is not None else h
        return self.output(h) if self.output is not None else h


def set_sdpa_priority(model: nn.Module, names: Sequence[str]) -> None:
    """Make every attention of ``model`` try the kernels ``names`` (SDPA_KERNELS keys) in order."""
    order = [SDPA_KERNELS[name] for name in names]
    for module in model.modules():
        if isinstance(module, Attention):
            module.sdpa_priority = order


def num_params(cfg: ModelConfig) -> int:
    """Parameter count of ``Llama(cfg)``, computed from the config without building a module.

    Per block: q and o are ``dim x dim``, k and v ``dim x kv_dim``, three SwiGLU matrices
    ``dim x ffn_dim``, two norms of ``dim``; plus embedding and (untied) output
    ``vocab x dim`` each and the final norm.
    """
    kv_dim = cfg.n_kv_heads * (cfg.dim // cfg.n_heads)
    attention = 2 * cfg.dim * cfg.dim + 2 * cfg.dim * kv_dim
    block = attention + 3 * cfg.dim * cfg.ffn_dim + 2 * cfg.dim
    return cfg.n_layers * block + 2 * cfg.vocab_size * cfg.dim + cfg.dim
