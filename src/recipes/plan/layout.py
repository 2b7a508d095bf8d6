"""Resolve and validate the parallel layout before any process group exists.

Every rule raises :class:`recipes.errors.LayoutError` (a ConfigError) naming the field, the value,
the rule and the nearest valid values (torchtitan ``ParallelDims._validate`` is the model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from omegaconf import DictConfig

from recipes.errors import LayoutError

PP_SCHEDULES = ("1f1b", "gpipe")


@dataclass(frozen=True)
class Layout:
    """Resolved parallel degrees; their product is the world size."""

    world_size: int
    dp_replicate: int
    dp_shard: int
    tp: int
    pp: int
    vp: int
    cp: int
    sequence_parallel: bool
    pp_schedule: str = "1f1b"

    @property
    def dp(self) -> int:
        """Data-parallel size (replicas x shards): how many ranks split the global batch."""
        return self.dp_replicate * self.dp_shard

    @property
    def is_single_process(self) -> bool:
        return self.world_size == 1


def micro_batches(trainer: DictConfig, layout: Layout) -> int:
    """Micro-batches each data-parallel rank runs per optimizer step: GBS / (MBS x DP)."""
    return trainer.global_batch_size // (trainer.micro_batch_size * layout.dp)


def divisors(n: int) -> list[int]:
    """Positive divisors of ``n`` in increasing order."""
    return [d for d in range(1, n + 1) if n % d == 0]


def _choices(values: list[int]) -> str:
    return "{" + ", ".join(str(v) for v in values) + "}"


def _nearest_multiples(value: int, step: int) -> str:
    below = max(step, value // step * step)
    above = below + step if below < value else below
    return f"{below}" if below == above else f"{below} or {above}"


def resolve_layout(par: DictConfig, world_size: int) -> Layout:
    """Fill ``dp_shard=-1`` from the world size and check the degrees multiply to it."""
    for key in ("dp_replicate", "tp", "pp", "vp", "cp"):
        if par[key] < 1:
            raise LayoutError(f"parallelism.{key}={par[key]} must be >= 1; use {key}=1 to disable")
    fixed = par.dp_replicate * par.tp * par.pp * par.cp
    dp_shard = par.dp_shard
    if dp_shard == -1:
        if world_size % fixed:
            raise LayoutError(
                f"parallelism: dp_replicate*tp*pp*cp={fixed} does not divide the world size "
                f"{world_size}; launch a multiple of {fixed} processes (a dry run: "
                f"cluster.num_gpus={fixed * max(1, -(-world_size // fixed))}) or choose degrees "
                f"whose product divides {world_size}"
            )
        dp_shard = world_size // fixed
    elif dp_shard < 1:
        raise LayoutError(
            f"parallelism.dp_shard={dp_shard} must be >= 1, or -1 for the rest; use "
            "dp_shard=-1 (what the other degrees leave of the world size)"
        )
    if fixed * dp_shard != world_size:
        raise LayoutError(
            f"parallelism: dp_replicate*dp_shard*tp*pp*cp={fixed * dp_shard} must equal the world "
            f"size {world_size}; set parallelism.dp_shard=-1 or launch {fixed * dp_shard} "
            f"processes (a dry run: cluster.num_gpus={fixed * dp_shard})"
        )
    if par.vp > 1 and par.pp == 1:
        raise LayoutError(
            f"parallelism.vp={par.vp} needs pipeline parallelism; set pp >= 2 or vp=1"
        )
    if par.pp_schedule not in PP_SCHEDULES:
        raise LayoutError(
            f"parallelism.pp_schedule={par.pp_schedule!r} is not one of {list(PP_SCHEDULES)}; "
            "pick one of them (vp > 1 runs interleaved 1F1B with 1f1b)"
        )
    if par.vp > 1 and par.pp_schedule != "1f1b":
        raise LayoutError(
            f"parallelism.vp={par.vp} runs interleaved 1F1B; set pp_schedule=1f1b or vp=1"
        )
    if par.sequence_parallel and par.tp == 1:
        raise LayoutError(
            "parallelism.sequence_parallel=true needs tp >= 2; "
            "set tp >= 2 or sequence_parallel=false"
        )
    return Layout(
        world_size=world_size,
        dp_replicate=par.dp_replicate,
        dp_shard=dp_shard,
        tp=par.tp,
        pp=par.pp,
        vp=par.vp,
        cp=par.cp,
        sequence_parallel=par.sequence_parallel,
        pp_schedule=par.pp_schedule,
    )


def check_fits_model(layout: Layout, cfg: DictConfig) -> None:
    """Divisibility rules between the layout, the model and the batch shape."""
    model, trainer = cfg.model, cfg.trainer
    # Tensor parallelism splits heads and the FFN's inner size evenly across its ranks.
    for key in ("n_heads", "n_kv_heads", "ffn_dim"):
        if model[key] % layout.tp:
            valid = [
                d
                for d in divisors(model.n_kv_heads)
                if model.n_heads % d == 0 and model.ffn_dim % d == 0
            ]
            raise LayoutError(
                f"parallelism.tp={layout.tp} does not divide model.{key}={model[key]}; "
                f"use tp in {_choices(valid)}"
            )
    stages = layout.pp * layout.vp
    if model.n_layers % stages:
        valid = [d for d in divisors(model.n_layers) if d % layout.pp == 0 and d > 1]
        fix = (
            f"use pp*vp in {_choices(valid)}"
            if valid
            else f"no vp fits pp={layout.pp}: use pp in {_choices(divisors(model.n_layers))}"
        )
        raise LayoutError(
            f"parallelism.pp*vp={layout.pp}*{layout.vp}={stages} does not divide "
            f"model.n_layers={model.n_layers}; {fix}"
        )
    if layout.cp > 1 and trainer.seq_len % (2 * layout.cp):
        raise LayoutError(
            f"trainer.seq_len={trainer.seq_len} is not divisible by 2*parallelism.cp="
            f"{2 * layout.cp} (load-balanced context parallelism splits each sequence into "
            f"2*cp chunks); use seq_len={_nearest_multiples(trainer.seq_len, 2 * layout.cp)}"
        )
    # Sequence parallelism shards each CP rank's tokens along the sequence over the TP ranks;
    # uneven shards fail in the collectives mid-step (gloo: a size mismatch, then an abort).
    per_cp_rank = trainer.seq_len // layout.cp
    if layout.sequence_parallel and per_cp_rank % layout.tp:
        unit = math.lcm(2 * layout.cp, layout.cp * layout.tp) if layout.cp > 1 else layout.tp
        raise LayoutError(
            f"parallelism.sequence_parallel=true splits each rank's {per_cp_rank} tokens "
            f"(trainer.seq_len={trainer.seq_len} / cp={layout.cp}) over tp={layout.tp}, which "
            f"does not divide them; use seq_len={_nearest_multiples(trainer.seq_len, unit)}, "
            "or sequence_parallel=false"
        )
    per_step = trainer.micro_batch_size * layout.dp
    if trainer.global_batch_size % per_step:
        raise LayoutError(
            f"trainer.global_batch_size={trainer.global_batch_size} is not divisible by "
            f"micro_batch_size*dp={trainer.micro_batch_size}*{layout.dp}={per_step}; use "
            f"global_batch_size={_nearest_multiples(trainer.global_batch_size, per_step)}"
        )
    per_rank = micro_batches(trainer, layout)
    # Each pipeline rank needs a micro-batch in flight per stage; interleaving cycles through pp.
    step = layout.pp if layout.vp > 1 else 1
    if layout.pp > 1 and (per_rank < layout.pp or per_rank % step):
        need = f"a multiple of pp={layout.pp}" if layout.vp > 1 else f"at least pp={layout.pp}"
        unit = per_step * layout.pp
        fix = _nearest_multiples(max(trainer.global_batch_size, unit), unit)
        raise LayoutError(
            f"trainer.global_batch_size={trainer.global_batch_size} gives {per_rank} "
            f"micro-batches per pipeline (global_batch_size / (micro_batch_size*dp)); it must be "
            f"{need}; use global_batch_size={fix}"
        )
