"""Dry run: predict memory per GPU and step time for a configuration, without any GPU.

Memory per rank (mixed-precision AdamW, FSDP/ZeRO-3 sharding over ``dp_shard``)::

    params_per_shard = (layers_per_stage * block_params + embedding and/or output head) / tp
    model_states     = params_per_shard * 16 B / dp_shard   # fp32 master, fp32 grad, Adam m, v
    gathered         = 2 blocks of params_per_shard, unsharded in the compute dtype (prefetch)
    activations     = layers_per_stage * in_flight * a_block * (s / cp) * mbs * bytes
    a_block         = 6 h + 2 h_kv + f F elements saved per token and block (fused attention,
                      no recompute): norm in/out x2, q, k, v, attention out, and the SwiGLU's
                      f = 4 inner tensors (native: both matmul outputs, silu's output, the
                      product) or f = 3 (Megatron's fused bias-SwiGLU keeps its 2F input; fc2
                      its F input); divided by tp (norm terms too only with sequence parallelism).
                      Megatron is planned as it runs with Transformer Engine (NeMo's container):
                      its local spec, without TE, keeps the attention scores and four FFN tensors
    in_flight       = what the first pipeline stage holds at its peak, in whole micro-batches
                      through its layers, m = micro-batches per step: 1 without PP; 1F1B
                      min(pp, m); interleaved 1F1B min(pp + (pp - 1) / vp, m) (its warm-up
                      runs 2 (pp - 1) + (vp - 1) pp chunk forwards, then one more, each chunk
                      1/vp of the stage); GPipe m (every forward before any backward)
    logits          = 2 * (s / cp) * mbs * V / tp * 4 B on the last stage (fp32 logits and grad)

Step time is the compute-bound estimate ``flops_per_step / (world * peak * mfu)`` at a few
stated MFU levels; the measured MFU of a real run says which level applies. Two overheads a
layout adds to it are stated beside it (:func:`overheads`)::

    pipeline_bubble = (pp - 1) / (vp * m + pp - 1)   # idle share of a step, m micro-batches (1F1B)
    recompute_flops = recomputed forward FLOPs / model FLOPs
                      full: every block's forward (a third of its training FLOPs)
                      selective: Megatron, the attention scores' forward; native, no matmul

A plan that does not fit the GPU lists layouts of the same world size that the same memory model
fits (:func:`fitting_layouts`), as the overrides that pick them.
"""

from __future__ import annotations

import logging
import math

from omegaconf import DictConfig, OmegaConf

from recipes import distributed, metrics
from recipes.errors import ConfigError
from recipes.models.llama import num_params
from recipes.plan.layout import Layout, check_fits_model, divisors, micro_batches
from recipes.results.baselines import expected_for_plan
from recipes.results.manifest import build_manifest
from recipes.results.run_dir import create_run_dir, write_json, write_new

log = logging.getLogger("recipes")

GIB = 1024**3
MFU_LEVELS = (0.3, 0.4, 0.5)
"""MFU levels at which a dry run states the step time."""
BYTES = {"fp32": 4, "bf16": 2, "fp8": 2}
"""Bytes per activation element and per gathered parameter for each dtype."""
TP_MAX = 8
"""Layouts a plan suggests keep tensor parallelism inside one node of 8 GPUs."""
RECOMPUTE_ORDER = ("none", "selective", "full")
"""backend.activation_checkpointing modes, from the least recomputation to the most."""
SUGGESTIONS = 5
"""How many fitting layouts a plan that does not fit lists."""


def memory_per_rank(
    cfg: DictConfig, layout: Layout, recompute: str | None = None
) -> dict[str, float]:
    """Predicted peak memory of the busiest rank, by part, in GiB.

    Model states: native FSDP2 shards fp32 weights, gradients and AdamW state (16 bytes a
    parameter) over ``dp_shard x cp`` (the mesh it shards over); Megatron keeps bf16 weights
    and fp32 gradients whole on each rank and shards only the fp32 main weights and AdamW state
    (12 bytes) over ``dp x cp`` (its distributed optimizer). Activations: per layer and token,
    what backward keeps under ``backend.activation_checkpointing`` (or ``recompute``, a mode
    to predict for instead).
    """
    model, trainer = cfg.model, cfg.trainer
    table = model.vocab_size * model.dim
    block = (num_params(model) - 2 * table - model.dim) / model.n_layers
    layers_per_stage = model.n_layers / layout.pp
    # One stage holds both embedding and output head without PP, the larger end stage with it.
    ends = (2 * table if layout.pp == 1 else table) + model.dim
    params = (layers_per_stage * block + ends) / layout.tp
    width = BYTES[cfg.dtype.name]
    tokens = trainer.seq_len / layout.cp * trainer.micro_batch_size
    in_flight = micro_batches_in_flight(layout, micro_batches(trainer, layout))
    saved, recomputed = activations_per_token(cfg, layout, recompute)
    megatron = cfg.backend.name == "megatron"
    parts = {
        "model_states": params * _state_bytes(cfg, layout),
        "gathered_params": 0 if megatron else 2 * block / layout.tp * width,
        "activations": (layers_per_stage * in_flight * saved + recomputed) * tokens * width,
        "logits": 2 * tokens * model.vocab_size / layout.tp * 4,
    }
    gib = {name: value / GIB for name, value in parts.items()}
    gib["total"] = sum(gib.values())
    gib["params_per_shard"] = params
    return gib


def micro_batches_in_flight(layout: Layout, micro_batches: int) -> float:
    """Micro-batches whose activations the first pipeline stage holds at its peak, in units of
    the whole stage, under ``layout``'s schedule (the module docstring's ``in_flight``)."""
    if layout.pp == 1:
        return 1
    if layout.pp_schedule == "gpipe":
        return micro_batches
    if layout.vp > 1:  # Megatron's and torch's interleaved 1F1B warm up alike
        return min(layout.pp + (layout.pp - 1) / layout.vp, micro_batches)
    return min(layout.pp, micro_batches)


def _state_bytes(cfg: DictConfig, layout: Layout) -> float:
    """Bytes of weights, gradients and AdamW state one rank holds per parameter of its stage."""
    if cfg.backend.name != "megatron":
        return 16 / (layout.dp_shard * layout.cp)
    whole = 2 + 4  # bf16 weights, fp32 gradients (grad_reduce_in_fp32)
    if cfg.dtype.name == "fp32":
        whole, main = 4 + 4, 8  # fp32 weights are the main weights: AdamW's two moments only
    else:
        main = 12  # fp32 main weights + AdamW's two moments
    shards = layout.dp * layout.cp if cfg.backend.use_distributed_optimizer else 1
    return whole + main / shards


def activations_per_token(
    cfg: DictConfig, layout: Layout, mode: str | None = None
) -> tuple[float, float]:
    """Elements kept per token (a) for each layer until its backward, (b) once, for the one
    layer being recomputed (full checkpointing). No checkpointing keeps both norms' inputs and
    outputs, q, k, v, the attention output, and the FFN's inner tensors (four; three on
    Megatron, whose fused bias-SwiGLU keeps only its input); selective (native) keeps every
    matmul's and attention's output; full keeps the block's input."""
    model, tp = cfg.model, layout.tp
    kv_dim = model.n_kv_heads * model.dim // model.n_heads
    seq_split = tp if layout.sequence_parallel else 1
    ffn = (3 if cfg.backend.name == "megatron" else 4) * model.ffn_dim
    everything = 4 * model.dim / seq_split + (2 * model.dim + 2 * kv_dim + ffn) / tp
    block_input = model.dim / seq_split
    mode = mode or cfg.backend.activation_checkpointing
    if mode == "full":
        return block_input, everything
    if mode == "selective" and cfg.backend.name != "megatron":  # Megatron's: core attention
        return block_input + (4 * model.dim + 2 * kv_dim + 2 * model.ffn_dim) / tp, 0.0
    return everything, 0.0


def overheads(cfg: DictConfig, layout: Layout, recompute: str | None = None) -> dict[str, float]:
    """Share of each step a pipeline rank idles, and the FLOPs recomputation adds (as a share of
    the model FLOPs), for ``layout`` under ``backend.activation_checkpointing`` or ``recompute``."""
    model, trainer = cfg.model, cfg.trainer
    bubble = (layout.pp - 1) / (layout.vp * micro_batches(trainer, layout) + layout.pp - 1)
    shape = {k: model[k] for k in ("n_layers", "dim", "n_heads", "n_kv_heads")}
    attention = metrics.attention_flops_per_token(seq_len=trainer.seq_len, **shape)
    scores = attention - metrics.attention_flops_per_token(seq_len=0, **shape)
    blocks = attention + metrics.mlp_flops_per_token(
        n_layers=model.n_layers, dim=model.dim, ffn_dim=model.ffn_dim
    )
    total = blocks + metrics.embedding_flops_per_token(vocab_size=model.vocab_size, dim=model.dim)
    recomputed = {
        "none": 0.0,
        "selective": scores / 3 if cfg.backend.name == "megatron" else 0.0,
        "full": blocks / 3,
    }[recompute or cfg.backend.activation_checkpointing]
    return {"pipeline_bubble": bubble, "recompute_flops": recomputed / total}


def step_time_at_mfu(flops_per_step: float, world: int, peak: metrics.Peak | None) -> dict:
    """Compute-bound step time at each of MFU_LEVELS (empty without a peak)."""
    if peak is None:
        return {}
    return {
        f"{level:.2f}": flops_per_step / (world * peak.tflops * 1e12 * level)
        for level in MFU_LEVELS
    }


def _no_peak_note(gpu: str | None, dtype: str) -> str:
    if gpu is None:  # planned for this machine, which has no GPU
        return (
            "no GPU named to plan for, so no peak FLOPS, step times or memory capacity: add "
            f"cluster.gpu_type=<one of {', '.join(metrics.DEVICE_MEMORY_GIB)}> (dtype=auto then "
            "plans bf16), or cluster.peak_tflops=<dense TFLOPS per device>"
        )
    return metrics.peak_unknown_reason(gpu, dtype)


def fitting_layouts(cfg: DictConfig, layout: Layout, capacity_gib: float) -> list[dict]:
    """Up to SUGGESTIONS layouts of ``layout.world_size`` ranks whose predicted memory fits
    ``capacity_gib``, each as the overrides that pick it (what differs from ``cfg``), its
    predicted GiB and its :func:`overheads`.

    Searched: tp up to TP_MAX (one node) with sequence parallelism, every pp that divides the
    layers (vp 1), cp, and the recompute modes, each checked by the layout's and the backend's
    own rules for this model and global batch; data parallelism (FSDP, dp_replicate 1) takes the
    rest. Order: least recomputation (none, selective, full), then the fewest model-parallel
    ranks (tp x pp x cp), then the fewest pipeline stages. Communication is not modelled.
    """
    from recipes.backends import get_backend

    backend = get_backend(cfg.backend.name)
    model, world = cfg.model, layout.world_size
    heads = math.gcd(model.n_heads, model.n_kv_heads, model.ffn_dim)
    shapes = sorted(
        (RECOMPUTE_ORDER.index(mode), tp * pp * cp, pp, cp, tp, mode)
        for tp in divisors(heads)
        if tp <= TP_MAX and world % tp == 0
        for pp in divisors(model.n_layers)
        if world % (tp * pp) == 0
        for cp in divisors(world // (tp * pp))
        for mode in RECOMPUTE_ORDER
    )
    found: list[dict] = []
    for *_, pp, cp, tp, mode in shapes:
        shard = world // (tp * pp * cp)
        candidate = Layout(world, 1, shard, tp, pp, 1, cp, tp > 1, layout.pp_schedule)
        try:
            check_fits_model(candidate, cfg)
            backend.validate(cfg, candidate)
        except ConfigError:
            continue
        total = memory_per_rank(cfg, candidate, mode)["total"]
        if total > capacity_gib:
            continue
        found.append(
            {
                "overrides": _overrides(cfg, candidate, mode),
                "memory_gib": total,
                **overheads(cfg, candidate, mode),
            }
        )
        if len(found) == SUGGESTIONS:
            break
    return found


def _overrides(cfg: DictConfig, layout: Layout, recompute: str) -> str:
    """The command-line overrides that turn ``cfg``'s layout into ``layout``."""
    par = cfg.parallelism
    wanted = {
        "parallelism.dp_replicate": (par.dp_replicate, 1),
        "parallelism.dp_shard": (par.dp_shard, -1),
        "parallelism.tp": (par.tp, layout.tp),
        "parallelism.pp": (par.pp, layout.pp),
        "parallelism.vp": (par.vp, 1),
        "parallelism.cp": (par.cp, layout.cp),
        "parallelism.sequence_parallel": (par.sequence_parallel, layout.sequence_parallel),
        "backend.activation_checkpointing": (cfg.backend.activation_checkpointing, recompute),
    }
    changed = [
        f"{key}={str(new).lower() if isinstance(new, bool) else new}"
        for key, (old, new) in wanted.items()
        if old != new
    ]
    return " ".join(changed)


def plan(cfg: DictConfig, layout: Layout) -> dict:
    """The dry-run plan: layout, parameters, memory, FLOPs and step time predictions."""
    gpu = cfg.cluster.gpu_type
    peak = metrics.peak_for(gpu or "unknown", cfg.dtype.name, cfg.cluster.peak_tflops)
    flops = metrics.flops_per_step_by_convention(
        cfg.model, seq_len=cfg.trainer.seq_len, global_batch_size=cfg.trainer.global_batch_size
    )
    memory = memory_per_rank(cfg, layout)
    capacity_gib = metrics.DEVICE_MEMORY_GIB.get(metrics.device_key(gpu or "") or "")
    fits = None if capacity_gib is None else memory["total"] <= capacity_gib
    if gpu is None:
        expected = {"baseline": None, "baseline_note": "no cluster.gpu_type named"}
    else:
        config = OmegaConf.to_container(cfg, resolve=True)
        expected = expected_for_plan(config, layout.world_size, gpu)
    return {
        "model": cfg.model.name,
        "dtype": cfg.dtype.name,
        "gpu_type": gpu,
        "layout": {k: getattr(layout, k) for k in layout.__dataclass_fields__},
        "params_total": num_params(cfg.model),
        # One pipeline stage's tensor-parallel shard: what FSDP / the optimizer then shard.
        "params_per_shard": memory.pop("params_per_shard"),
        "memory_gib": memory,
        "memory_capacity_gib": capacity_gib,
        "fits": fits,
        # Only for a plan that does not fit: what would, on the same GPUs.
        "fitting_layouts": fitting_layouts(cfg, layout, capacity_gib) if fits is False else None,
        "tokens_per_step": cfg.trainer.seq_len * cfg.trainer.global_batch_size,
        "model_flops_per_step": flops,
        "flops_convention": "dgxc",
        "peak": None if peak is None else vars(peak),
        "step_time_s_at_mfu": step_time_at_mfu(flops["dgxc"], layout.world_size, peak),
        **overheads(cfg, layout),
        # The published figures of this configuration, where a workload's baselines.yaml has them.
        **expected,
        "note": None if peak else _no_peak_note(gpu, cfg.dtype.name),
    }


def _not_fitting(result: dict) -> str:
    """What a plan that does not fit says, and what would fit instead."""
    head = (
        f"predicted {result['memory_gib']['total']:.1f} GiB per GPU exceeds the "
        f"{result['gpu_type']}'s {result['memory_capacity_gib']} GiB"
    )
    if not result["fitting_layouts"]:
        return (
            f"{head}, and no layout of {result['layout']['world_size']} GPUs is predicted to fit "
            "this model, global batch and sequence; plan for more GPUs (cluster.num_gpus) or a "
            "shorter trainer.seq_len / smaller trainer.micro_batch_size"
        )
    found = "; ".join(
        f"{f['overrides']} ({f['memory_gib']:.1f} GiB, bubble {f['pipeline_bubble']:.1%}, "
        f"recompute +{f['recompute_flops']:.0%} FLOPs)"
        for f in result["fitting_layouts"]
    )
    return f"{head}; layouts predicted to fit (plan.json fitting_layouts): {found}"


def _published(baseline: dict) -> str:
    """The published figures a plan's configuration has, and how its layout differs."""
    figures = {
        "step time": baseline["step_time_s"] and f"{baseline['step_time_s']} s",
        "tokens/s": baseline["tokens_per_s"],
        "tokens/s/GPU": baseline["tokens_per_s_per_gpu"],
        "MFU": baseline["mfu"] and f"{baseline['mfu']:.1%} (of the {baseline['mfu_peak']} peak)",
        "1T tokens in": baseline["time_to_train_1t_days"]
        and f"{baseline['time_to_train_1t_days']} days",
    }
    said = ", ".join(f"{k} {v}" for k, v in figures.items() if v)
    differs = "".join(
        f"; its {k} is {_said(v['baseline'])} (this plan: {_said(v['run'])})"
        for k, v in {**baseline["layout_differs"], **baseline["setup_differs"]}.items()
    )
    return f"published for this configuration ({baseline['source']}): {said}{differs}"


def _said(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def dry_run(cfg: DictConfig, layout: Layout) -> dict:
    """Write ``config.yaml``, ``manifest.json`` and ``plan.json`` to a new run folder."""
    result = plan(cfg, layout)
    if distributed.global_rank() != 0:  # launched on several processes: one plan, one folder
        return result
    prefix = cfg.run_name or f"{cfg.model.name}_{cfg.dtype.name}_dryrun"
    run_dir = create_run_dir(cfg.output_dir, prefix)
    write_new(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    write_json(run_dir / "manifest.json", build_manifest(layout.world_size))
    write_json(run_dir / "plan.json", result)
    log.info("dry run plan written to %s", run_dir / "plan.json")
    if result["fits"] is False:
        log.warning(_not_fitting(result))
    if result["baseline"]:
        log.info(_published(result["baseline"]))
    return {"run_dir": str(run_dir), **result}
