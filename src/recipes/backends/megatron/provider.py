"""Llama 3.1 as Megatron-core's ``GPTModel``: the ``model`` config translated field by field.

``transformer_config`` maps ``cfg.model``, ``cfg.parallelism``, ``cfg.dtype`` and the megatron
backend fields onto ``TransformerConfig``; ``build_chunks`` builds this rank's model chunks (one
per virtual pipeline stage) with Transformer Engine's layer spec when TE imports and Megatron's
local spec otherwise.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from megatron.core import parallel_state
from megatron.core.models.gpt import GPTModel
from megatron.core.models.gpt.gpt_layer_specs import (
    get_gpt_layer_local_spec,
    get_gpt_layer_with_transformer_engine_spec,
)
from megatron.core.transformer import TransformerConfig
from megatron.core.transformer.transformer_block import (
    TransformerBlockSubmodules,
    get_num_layers_to_build,
)
from megatron.core.transformer.transformer_layer import (
    TransformerLayer,
    get_transformer_layer_offset,
)
from omegaconf import DictConfig

from recipes.backends.megatron import fp8
from recipes.backends.megatron.env import te_import_error

RECOMPUTE = {
    "none": {},
    "selective": {"recompute_granularity": "selective"},
    "full": {
        "recompute_granularity": "full",
        "recompute_method": "uniform",
        "recompute_num_layers": 1,
    },
}
"""backend.activation_checkpointing -> Megatron's recompute options (selective: core attention)."""

PARAMS_DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp8": torch.bfloat16}
"""dtype.name -> parameter dtype; fp8 runs keep bf16 weights and let TE cast GEMM inputs."""


def padded_vocab_size(vocab_size: int, divisible_by: int, tp: int) -> int:
    """Vocabulary rounded up to a multiple of ``divisible_by * tp``, as Megatron pads it."""
    multiple = divisible_by * tp
    return -(-vocab_size // multiple) * multiple


def uses_transformer_engine(cfg: DictConfig) -> bool:
    """TE's layer spec, fused kernels and FP8: on a GPU where Transformer Engine imports."""
    return cfg.cluster.accelerator == "gpu" and te_import_error() is None


def transformer_config(cfg: DictConfig) -> TransformerConfig:
    """``TransformerConfig`` for ``cfg``, in the parallel state already initialised."""
    model, par, backend = cfg.model, cfg.parallelism, cfg.backend
    on_cpu = cfg.cluster.accelerator == "cpu"
    fused = uses_transformer_engine(cfg)
    params_dtype = PARAMS_DTYPE[cfg.dtype.name]
    return TransformerConfig(
        num_layers=model.n_layers,
        hidden_size=model.dim,
        ffn_hidden_size=model.ffn_dim,
        num_attention_heads=model.n_heads,
        num_query_groups=model.n_kv_heads,
        kv_channels=model.dim // model.n_heads,
        normalization="RMSNorm",
        layernorm_epsilon=model.norm_eps,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=model.init_std,
        tensor_model_parallel_size=par.tp,
        pipeline_model_parallel_size=par.pp,
        virtual_pipeline_model_parallel_size=par.vp if par.vp > 1 else None,
        context_parallel_size=par.cp,
        sequence_parallel=par.sequence_parallel,
        params_dtype=params_dtype,
        pipeline_dtype=params_dtype,
        bf16=params_dtype == torch.bfloat16,
        # Full master weights built on every rank and split: TP-invariant initial weights.
        use_cpu_initialization=on_cpu,
        deallocate_pipeline_outputs=True,
        # Interleaved 1F1B overlaps its sends and receives with compute on GPU (as Megatron-LM
        # and NeMo do); gloo matches p2p messages in posting order, which only the unbatched,
        # rank-parity-ordered exchange keeps consistent when both neighbours are one rank.
        overlap_p2p_comm=par.vp > 1 and not on_cpu,
        batch_p2p_comm=par.vp == 1 and not on_cpu,
        bias_activation_fusion=fused,
        masked_softmax_fusion=fused,
        apply_rope_fusion=fused,
        cross_entropy_loss_fusion=fused,
        gradient_accumulation_fusion=fused,
        **RECOMPUTE[backend.activation_checkpointing],
        **fp8.transformer_config_kwargs(cfg.dtype),
    )


class LayerSeededTransformerLayer(TransformerLayer):
    """A TransformerLayer that draws its initial weights from a seed of its own.

    Seeding each layer from ``(init_seed, global layer number)`` makes a pipeline stage's
    weights independent of which stage builds them, so every layout starts from the same model.
    """

    def __init__(self, config, submodules, layer_number: int = 1, *args, init_seed: int, **kwargs):
        offset = get_transformer_layer_offset(config, kwargs.get("vp_stage"))
        torch.manual_seed(init_seed * 100_003 + offset + layer_number)
        super().__init__(config, submodules, layer_number, *args, **kwargs)


def block_spec(cfg: DictConfig, config: TransformerConfig, vp_stage: int | None):
    """Layer specs of this pipeline stage: TE's with TE, else Megatron's local spec (adapted
    for sequence and context parallelism on CPU by :mod:`recipes.backends.megatron.cpu`)."""
    if uses_transformer_engine(cfg):
        from megatron.core.extensions.transformer_engine import TENorm

        layer, norm = get_gpt_layer_with_transformer_engine_spec(), TENorm
    else:
        layer = get_gpt_layer_local_spec(normalization="RMSNorm")
        norm = layer.submodules.input_layernorm
        if cfg.cluster.accelerator == "cpu":
            from recipes.backends.megatron import cpu

            layer, norm = cpu.local_spec(layer, context_parallel=config.context_parallel_size > 1)
    if config.use_cpu_initialization:
        params = {**layer.params, "init_seed": cfg.seed}
        layer = dataclasses.replace(layer, module=LayerSeededTransformerLayer, params=params)
    count = get_num_layers_to_build(config, vp_stage=vp_stage)
    return TransformerBlockSubmodules(layer_specs=[layer] * count, layer_norm=norm)


class LlamaGPTModel(GPTModel):
    """GPTModel whose loss ignores the vocabulary padding Megatron adds for tensor parallelism."""

    def __init__(self, *args, true_vocab_size: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.true_vocab_size = true_vocab_size

    def compute_language_model_loss(self, labels: torch.Tensor, logits: torch.Tensor, *args, **kw):
        """Per-token loss ``[b, s]`` over the real vocabulary (padded logits masked out)."""
        local = logits.shape[-1]
        start = parallel_state.get_tensor_model_parallel_rank() * local
        valid = self.true_vocab_size - start
        if valid < local:
            column = torch.arange(local, device=logits.device)
            logits = logits.masked_fill(column >= valid, torch.finfo(logits.dtype).min)
        return super().compute_language_model_loss(labels, logits, *args, **kw)


def build_chunks(cfg: DictConfig, config: TransformerConfig) -> list[LlamaGPTModel]:
    """This rank's model chunks, one per virtual pipeline stage, on the current device."""
    vp = cfg.parallelism.vp
    vocab = padded_vocab_size(
        cfg.model.vocab_size, cfg.backend.make_vocab_size_divisible_by, cfg.parallelism.tp
    )
    rope = cfg.model.rope_scaling
    chunks = []
    torch.manual_seed(cfg.seed)
    for stage in range(vp):
        vp_stage = stage if vp > 1 else None
        chunk = LlamaGPTModel(
            config=config,
            transformer_layer_spec=block_spec(cfg, config, vp_stage),
            vocab_size=vocab,
            true_vocab_size=cfg.model.vocab_size,
            max_sequence_length=cfg.model.max_seq_len,
            pre_process=parallel_state.is_pipeline_first_stage(
                ignore_virtual=False, vp_stage=vp_stage
            ),
            post_process=parallel_state.is_pipeline_last_stage(
                ignore_virtual=False, vp_stage=vp_stage
            ),
            share_embeddings_and_output_weights=False,
            position_embedding_type="rope",
            rotary_base=int(cfg.model.rope_theta),
            rope_scaling=rope is not None,
            rope_scaling_factor=rope.factor if rope is not None else 8.0,
            vp_stage=vp_stage,
        )
        chunks.append(chunk)
    return chunks
