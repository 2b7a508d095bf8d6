"""Typed configuration schema (registered in Hydra's ConfigStore) and cross-field validation.

Every YAML file under ``conf/`` is merged onto these dataclasses, so a misspelt key or a value
of the wrong type fails when Hydra composes the config, before anything runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from recipes.errors import ConfigError

__all__ = ["ConfigError", "TrainConfig", "register_configs", "conf_dir", "validate"]

SDPA_BACKENDS = ("cudnn", "flash", "efficient", "math")
"""``backend.sdpa_backends``' default order (native backend): cuDNN first, as torchtitan orders
them. The names a user may list are recipes.models.llama.SDPA_KERNELS' keys."""


@dataclass
class RopeScalingConfig:
    """Llama 3.1's RoPE frequency scaling (the ``llama3`` rope type)."""

    factor: float = 8.0
    """How much the low frequencies are stretched."""
    low_freq_factor: float = 1.0
    """Wavelengths above original_max_position / low_freq_factor are fully scaled."""
    high_freq_factor: float = 4.0
    """Wavelengths below original_max_position / high_freq_factor are left unscaled."""
    original_max_position: int = 8192
    """Context length the base model was pretrained with before scaling."""


@dataclass
class ModelConfig:
    """Llama 3.1 architecture hyperparameters."""

    name: str = MISSING
    """Name of the model, e.g. llama31_8b; used in run ids and reports."""
    dim: int = MISSING
    """Hidden size."""
    n_layers: int = MISSING
    """Number of transformer blocks."""
    n_heads: int = MISSING
    """Number of query heads."""
    n_kv_heads: int = MISSING
    """Number of key/value heads (grouped-query attention)."""
    ffn_dim: int = MISSING
    """Inner size of the SwiGLU feed-forward network."""
    vocab_size: int = 128256
    """Vocabulary size of the embedding and output head."""
    norm_eps: float = 1e-5
    """RMSNorm epsilon."""
    rope_theta: float = 500000.0
    """RoPE base frequency."""
    rope_scaling: RopeScalingConfig | None = field(default_factory=RopeScalingConfig)
    """Llama 3.1 RoPE frequency scaling; null for plain RoPE."""
    max_seq_len: int = 131072
    """Longest sequence the RoPE table is built for."""
    init_std: float = 0.02
    """Standard deviation of the normal weight initialisation."""


@dataclass
class DTypeConfig:
    """Numeric format of the training step."""

    name: str = "auto"
    """fp32, bf16, fp8, or auto (bf16 where a GPU is present, fp32 otherwise)."""
    fp8_recipe: str | None = None
    """FP8 scaling recipe: tensorwise or rowwise (torchao, native); delayed, tensorwise or mxfp8
    (Transformer Engine, megatron)."""
    fp8_amax_history_len: int = 1024
    """Delayed scaling (megatron): steps of amax history the FP8 scales are computed from."""
    fp8_amax_compute_algo: str = "max"
    """Delayed scaling (megatron): max or most_recent amax of the history."""
    fp8_fsdp_all_gather: bool = True
    """native: all-gather FSDP weights in fp8 (tensorwise recipe only)."""
    fp8_precompute_scale: bool = True
    """native: compute all fp8 weight scales in one all-reduce after each optimizer step."""


@dataclass
class ParallelismConfig:
    """Parallel layout; the degrees multiply to the world size."""

    dp_replicate: int = 1
    """Data-parallel replicas (the replicate dimension of HSDP)."""
    dp_shard: int = -1
    """Data-parallel shards (FSDP); -1 takes whatever the other degrees leave."""
    tp: int = 1
    """Tensor-parallel degree."""
    pp: int = 1
    """Pipeline-parallel degree."""
    vp: int = 1
    """Virtual pipeline stages per pipeline rank (interleaved schedule when > 1)."""
    cp: int = 1
    """Context-parallel degree (sequence split across ranks inside attention)."""
    sequence_parallel: bool = False
    """Shard norms and dropout along the sequence across the tensor-parallel group."""
    pp_schedule: str = "1f1b"
    """Pipeline schedule: 1f1b or gpipe; vp > 1 runs interleaved 1F1B."""


@dataclass
class BackendConfig:
    """The engine that runs the model and its parallelism."""

    name: str = "native"
    """native (pure PyTorch) or megatron (Megatron-core)."""
    activation_checkpointing: str = "none"
    """Recompute activations in backward: none, selective, or full."""
    # -- native backend ------------------------------------------------------------------------
    compile: bool = False
    """native: torch.compile each transformer block in place (whole-graph), and the loss."""
    optimizer_impl: str = "fused"
    """native: torch AdamW's kernel: fused (one kernel over all parameters, CPU and CUDA),
    foreach (grouped per-op kernels, torch's default) or for_loop (one parameter at a time)."""
    sdpa_backends: list[str] = field(default_factory=lambda: list(SDPA_BACKENDS))
    """native: attention kernels in the order scaled_dot_product_attention tries them (the first
    that takes the inputs runs): cudnn (cuDNN's fused attention), flash (PyTorch's
    FlashAttention-2), efficient (memory-efficient, also fp32), math (any device and dtype,
    required as the last resort). torch's own order puts cudnn last; torchtitan puts it first."""
    init: str = "auto"
    """native: full (each rank draws the whole model from the seed, then shards it: the same
    weights for every layout), sharded (each rank draws only its shards, on the device: for
    models larger than one host's memory), or auto (full below 2B parameters)."""
    # -- megatron backend ----------------------------------------------------------------------
    use_distributed_optimizer: bool = True
    """megatron: shard fp32 main weights and AdamW state across data-parallel ranks (ZeRO-1)."""
    overlap_grad_reduce: bool = True
    """megatron: overlap the data-parallel gradient reduction with the backward pass."""
    overlap_param_gather: bool = True
    """megatron: overlap the distributed optimizer's weight all-gather with the next forward."""
    grad_reduce_in_fp32: bool = True
    """megatron: accumulate and reduce gradients in fp32 when the weights are bf16."""
    make_vocab_size_divisible_by: int = 128
    """megatron: pad the vocabulary to a multiple of this times tp (padded logits get no loss)."""


@dataclass
class DataConfig:
    """Where training tokens come from."""

    name: str = "synthetic"
    """synthetic (seeded, learnable tokens made on the fly), c4 (local allenai/c4 json(.gz)
    shards) or hf (any Hugging Face dataset, streamed with datasets)."""
    num_workers: int = 0
    """DataLoader worker processes."""
    path: str | None = None
    """c4: a folder, glob or file of json(.gz) shards; hf: load_dataset's path (a Hub dataset id,
    a local folder, or a builder such as json)."""
    subset: str | None = None
    """hf: the dataset's configuration (load_dataset's name), e.g. en for allenai/c4."""
    split: str = "train"
    """hf: load_dataset's split; c4: a folder's c4-<split>.* shards."""
    data_files: str | None = None
    """hf: load_dataset's data_files (a file or glob), with a builder path such as json."""
    text_field: str = "text"
    """Field of each record that holds the document's text."""
    tokenizer: str | None = None
    """c4/hf: a folder or file holding a Hugging Face tokenizer.json (setup.sh stages one at
    $STAGE_PATH/tokenizer/<repo>), or a Hub repo id fetched with huggingface_hub."""
    add_bos: bool = True
    """Put bos_token before every document."""
    add_eos: bool = True
    """Put eos_token after every document."""
    bos_token: str | None = None
    """Token opening each document; null takes tokenizer_config.json's bos_token."""
    eos_token: str | None = None
    """Token closing each document; null takes tokenizer_config.json's eos_token."""


@dataclass
class ClusterConfig:
    """The machine(s) the job runs on."""

    name: str = "local"
    """local (this machine, or torchrun) or slurm."""
    accelerator: str = "auto"
    """auto, gpu or cpu; auto takes the GPU where one is present."""
    comm_backend: str | None = None
    """torch.distributed backend: nccl (GPU default), gloo (CPU default), or any other torch has."""
    comm_timeout_minutes: int = 30
    """How long a collective may wait before the job fails, on every process group (the world's
    and each parallel dimension's); Megatron's ``distributed_timeout_minutes``, Lightning's
    default. Raise it where a step's collectives wait on slow work (a large checkpoint load)."""
    num_gpus: int | None = None
    """World size a dry run plans for; null means the processes actually launched."""
    gpu_type: str | None = None
    """GPU a dry run plans for, a key of recipes.metrics.PEAK_TFLOPS (h100_sxm, h200, b200, ...)."""
    peak_tflops: float | None = None
    """Dense peak TFLOPS per device for MFU on hardware missing from the peak table."""


@dataclass
class TrainerConfig:
    """Optimisation and step shape; one step is one global batch."""

    max_steps: int = 20
    """Optimizer steps to run."""
    seq_len: int = 256
    """Tokens per sample."""
    micro_batch_size: int = 1
    """Samples per forward/backward on one data-parallel rank."""
    global_batch_size: int = 8
    """Samples per optimizer step, across all data-parallel ranks."""
    lr: float = 3e-4
    """Peak learning rate of AdamW."""
    min_lr_ratio: float = 0.1
    """Final learning rate of the cosine decay, as a fraction of lr."""
    warmup_steps: int = 2
    """Linear warmup steps before the cosine decay."""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay."""
    grad_clip: float = 1.0
    """Global gradient-norm clipping threshold; 0 disables clipping."""
    timing_warmup_steps: int = 2
    """Leading steps left out of the steady-state timing mean and spread."""
    log_every_n_steps: int = 1
    """How often the per-step log line is printed (metrics.jsonl gets every step)."""
    gc_every_n_steps: int = 50
    """Python's garbage collector runs on this schedule while training, on every rank at the same
    step, instead of whenever allocations trigger it (a rank pausing alone mid-step stalls the
    others); 0 leaves Python's automatic collection on."""


@dataclass
class LoggerConfig:
    """An experiment tracker that receives every step's figures besides metrics.jsonl."""

    name: str = "none"
    """none, tensorboard (event files in the run folder's tensorboard/) or wandb (Weights &
    Biases; its files in the run folder's wandb/)."""
    project: str = "recipes"
    """wandb: the project the run goes to."""
    entity: str | None = None
    """wandb: the team or user; null is the API key's default."""
    offline: bool = False
    """wandb: write the run locally only (``wandb sync`` uploads it later); needs no API key."""


@dataclass
class CheckpointConfig:
    """Sharded checkpoints in the run folder (``checkpoint/step_<N>``) and resuming from them."""

    every_n_steps: int = 0
    """Save after every N-th optimizer step; 0 saves none on a schedule."""
    save_at_end: bool = False
    """Save after the last step too."""
    resume_from: str | None = None
    """A run folder (its newest checkpoint), a ``checkpoint/step_<N>`` folder, ``latest`` (the
    newest checkpoint of any run under output_dir) or ``auto`` (latest when there is one, else a
    fresh start: for jobs that are requeued); the new run gets a run folder of its own."""
    on_signal: bool = True
    """On SIGUSR1 (Slurm's ``--signal=USR1@<seconds>`` warning before a time limit or
    preemption) save after the current step and stop."""
    keep_latest_k: int = 0
    """Keep only the run's newest K checkpoints, removing older ones of the same run folder
    after each save (torchtitan's ``keep_latest_k``); 0 keeps every one."""


@dataclass
class ProfilingConfig:
    """torch profiler traces of a window of steps every ``freq`` steps, as torchtitan's
    ``[profiling]``: ``<run folder>/profile_trace/iteration_<step>/rank<r>_trace.json.gz``."""

    enable: bool = False
    """Trace steps with the torch profiler (recipes.callbacks.profiling)."""
    freq: int = 10
    """Profile every N steps: each window of freq steps ends with its traced steps (torchtitan's
    profile_freq), so steps freq, 2 x freq, ... are traced."""
    warmup: int = 3
    """Steps before the traced ones that run under the profiler without being kept (its own
    start-up cost stays out of the trace); torchtitan's profiler_warmup."""
    active: int = 1
    """Traced steps per window, ending at each multiple of freq; torchtitan's profiler_active."""
    ranks: list[int] | None = None
    """Ranks that write traces; null: the ranks in log_ranks (every rank when that is null)."""
    record_shapes: bool = True
    """Record each operator's input shapes (as torchtitan does)."""
    memory: bool = False
    """Record tensor allocations and frees in the trace (torch.profiler's profile_memory)."""
    with_stack: bool = False
    """Record the Python stack of each operator (larger traces, slower steps)."""
    gzip: bool = True
    """Write rank<r>_trace.json.gz (Perfetto and chrome://tracing open it); false: .json."""


@dataclass
class TrainConfig:
    """Root of the composed configuration."""

    model: ModelConfig = MISSING
    """Model architecture (group ``model``)."""
    dtype: DTypeConfig = field(default_factory=DTypeConfig)
    """Numeric format (group ``dtype``)."""
    parallelism: ParallelismConfig = field(default_factory=ParallelismConfig)
    """Parallel layout (group ``parallelism``)."""
    backend: BackendConfig = field(default_factory=BackendConfig)
    """Engine (group ``backend``)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training data (group ``data``)."""
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    """Machine description (group ``cluster``)."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """Optimisation and step shape."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Saving and resuming."""
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    """Experiment tracker (group ``logger``)."""
    profiling: ProfilingConfig = field(default_factory=ProfilingConfig)
    """torch profiler traces of some steps (off by default)."""
    seed: int = 1234
    """Seed for weights and synthetic data; the same seed gives the same run."""
    dry_run: bool = False
    """Validate and plan only: no process group, no GPU."""
    output_dir: str = "results"
    """Folder that receives one new run folder per run."""
    run_name: str | None = None
    """Prefix of the run id; null derives it from model and dtype."""
    proxy: bool = False
    """A proxy configuration (fewer layers than the real model, e.g. 405B below 576 GPUs): its
    figures measure per-layer speed, not the model's; summaries and reports say so."""
    log_ranks: list[int] | None = field(default_factory=lambda: [0])
    """Ranks whose console log shows INFO lines (the rest show warnings only); null: every rank."""


def register_configs() -> None:
    """Store the schema so ``conf/train.yaml`` can name it in its defaults list."""
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)


def conf_dir() -> Path:
    """The Hydra config root: inside the installed package, or ``conf/`` of a source checkout."""
    packaged = Path(__file__).resolve().parent / "conf"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "conf"


def workloads_dir() -> Path:
    """The benchmark workloads (``<workload>/baselines.yaml``): inside the installed package as
    ``recipes/workloads``, or the top-level ``recipes/`` folder of a source checkout."""
    packaged = Path(__file__).resolve().parent / "workloads"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "recipes"


def compose(overrides: list[str]) -> DictConfig:
    """The config ``recipes-train`` composes from ``overrides`` (Hydra's compose API, a fresh
    Hydra each call); Hydra's refusals raise as Hydra raises them."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
            return hydra_compose(config_name="train", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


def to_container(cfg: DictConfig) -> dict:
    """Resolved plain-dict view of a config, for YAML/JSON output."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


DTYPES = ("fp32", "bf16", "fp8")
DATA_SOURCES = ("synthetic", "c4", "hf")
ACCELERATORS = ("auto", "cpu", "gpu")


TRAINER_RULES = (
    ("max_steps", ">= 1", lambda v: v >= 1, "use max_steps=20 (the default) or more"),
    ("seq_len", ">= 1", lambda v: v >= 1, "use e.g. seq_len=8192 (Llama 3.1's pretraining length)"),
    ("micro_batch_size", ">= 1", lambda v: v >= 1, "use micro_batch_size=1"),
    ("global_batch_size", ">= 1", lambda v: v >= 1, "use a multiple of micro_batch_size x DP"),
    ("lr", "> 0", lambda v: v > 0, "use e.g. lr=3e-4 (the default)"),
    ("min_lr_ratio", "in [0, 1]", lambda v: 0 <= v <= 1, "use e.g. 0.1 (decay to lr/10)"),
    ("warmup_steps", ">= 0", lambda v: v >= 0, "use 0 for no warmup"),
    ("weight_decay", ">= 0", lambda v: v >= 0, "use 0 for none, or e.g. 0.1 (the default)"),
    ("grad_clip", ">= 0", lambda v: v >= 0, "use 0 to disable clipping, or e.g. 1.0"),
    ("timing_warmup_steps", ">= 0", lambda v: v >= 0, "use 0 to time every step"),
    ("log_every_n_steps", ">= 1", lambda v: v >= 1, "use 1 to print every step"),
    ("gc_every_n_steps", ">= 0", lambda v: v >= 0, "use 0 for Python's automatic collection"),
)
"""(key, rule, check, fix) of each ``trainer.*`` value on its own."""


def _one_of(field_name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{field_name}={value!r} is not one of {list(allowed)}; pick one of them")


def resolve_auto(cfg: DictConfig, *, cuda_available: bool) -> None:
    """Replace ``auto`` choices with what this machine runs, so the saved config is explicit."""
    from recipes.metrics import PEAK_TFLOPS

    _one_of("cluster.accelerator", cfg.cluster.accelerator, ACCELERATORS)
    if cfg.cluster.gpu_type is not None:
        _one_of("cluster.gpu_type", cfg.cluster.gpu_type, tuple(PEAK_TFLOPS))
    num_gpus, peak = cfg.cluster.num_gpus, cfg.cluster.peak_tflops
    if num_gpus is not None and num_gpus < 1:
        raise ConfigError(
            f"cluster.num_gpus={num_gpus} must be >= 1 (the world size a dry run plans for); "
            "use e.g. cluster.num_gpus=8, or null for the processes launched"
        )
    timeout = cfg.cluster.comm_timeout_minutes
    if timeout < 1:
        raise ConfigError(
            f"cluster.comm_timeout_minutes={timeout} must be >= 1 (minutes a collective may "
            "wait); use e.g. 30, Lightning's and Megatron's default"
        )
    if peak is not None and not peak > 0:
        raise ConfigError(
            f"cluster.peak_tflops={peak} must be > 0 (dense TFLOPS per device); use the "
            "datasheet's dense figure for the run's dtype, or null for the peak table"
        )
    # A dry run plans for the named GPU type without needing one here.
    cuda_available = cuda_available or (cfg.dry_run and cfg.cluster.gpu_type is not None)
    if cfg.cluster.accelerator == "gpu" and not cuda_available:
        raise ConfigError(
            "cluster.accelerator='gpu' but torch sees no GPU on this machine; "
            "use cluster.accelerator=cpu (or auto), run where a GPU is visible, or, for a dry "
            "run, name the GPU to plan for with cluster.gpu_type"
        )
    if cfg.cluster.accelerator == "auto":
        cfg.cluster.accelerator = "gpu" if cuda_available else "cpu"
    check_comm_backend(cfg)
    if cfg.dtype.name == "auto":
        cfg.dtype.name = "bf16" if cfg.cluster.accelerator == "gpu" else "fp32"
    check_fp8_hardware(cfg)


MXFP8_GPUS = ("b200", "gb200")
"""Blackwell: the GPUs with MXFP8 (block-scaled) tensor cores."""


def check_fp8_hardware(cfg: DictConfig) -> None:
    """FP8 only where the GPU has FP8 tensor cores: the GPU a dry run plans for, or the GPU this
    process sees (its peak table row; else NVIDIA's compute capability 8.9 or newer)."""
    import torch

    from recipes.metrics import PEAK_TFLOPS, device_key

    if cfg.dtype.name != "fp8" or cfg.cluster.accelerator != "gpu":
        return
    gpu = cfg.cluster.gpu_type
    fp8_gpus = [key for key, peaks in PEAK_TFLOPS.items() if peaks.get("fp8")]
    if gpu is not None and gpu not in fp8_gpus:
        raise ConfigError(
            f"dtype=fp8 but cluster.gpu_type={gpu} has no FP8 tensor cores; use dtype=bf16, or "
            f"plan for one of {fp8_gpus}"
        )
    if cfg.dtype.fp8_recipe == "mxfp8" and gpu is not None and gpu not in MXFP8_GPUS:
        raise ConfigError(
            f"dtype.fp8_recipe=mxfp8 needs Blackwell's MXFP8 tensor cores, which "
            f"cluster.gpu_type={gpu} lacks; use one of {list(MXFP8_GPUS)}, or dtype=fp8 "
            "(tensorwise) / dtype=fp8_delayed"
        )
    if gpu is not None or not torch.cuda.is_available():
        return
    name = torch.cuda.get_device_name()
    key = device_key(name)
    if key is not None:
        no_fp8 = key not in fp8_gpus
    else:  # not in the peak table: NVIDIA's compute capability says (ROCm's does not)
        no_fp8 = torch.version.hip is None and torch.cuda.get_device_capability() < (8, 9)
    if no_fp8:
        raise ConfigError(
            f"dtype=fp8 but this GPU ({name}) has no FP8 tensor cores (NVIDIA: compute "
            "capability 8.9 or newer, Ada, Hopper, Blackwell; AMD: MI300 or newer); use "
            "dtype=bf16"
        )


def check_comm_backend(cfg: DictConfig) -> None:
    """``cluster.comm_backend`` names a backend torch knows, which (unless a dry run, which may
    plan for another machine) this torch build has and the accelerator can use."""
    import torch.distributed as dist

    name = cfg.cluster.comm_backend
    if name is None:
        return
    known = [b for b in dist.Backend.backend_list if b != "undefined"]
    # One backend, or one per device type as torch takes them: cpu:gloo,cuda:nccl.
    backends = [part.split(":")[-1] for part in name.split(",")]
    if not all(backends) or any(b not in known for b in backends):
        raise ConfigError(
            f"cluster.comm_backend={name!r} is not a torch.distributed backend ({known}, or one "
            "per device type, e.g. cpu:gloo,cuda:nccl); use nccl on NVIDIA GPUs, gloo on CPU, "
            "or null for the accelerator's default"
        )
    if cfg.dry_run or len(backends) > 1:
        return
    if not dist.is_backend_available(name):
        raise ConfigError(
            f"cluster.comm_backend={name!r} is not built into this torch; use null for the "
            f"accelerator's default ({'nccl' if cfg.cluster.accelerator == 'gpu' else 'gloo'})"
        )
    if name == "nccl" and cfg.cluster.accelerator == "cpu":
        raise ConfigError(
            "cluster.comm_backend='nccl' needs GPUs but cluster.accelerator='cpu'; use gloo "
            "(or null) on CPU"
        )


def check_known_keys(node: DictConfig, path: str = "") -> None:
    """Every key is a field of its section's schema: Hydra's ``+key=value`` (and ``++``) adds a
    key that the schema lacks instead of failing like a misspelt ``key=value`` does."""
    schema = OmegaConf.get_type(node)
    fields = (
        {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
    )
    for key in node:
        name = f"{path}{key}"
        if fields is not None and key not in fields:
            raise ConfigError(
                f"{name} is not a key of {path.rstrip('.') or 'the config'} (its keys: "
                f"{', '.join(sorted(fields))}); fix the spelling, without '+'"
            )
        value = node._get_node(key)
        if isinstance(value, DictConfig) and not value._is_none():
            check_known_keys(value, f"{name}.")


def validate(cfg: DictConfig, world_size: int):
    """Check every cross-field rule; return the resolved parallel layout."""
    from recipes.data import check_data
    from recipes.models.llama import check_shape
    from recipes.plan.layout import check_fits_model, resolve_layout

    check_known_keys(cfg)
    if cfg.run_name is not None and ("/" in cfg.run_name or not cfg.run_name.strip()):
        raise ConfigError(
            f"run_name={cfg.run_name!r} must be a non-empty name without '/' (it becomes part "
            "of the run folder's name in output_dir); put folders in output_dir instead"
        )
    _one_of("dtype", cfg.dtype.name, DTYPES)
    _one_of("data", cfg.data.name, DATA_SOURCES)
    check_data(cfg)
    check_shape(cfg.model)
    model, trainer = cfg.model, cfg.trainer
    if trainer.seq_len > model.max_seq_len:
        raise ConfigError(
            f"trainer.seq_len={trainer.seq_len} exceeds model.max_seq_len={model.max_seq_len}; "
            f"use seq_len <= {model.max_seq_len}"
        )
    if not 0 <= cfg.seed < 2**32:
        raise ConfigError(f"seed={cfg.seed} must be in [0, 2**32); use e.g. seed=1234")
    for key, rule, ok, fix in TRAINER_RULES:
        if not ok(trainer[key]):
            raise ConfigError(f"trainer.{key}={trainer[key]} must be {rule}; {fix}")
    if trainer.timing_warmup_steps >= trainer.max_steps:
        raise ConfigError(
            f"trainer.timing_warmup_steps={trainer.timing_warmup_steps} leaves no steady-state "
            f"step out of trainer.max_steps={trainer.max_steps}; use max_steps > "
            f"{trainer.timing_warmup_steps} or a smaller timing_warmup_steps"
        )
    layout = resolve_layout(cfg.parallelism, world_size)
    check_fits_model(layout, cfg)
    # Ranks outside the world log nothing; a list with none inside would hide every step line.
    if cfg.log_ranks is not None and not any(0 <= r < world_size for r in cfg.log_ranks):
        raise ConfigError(
            f"log_ranks={list(cfg.log_ranks)} names no rank of this {world_size}-process run "
            f"(ranks 0..{world_size - 1}), so no console would show a step line; list one of "
            "them, e.g. log_ranks=[0] (LOG_RANK=0), or null for every rank (LOG_RANK=all)"
        )
    return layout
