"""Which pinned benchmark configuration a job of N GPUs runs (launch.sh's scale logic).

The layouts themselves live in ``conf/experiment/*.yaml``; this module only picks the file for a
model size, dtype and GPU count, and scales the global batch with the GPU count where the
published recipe does:

| model | GPUs N | experiment | GBS | source |
|---|---|---|---|---|
| 405b | 32, 96, 192 | ``llama31_405b_{N}gpu_h100_{dtype}`` (proxy) | 126, 126, 252 | seed 003 |
| 405b | 576 + k*144 | ``llama31_405b_576gpu_h100_{dtype}`` | N * 252 / 576 | seed 003 |
| 70b | 64 * k | ``llama31_70b_64gpu_h100_{dtype}`` | N * 128 / 64 | NeMo (1) |
| 8b | 8 * k | ``llama31_8b_8gpu_h100_{dtype}`` | N * 128 / 8 | NeMo (1) |
| debug | any | none: data parallel over every GPU | 8, or N * ceil(8 / N) | this repository |

Seed 003 is NVIDIA's DGX Cloud Llama 3.1 405B recipe for NeMo 24.09 (proxies have 7, 21, 42 of
the 126 layers); (1) is NeMo's ``scripts/performance/recommended_model_configs/
model_configs_h100.csv``.

Standard library only: launch.sh calls it before any runtime is chosen.
"""

from __future__ import annotations

from dataclasses import dataclass

from recipes.errors import ConfigError

MODEL_SIZES = ("8b", "70b", "405b", "debug")
DTYPES = ("bf16", "fp8")
SEED_003 = "NVIDIA DGX Cloud benchmark recipe, Llama 3.1 405B, NeMo 24.09 (seed 003)"
NEMO_CSV = (
    "NeMo scripts/performance/recommended_model_configs/model_configs_h100.csv "
    "(pre_train, llama3 {size}, h100)"
)
PROXY_405B = {32: 126, 96: 126, 192: 252}
"""405B proxy scales (fewer layers) and their global batch sizes, from seed 003."""
FULL_405B_GPUS = 576
"""From here the full 126-layer model runs: TP8 x PP9 x CP2 = 144 GPUs per replica."""
FULL_405B_STEP = 144
DEBUG_GBS = 8
"""conf's default global batch; the debug model keeps it where the GPUs divide it."""


@dataclass(frozen=True)
class Scale:
    """The configuration picked for one job."""

    model_size: str
    dtype: str
    num_gpus: int
    experiment: str | None
    """Name under conf/experiment/, or None for the plain model config."""
    global_batch_size: int | None
    """Overrides the experiment's GBS where the recipe scales it; None keeps it."""
    proxy: bool
    source: str

    def overrides(self) -> list[str]:
        """Hydra overrides that select this configuration (before the user's own)."""
        out = [f"model=llama31_{self.model_size}", f"dtype={self.dtype}"]
        if self.experiment:
            out.append(f"+experiment={self.experiment}")
        if self.global_batch_size is not None:
            out.append(f"trainer.global_batch_size={self.global_batch_size}")
        return out


def supported_gpus(model_size: str) -> str:
    """The GPU counts a model size has a configuration for, in words."""
    return {
        "405b": "32, 96 or 192 (proxy configs, fewer layers), or a multiple of 144 from 576 "
        "(576, 720, ..., 1152, 2304)",
        "70b": "a multiple of 64 (64, 128, 192, ...)",
        "8b": "a multiple of 8 (8, 16, 24, ...)",
        "debug": "any number",
    }[model_size]


def pick(model_size: str, dtype: str, num_gpus: int) -> Scale:
    """The configuration for ``model_size`` at ``num_gpus``; ConfigError for unknown scales."""
    if model_size not in MODEL_SIZES:
        raise ConfigError(f"MODEL_SIZE={model_size!r} must be one of: {' '.join(MODEL_SIZES)}")
    if dtype not in DTYPES:
        raise ConfigError(f"DTYPE={dtype!r} must be one of: {' '.join(DTYPES)}")
    if num_gpus < 1:
        raise ConfigError(f"the job has {num_gpus} GPUs; it needs at least 1")
    scale = _pick(model_size, dtype, num_gpus)
    if scale is None:
        raise ConfigError(
            f"MODEL_SIZE={model_size} has no configuration for {num_gpus} GPUs; supported: "
            f"{supported_gpus(model_size)}. Change the node count (sbatch -N) or GPUs per node"
        )
    return scale


def published_hint(model_name: str, dtype: str, num_gpus: int) -> str:
    """What a dry run refused for its layout adds to the error: the pinned configuration
    launch.sh runs for ``model_name`` on ``num_gpus`` ('' where there is none), as overrides.
    Its dtype is ``dtype``, or bf16 where no pinned configuration has that dtype."""
    size = model_name.removeprefix("llama31_")
    if size not in MODEL_SIZES:
        return ""
    found = _pick(size, dtype if dtype in DTYPES else "bf16", num_gpus)
    if found is None or found.experiment is None:
        return ""
    add = " ".join(o for o in found.overrides() if o.startswith(("+", "trainer.")))
    what = "proxy configuration (fewer layers)" if found.proxy else "configuration"
    return f"; or plan the pinned {what} for {num_gpus} GPUs ({found.source}): add {add}"


def _pick(model_size: str, dtype: str, n: int) -> Scale | None:
    def scale(experiment, gbs, source, proxy=False) -> Scale:
        return Scale(model_size, dtype, n, experiment, gbs, proxy, source)

    if model_size == "debug":
        # About 8 samples a step (the config's default), rounded up to a multiple of the GPUs.
        gbs = -(-DEBUG_GBS // n) * n
        source = "tiny model of this repository: data parallel over every GPU"
        return scale(None, gbs if gbs != DEBUG_GBS else None, source)
    if model_size == "405b":
        if n in PROXY_405B:
            return scale(f"llama31_405b_{n}gpu_h100_{dtype}", None, SEED_003, proxy=True)
        if n >= FULL_405B_GPUS and n % FULL_405B_STEP == 0:
            gbs = n * 252 // FULL_405B_GPUS
            experiment = f"llama31_405b_576gpu_h100_{dtype}"
            return scale(experiment, gbs if n != FULL_405B_GPUS else None, SEED_003)
        return None
    base = {"8b": 8, "70b": 64}[model_size]
    if n % base:
        return None
    experiment = f"llama31_{model_size}_{base}gpu_h100_{dtype}"
    gbs = 128 * n // base
    return scale(experiment, gbs if n != base else None, NEMO_CSV.format(size=model_size))
