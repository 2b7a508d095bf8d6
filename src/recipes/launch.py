"""``launch.sh``: read the environment once, pick the configuration for the job's scale, start it.

Inside a Slurm job, one process per GPU through ``srun`` (in the staged container through pyxis,
or in the staged venv), rendezvous on the first node; outside Slurm, ``NGPU`` local processes
through torchrun. Environment variables are translated here, once, into Hydra overrides:

| variable | override |
|---|---|
| DTYPE, MODEL_SIZE, GPUs | ``model=``, ``dtype=``, ``+experiment=``, GBS (plan/scale.py) |
| STAGE_PATH, GSW_VERSION | ``output_dir=$STAGE_PATH/results/$GSW_VERSION/$DTYPE/$MODEL_SIZE/N`` |
| COMM_BACKEND | ``cluster.comm_backend=`` |
| LOG_RANK | ``log_ranks=[...]`` |
| DRY_RUN=1 | ``dry_run=true cluster.num_gpus=$GPUS`` |
| BACKEND, GPU_TYPE | ``backend=``, ``cluster.gpu_type=`` |
| (stage.json) | ``data.tokenizer=`` the tokenizer setup.sh staged |

Every rank also gets ``PYTORCH_ALLOC_CONF=expandable_segments:True`` (:data:`ALLOC_CONF`)
unless the environment already sets the allocator (:func:`allocator_env`).

Everything after ``--`` is passed on as further overrides (they win). Standard library only:
this runs on the batch node before any container starts.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from recipes import __version__
from recipes.errors import ConfigError
from recipes.plan import scale as scales
from recipes.stage import SLURM_GPU_COUNT, relocated

DEFAULT_GPUS_PER_NODE = 8
"""GPUs per node when neither the environment, the scheduler nor stage.json says (DGX H100)."""
TRUE, FALSE = ("1", "true", "yes"), ("", "0", "false", "no")
ALLOC_CONF = "expandable_segments:True"
"""PyTorch's caching-allocator setting for every rank unless the environment names one: memory
segments that grow in place instead of new fixed-size blocks, so less is lost to fragmentation
at the same peak. torchtitan's launcher (run_train.sh) sets the same."""
ALLOC_VARS = ("PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_HIP_ALLOC_CONF")


class LaunchError(ConfigError):
    """A launch.sh setting that cannot work; the message names it and the valid values."""


# -- settings --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """launch.sh's environment, checked."""

    dtype: str
    model_size: str
    stage_path: Path | None = None
    gsw_version: str | None = None
    ngpu: int | None = None
    gpus_per_node: int | None = None
    comm_backend: str | None = None
    log_ranks: list[int] | None = field(default_factory=lambda: [0])
    log_ranks_set: bool = False
    dry_run: bool = False
    backend: str | None = None
    gpu_type: str | None = None
    container_mounts: str | None = None
    master_port: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        dtype = _one_of(env, "DTYPE", scales.DTYPES)
        size = _one_of(env, "MODEL_SIZE", scales.MODEL_SIZES)
        log_rank = env.get("LOG_RANK", "").strip()
        comm = env.get("COMM_BACKEND", "").strip() or None
        if comm and not re.fullmatch(r"[A-Za-z0-9_:,]+", comm):
            raise LaunchError(
                f"COMM_BACKEND={comm!r} is not a torch.distributed backend name "
                "(nccl, gloo, mpi, ucc, or e.g. cpu:gloo,cuda:nccl)"
            )
        stage = env.get("STAGE_PATH", "").strip()
        if stage and not Path(stage).expanduser().is_dir():
            problem = "is a file" if Path(stage).expanduser().exists() else "does not exist"
            raise LaunchError(
                f"STAGE_PATH={stage!r} {problem}; name the folder setup.sh staged into "
                "(STAGE_PATH=... ./setup.sh makes one), or, outside Slurm, leave STAGE_PATH "
                "unset to run this checkout with results under ./results"
            )
        gsw = env.get("GSW_VERSION", "").strip() or None
        if gsw is not None and ("/" in gsw or gsw in (".", "..")):
            raise LaunchError(
                f"GSW_VERSION={gsw!r} must be one folder name (no '/', not . or ..): results go "
                "to $STAGE_PATH/results/$GSW_VERSION/...; e.g. GSW_VERSION=25.04"
            )
        port = _positive(env, "MASTER_PORT")
        if port is not None and port > 65535:
            raise LaunchError(f"MASTER_PORT={port} must be a TCP port, 1 to 65535; e.g. 29500")
        return cls(
            dtype=dtype,
            model_size=size,
            stage_path=Path(stage).expanduser().absolute() if stage else None,
            gsw_version=gsw,
            ngpu=_positive(env, "NGPU"),
            gpus_per_node=_positive(env, "GPUS_PER_NODE"),
            comm_backend=comm,
            log_ranks=_log_ranks(log_rank),
            log_ranks_set=bool(log_rank),
            dry_run=_flag(env, "DRY_RUN"),
            backend=env.get("BACKEND", "").strip() or None,
            gpu_type=env.get("GPU_TYPE", "").strip() or None,
            container_mounts=env.get("CONTAINER_MOUNTS", "").strip() or None,
            master_port=port,
        )


def _one_of(env: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str:
    """The required setting ``name``, one of ``allowed`` (written as listed: lower case)."""
    value = env.get(name, "")
    if value in allowed:
        return value
    fix = f"use {name}={value.lower()}" if value.lower() in allowed else f"e.g. {name}={allowed[0]}"
    said = f"{name}={value!r} must be" if value else f"{name} is required,"
    raise LaunchError(f"{said} one of: {' '.join(allowed)}; {fix}")


def _positive(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise LaunchError(
            f"{name}={value!r} must be a positive whole number; set one (e.g. {name}=1), or "
            "unset it for the default"
        )
    return int(value)


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise LaunchError(f"{name}={value!r} must be 1 or 0")


def _log_ranks(value: str) -> list[int] | None:
    if value in ("", "0"):
        return [0]
    if value == "all":
        return None
    if not re.fullmatch(r"\d+(,\d+)*", value):
        raise LaunchError(
            f"LOG_RANK={value!r} must be comma-separated ranks (e.g. LOG_RANK=0,1) or 'all'"
        )
    return sorted({int(r) for r in value.split(",")})


# -- the job ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """Where the ranks run: a Slurm allocation, or this machine."""

    slurm: bool
    nodes: tuple[str, ...]
    gpus_per_node: int

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    @property
    def total_gpus(self) -> int:
        return self.num_nodes * self.gpus_per_node


def hostnames(nodelist: str) -> list[str]:
    """Slurm's compressed node list expanded (``n[1-2]`` -> n1, n2) by ``scontrol``."""
    out = subprocess.run(
        ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def gpus_per_node(env: Mapping[str, str], settings: Settings, stage: dict | None) -> int:
    """GPUS_PER_NODE (at most what Slurm allocated, but for a dry run), else what Slurm
    allocated, else stage.json's, else 8."""
    allocated = env.get("SLURM_GPUS_ON_NODE", "").strip()
    wanted = settings.gpus_per_node
    if wanted and allocated.isdigit() and wanted > int(allocated) and not settings.dry_run:
        raise LaunchError(
            f"GPUS_PER_NODE={settings.gpus_per_node} is more than the {allocated} GPUs Slurm "
            f"allocated per node (SLURM_GPUS_ON_NODE); use GPUS_PER_NODE<={allocated}, or "
            f"submit with --gres=gpu:{settings.gpus_per_node} (a dry run may plan for more)"
        )
    if settings.gpus_per_node:
        return settings.gpus_per_node
    for name in ("SLURM_GPUS_ON_NODE", "SLURM_GPUS_PER_NODE"):
        # SLURM_GPUS_PER_NODE may be "8", "h100:8", or setup.sh's "null".
        if m := SLURM_GPU_COUNT.fullmatch(env.get(name, "").strip()):
            return int(m.group(2))
    staged = ((stage or {}).get("slurm") or {}).get("gpus_per_node")
    return int(staged) if staged else DEFAULT_GPUS_PER_NODE


def job_from_env(
    env: Mapping[str, str],
    settings: Settings,
    stage: dict | None,
    expand: Callable[[str], list[str]] = hostnames,
) -> Job:
    """The job's nodes and GPUs per node, from Slurm's variables or NGPU."""
    if env.get("SLURM_JOB_ID"):
        nodes = expand(env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST", ""))
        if not nodes:
            raise LaunchError("SLURM_JOB_NODELIST is empty; run launch.sh through sbatch")
        return Job(True, tuple(nodes), gpus_per_node(env, settings, stage))
    return Job(False, (os.uname().nodename,), settings.ngpu or 1)


# -- what runs -------------------------------------------------------------------------------


def read_stage(stage_path: Path | None) -> dict | None:
    """stage.json, its paths where the stage is now (it may have been moved since setup.sh)."""
    if stage_path is None:
        return None
    try:
        return relocated(json.loads((stage_path / "stage.json").read_text()), stage_path)
    except (OSError, ValueError):
        return None


def gsw_version(settings: Settings, stage: dict | None) -> str:
    """GSW_VERSION, else the version of the staged package (or of this one)."""
    return settings.gsw_version or (stage or {}).get("recipes_version") or __version__


def results_dir(settings: Settings, stage: dict | None, total_gpus: int) -> Path:
    """``$STAGE_PATH/results/$GSW_VERSION/$DTYPE/$MODEL_SIZE/$JOB_TOTAL_GPUS`` (seed 003)."""
    root = settings.stage_path / "results" if settings.stage_path else Path("results")
    version = gsw_version(settings, stage)
    return root / version / settings.dtype / settings.model_size / str(total_gpus)


def hydra_value(text: str) -> str:
    """``text`` as one Hydra override value: as it is where Hydra's grammar reads it whole, else
    single-quoted (a path with a comma, '=', brackets or quotes; ``cpu:gloo,cuda:nccl``)."""
    if re.fullmatch(r"[\w./:+@%-]+", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def check_extra(extra: list[str]) -> None:
    """What follows ``--`` is Hydra overrides for one run (key=value, +key=value, ~key)."""
    for arg in extra:
        if arg.startswith("-"):
            raise LaunchError(
                f"{arg!r} is a flag, but launch.sh passes only overrides (key=value) to "
                "one run; a sweep is `recipes-train -m key=a,b` (on Slurm: add cluster=slurm), "
                "and --cfg/--info go to recipes-train directly"
            )
        if "=" not in arg and not arg.startswith("~"):
            raise LaunchError(
                f"{arg!r} is not a Hydra override: write key=value "
                "(e.g. trainer.max_steps=10), +key=value to add a key, ~key to delete one"
            )


def train_overrides(
    settings: Settings,
    scale: scales.Scale,
    job: Job,
    out: Path,
    extra: list[str],
    stage: dict | None = None,
) -> list[str]:
    """The Hydra overrides of recipes-train: the scale's, the knobs', then the user's."""
    overrides = [*scale.overrides(), f"output_dir={hydra_value(str(out))}"]
    tokenizer = ((stage or {}).get("tokenizer") or {}).get("path")
    if tokenizer:
        # What data=c4 / data=hf tokenize with (synthetic data reads no tokenizer).
        overrides.append(f"data.tokenizer={hydra_value(tokenizer)}")
    if job.slurm:
        # cluster=slurm also picks the submitit launcher for sweeps; these ranks are already a
        # job, so the plain launcher (and no submitit plugin needed in the container).
        overrides += ["cluster=slurm", "hydra/launcher=basic"]
    if settings.backend:
        overrides.append(f"backend={settings.backend}")
    if settings.comm_backend:
        overrides.append(f"cluster.comm_backend={hydra_value(settings.comm_backend)}")
    if settings.log_ranks_set:
        ranks = settings.log_ranks
        listed = "null" if ranks is None else "[" + ",".join(map(str, ranks)) + "]"
        overrides.append(f"log_ranks={listed}")
    if settings.gpu_type:
        overrides.append(f"cluster.gpu_type={settings.gpu_type}")
    if settings.dry_run:
        overrides += ["dry_run=true", f"cluster.num_gpus={job.total_gpus}"]
    return [*overrides, *extra]


def local_command(python: str, settings: Settings, job: Job, overrides: list[str]) -> list[str]:
    """One process, or NGPU local ranks through torchrun."""
    if job.total_gpus == 1 or settings.dry_run:
        return [python, "-m", "recipes.train", *overrides]
    return [
        python,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={job.total_gpus}",
        "-m",
        "recipes.train",
        *overrides,
    ]


@dataclass(frozen=True)
class Runtime:
    """Where the ranks' Python lives: the staged squashfs (pyxis) or the staged venv."""

    python: str
    container_image: str | None = None
    mounts: tuple[str, ...] = ()
    workdir: str | None = None
    src: str | None = None

    def prefix(self) -> list[str]:
        """srun flags (pyxis) and the command that starts one rank's Python."""
        if self.container_image is None:
            return [self.python]
        flags = [
            f"--container-image={self.container_image}",
            f"--container-mounts={','.join(self.mounts)}",
            f"--container-workdir={self.workdir}",
            "--no-container-mount-home",
        ]
        # The image's own PYTHONPATH wins inside pyxis; put the staged code in front of it.
        shell = f'export PYTHONPATH="{self.src}${{PYTHONPATH:+:$PYTHONPATH}}"; exec "$0" "$@"'
        return [*flags, "bash", "-c", shell, self.python]


def runtime_from_stage(settings: Settings, stage: dict | None) -> Runtime:
    """The staged runtime; a clear error when nothing is staged."""
    if settings.stage_path is None or stage is None:
        where = settings.stage_path or "(STAGE_PATH is not set)"
        raise LaunchError(
            f"inside Slurm launch.sh runs what setup.sh staged, but {where} holds no stage.json; "
            "export STAGE_PATH=<shared folder> and run setup.sh first"
        )
    root = str(settings.stage_path)
    if stage.get("runtime") == "container":
        mounts = [f"{root}:{root}"]
        if settings.container_mounts:
            mounts += settings.container_mounts.split(",")
        return Runtime(
            python="python",
            container_image=stage["container"]["sqsh"],
            mounts=tuple(mounts),
            workdir=f"{root}/code",
            src=f"{root}/code/src",
        )
    return Runtime(python=stage["venv"]["python"])


def srun_command(
    runtime: Runtime, job: Job, settings: Settings, out: Path, overrides: list[str], env: Mapping
) -> list[str]:
    """One task per GPU on every node (one task in all for a dry run), all into one log file."""
    nodes, tasks = (1, 1) if settings.dry_run else (job.num_nodes, job.gpus_per_node)
    cmd = [
        "srun",
        f"--nodes={nodes}",
        f"--ntasks-per-node={tasks}",
        f"--ntasks={nodes * tasks}",
        "--kill-on-bad-exit=1",
        f"--output={out}/{SRUN_LOG}",
    ]
    if env.get("SLURM_GPUS_ON_NODE") and not settings.dry_run:
        cmd.append(f"--gres=gpu:{env['SLURM_GPUS_ON_NODE']}")
    *flags, python = runtime.prefix()
    return [*cmd, *flags, python, "-m", "recipes.launch", "--task", *overrides]


SRUN_LOG = "log-%x_%j.out"
"""Every rank's output, one file per job (seed 003's .out file): %x the job name, %j its id."""


def srun_log(out: Path, env: Mapping[str, str]) -> str:
    """The path srun writes SRUN_LOG to in this job."""
    name = SRUN_LOG.replace("%x", env.get("SLURM_JOB_NAME", "")).replace(
        "%j", env.get("SLURM_JOB_ID", "")
    )
    return str(out / name)


def has_pyxis() -> bool:
    """Whether this Slurm's srun takes pyxis' --container-image."""
    out = subprocess.run(["srun", "--help"], capture_output=True, text=True)
    return "--container-image" in out.stdout + out.stderr


def launch_env(
    job: Job, stage: dict | None, scale: scales.Scale, port: int, version: str
) -> dict[str, str]:
    """Variables every rank gets: rendezvous on the first node, and provenance for manifest.json."""
    out = {
        "JOB_TOTAL_GPUS": str(job.total_gpus),
        "GSW_VERSION": version,
        "RECIPES_JOB_TOTAL_GPUS": str(job.total_gpus),
        "RECIPES_GPUS_PER_NODE": str(job.gpus_per_node),
        "RECIPES_NODES": ",".join(job.nodes),
        "RECIPES_SCALE_SOURCE": scale.source,
    }
    if job.slurm:  # torchrun does its own rendezvous outside Slurm
        out |= {"MASTER_ADDR": job.nodes[0], "MASTER_PORT": str(port)}
    if stage:
        container = stage.get("container") or {}
        out["RECIPES_STAGE_JSON"] = str(Path(stage["stage_path"]) / "stage.json")
        if stage.get("git_sha"):
            out["RECIPES_GIT_SHA"] = stage["git_sha"]
        if container.get("image"):
            out["RECIPES_CONTAINER_IMAGE"] = container["image"]
        if container.get("digest"):
            out["RECIPES_CONTAINER_DIGEST"] = container["digest"]
    return out


def allocator_env(env: Mapping[str, str]) -> dict[str, str]:
    """``PYTORCH_ALLOC_CONF=ALLOC_CONF``, or nothing when ``env`` sets one of ALLOC_VARS."""
    return {} if any(name in env for name in ALLOC_VARS) else {"PYTORCH_ALLOC_CONF": ALLOC_CONF}


def master_port(env: Mapping[str, str], settings: Settings) -> int:
    """MASTER_PORT, else one derived from the job id (jobs sharing a node do not collide)."""
    if settings.master_port:
        return settings.master_port
    return 20000 + int(env.get("SLURM_JOB_ID") or 0) % 20000


@dataclass(frozen=True)
class Plan:
    """Everything launch.sh decided, before anything starts."""

    command: list[str]
    env: dict[str, str]
    lines: list[str]
    results: Path
    job: Job
    scale: scales.Scale
    overrides: list[str]  # recipes-train's, on every rank


def plan(
    env: Mapping[str, str],
    extra: list[str],
    expand: Callable[[str], list[str]] = hostnames,
    pyxis: Callable[[], bool] = has_pyxis,
) -> Plan:
    """Check the environment and decide the command; raises LaunchError on any bad setting."""
    settings = Settings.from_env(env)
    check_extra(extra)
    stage = read_stage(settings.stage_path)
    if stage is not None and not stage.get("complete"):
        raise LaunchError(
            f"setup.sh did not finish staging {settings.stage_path} (interrupted?); run it again"
        )
    job = job_from_env(env, settings, stage, expand)
    scale = scales.pick(settings.model_size, settings.dtype, job.total_gpus)
    out = results_dir(settings, stage, job.total_gpus)
    overrides = train_overrides(settings, scale, job, out, extra, stage)
    if job.slurm:
        runtime = runtime_from_stage(settings, stage)
        if runtime.container_image and not pyxis():
            raise LaunchError(
                f"{settings.stage_path} holds a container ({runtime.container_image}) but this "
                "Slurm's srun has no pyxis (--container-image); stage a venv instead with "
                "CONTAINER=none setup.sh, or run where pyxis is installed"
            )
        command = srun_command(runtime, job, settings, out, overrides, env)
    else:
        command = local_command(sys.executable, settings, job, overrides)
    where = f"{job.num_nodes} node(s) x {job.gpus_per_node}" if job.slurm else "this machine"
    label = " (proxy configuration: fewer layers, no time to train)" if scale.proxy else ""
    lines = [
        f"llama31_{settings.model_size} {settings.dtype} on {job.total_gpus} GPUs ({where})"
        f"{' as a dry run' if settings.dry_run else ''}: "
        f"{scale.experiment or 'default layout'}{label}",
        f"configuration source: {scale.source}",
        f"results: {out}",
    ]
    port = master_port(env, settings)
    env_out = launch_env(job, stage, scale, port, gsw_version(settings, stage))
    env_out |= allocator_env(env)
    if job.slurm:  # srun's --output, for manifest.json: the run folder's log is rank 0's only
        env_out["RECIPES_JOB_LOG"] = srun_log(out, env)
    return Plan(command, env_out, lines, out, job, scale, overrides)


# -- entry points ----------------------------------------------------------------------------


def torch_env_from_slurm(env: Mapping[str, str]) -> dict[str, str]:
    """torch.distributed's variables for one srun task, from Slurm's."""
    missing = [k for k in ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID") if k not in env]
    if missing:
        raise LaunchError(f"--task runs under srun; {', '.join(missing)} not set")
    local_world = env.get("SLURM_NTASKS_PER_NODE") or env.get("SLURM_STEP_TASKS_PER_NODE", "1")
    return {
        "RANK": env["SLURM_PROCID"],
        "WORLD_SIZE": env["SLURM_NTASKS"],
        "LOCAL_RANK": env["SLURM_LOCALID"],
        "LOCAL_WORLD_SIZE": re.match(r"\d+", local_world).group(0),
        "NODE_RANK": env.get("SLURM_NODEID", "0"),
    }


def checks_first(decided: Plan) -> bool:
    """Whether this launcher checks the configuration before its ranks start: for a local
    torchrun (which would exit 1 after every rank refused it), and for Slurm ranks that run this
    very Python (a venv stage), so a refused job exits 2 with the message in the job's output.
    A container's Python is not this one: its ranks check as they start."""
    if not decided.job.slurm:
        return "torch.distributed.run" in decided.command
    task = decided.command.index("--task")
    return decided.command[task - 3] == sys.executable


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["--task"]:  # one srun task: become one torch.distributed rank
            os.environ.update(torch_env_from_slurm(os.environ))
            os.execv(sys.executable, [sys.executable, "-m", "recipes.train", *argv[1:]])
        extra = argv[1:] if argv[:1] == ["--"] else argv
        decided = plan(os.environ, extra)
        if checks_first(decided):
            from recipes.train import check_command_line

            check_command_line(decided.overrides, decided.job.total_gpus)
    except (ConfigError, subprocess.CalledProcessError) as err:
        print(f"launch.sh: {err}", file=sys.stderr)
        return 2
    for line in [*decided.lines, shlex.join(decided.command)]:
        print(f"launch.sh: {line}", flush=True)
    if decided.job.slurm:
        decided.results.mkdir(parents=True, exist_ok=True)  # srun writes its log there
    os.environ.update(decided.env)
    os.execvp(decided.command[0], decided.command)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
