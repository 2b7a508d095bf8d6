"""launch.sh's decisions, without running anything: env checks, scale, srun/pyxis/torchrun lines."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recipes import launch
from recipes.config import compose
from recipes.errors import ConfigError
from recipes.launch import LaunchError, Settings, hydra_value, plan, torch_env_from_slurm

ROOT = Path(__file__).resolve().parents[2]


def nodes(n: int):
    return lambda nodelist: [f"gpu{i:03d}" for i in range(1, n + 1)]


def slurm_env(num_nodes: int, **extra: str) -> dict[str, str]:
    return {
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "recipes-llama31",
        "SLURM_JOB_NODELIST": f"gpu[001-{num_nodes:03d}]",
        "SLURM_JOB_NUM_NODES": str(num_nodes),
        **extra,
    }


@pytest.fixture
def stage(tmp_path):
    """A stage.json as setup.sh writes it, for a container (pyxis) stage."""

    def _write(runtime: str = "container", gpus_per_node: int | None = None) -> Path:
        record = {
            "stage_path": str(tmp_path),
            "recipes_version": "0.1.0",
            "git_sha": "abc123",
            "runtime": runtime,
            "container": {
                "image": "nvcr.io/nvidia/nemo:25.04",
                "digest": "sha256:feed",
                "sqsh": str(tmp_path / "nvidia+nemo+25.04.sqsh"),
            }
            if runtime == "container"
            else None,
            "venv": {"python": str(tmp_path / "venv/bin/python")} if runtime == "venv" else None,
            "slurm": {"gpus_per_node": gpus_per_node},
            "complete": True,
        }
        (tmp_path / "stage.json").write_text(json.dumps(record))
        return tmp_path

    return _write


# -- environment checks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env, message",
    [
        ({"MODEL_SIZE": "8b"}, "DTYPE is required, one of: bf16 fp8; e.g. DTYPE=bf16"),
        (
            {"DTYPE": "fp4", "MODEL_SIZE": "8b"},
            "DTYPE='fp4' must be one of: bf16 fp8; e.g. DTYPE=bf16",
        ),
        (
            {"DTYPE": "bf16"},
            "MODEL_SIZE is required, one of: 8b 70b 405b debug; e.g. MODEL_SIZE=8b",
        ),
        ({"DTYPE": "bf16", "MODEL_SIZE": "13b"}, "MODEL_SIZE='13b'"),
        ({"DTYPE": "bf16", "MODEL_SIZE": "8b", "NGPU": "two"}, "NGPU='two' must be a positive"),
        (
            {"DTYPE": "FP8", "MODEL_SIZE": "8b"},
            "DTYPE='FP8' must be one of: bf16 fp8; use DTYPE=fp8",
        ),
        (
            {"DTYPE": "bf16", "MODEL_SIZE": "405B"},
            "MODEL_SIZE='405B' must be one of: 8b 70b 405b debug; use MODEL_SIZE=405b",
        ),
        ({"DTYPE": "bf16", "MODEL_SIZE": "8b", "NGPU": "0"}, "NGPU='0' must be a positive"),
        ({"DTYPE": "bf16", "MODEL_SIZE": "8b", "LOG_RANK": "0;1"}, "LOG_RANK='0;1' must be"),
        ({"DTYPE": "bf16", "MODEL_SIZE": "8b", "DRY_RUN": "maybe"}, "DRY_RUN='maybe' must be 1"),
        ({"DTYPE": "bf16", "MODEL_SIZE": "8b", "COMM_BACKEND": "nc cl"}, "COMM_BACKEND='nc cl'"),
        ({"DTYPE": "bf16", "MODEL_SIZE": "8b", "GPUS_PER_NODE": "-8"}, "GPUS_PER_NODE='-8'"),
        ({"DTYPE": "bf16", "MODEL_SIZE": "8b", "GSW_VERSION": "../x"}, "GSW_VERSION='../x' must"),
        ({"DTYPE": "bf16", "MODEL_SIZE": "8b", "MASTER_PORT": "99999"}, "MASTER_PORT=99999 must"),
        (
            {"DTYPE": "bf16", "MODEL_SIZE": "8b", "STAGE_PATH": "/nonexistent/stage"},
            "STAGE_PATH='/nonexistent/stage' does not exist; name the folder setup.sh staged",
        ),
        (
            {"DTYPE": "bf16", "MODEL_SIZE": "8b", "STAGE_PATH": "/etc/hostname"},
            "STAGE_PATH='/etc/hostname' is a file; name the folder",
        ),
    ],
)
def test_bad_environment_is_refused_with_the_valid_values(env, message):
    with pytest.raises(LaunchError, match=message.replace("(", r"\(")):
        Settings.from_env(env)


@pytest.mark.parametrize(
    "value, ranks", [("", [0]), ("0", [0]), ("1,0,3", [0, 1, 3]), ("all", None)]
)
def test_log_rank_becomes_log_ranks(value, ranks):
    settings = Settings.from_env({"DTYPE": "bf16", "MODEL_SIZE": "debug", "LOG_RANK": value})
    assert settings.log_ranks == ranks


# -- outside Slurm -----------------------------------------------------------------------------


def test_ngpu_starts_that_many_local_ranks_through_torchrun():
    decided = plan({"DTYPE": "bf16", "MODEL_SIZE": "debug", "NGPU": "4"}, ["trainer.lr=1e-3"])
    cmd = decided.command
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    assert cmd[5:7] == ["-m", "recipes.train"]
    assert cmd[-1] == "trainer.lr=1e-3"  # the user's overrides come last, so they win
    assert "output_dir=results/0.1.0/bf16/debug/4" in cmd
    assert "MASTER_ADDR" not in decided.env  # torchrun's own rendezvous


def test_ranks_get_the_allocator_setting_unless_the_environment_names_one():
    base = {"DTYPE": "bf16", "MODEL_SIZE": "debug"}
    assert plan(base, []).env["PYTORCH_ALLOC_CONF"] == "expandable_segments:True"
    for name in launch.ALLOC_VARS:  # the user's own setting, in any spelling, is left alone
        assert "PYTORCH_ALLOC_CONF" not in plan(base | {name: "max_split_size_mb:512"}, []).env


def test_without_ngpu_one_local_process():
    cmd = plan({"DTYPE": "bf16", "MODEL_SIZE": "debug"}, []).command
    assert cmd == [
        sys.executable,
        "-m",
        "recipes.train",
        "model=llama31_debug",
        "dtype=bf16",
        "output_dir=results/0.1.0/bf16/debug/1",
    ]


def test_knobs_translate_once_into_overrides(tmp_path):
    env = {
        "DTYPE": "fp8",
        "MODEL_SIZE": "8b",
        "NGPU": "8",
        "COMM_BACKEND": "gloo",
        "LOG_RANK": "0,1",
        "BACKEND": "megatron",
        "GPU_TYPE": "h200",
        "STAGE_PATH": str(tmp_path),
        "GSW_VERSION": "25.04",
    }
    cmd = plan(env, []).command
    for override in (
        "model=llama31_8b",
        "dtype=fp8",
        "+experiment=llama31_8b_8gpu_h100_fp8",
        "cluster.comm_backend=gloo",
        "log_ranks=[0,1]",
        "backend=megatron",
        "cluster.gpu_type=h200",
        f"output_dir={tmp_path}/results/25.04/fp8/8b/8",
    ):
        assert override in cmd


def test_dry_run_plans_for_the_gpus_in_one_process():
    env = {"DTYPE": "fp8", "MODEL_SIZE": "405b", "NGPU": "576", "DRY_RUN": "1"}
    decided = plan(env, [])
    assert decided.command[1:3] == ["-m", "recipes.train"]  # no torchrun, no GPU
    assert {
        "dry_run=true",
        "cluster.num_gpus=576",
        "+experiment=llama31_405b_576gpu_h100_fp8",
    } <= set(decided.command)


def test_unknown_scale_stops_before_anything_starts():
    with pytest.raises(ConfigError, match="no configuration for 64 GPUs; supported: 32, 96"):
        plan({"DTYPE": "bf16", "MODEL_SIZE": "405b", "NGPU": "64"}, [])


# -- inside Slurm ------------------------------------------------------------------------------


def test_seed_003_command_on_72_nodes_in_the_staged_container(stage):
    root = stage("container")
    env = slurm_env(72, DTYPE="fp8", MODEL_SIZE="405b", STAGE_PATH=str(root))
    decided = plan(env, ["trainer.max_steps=10"], expand=nodes(72), pyxis=lambda: True)
    out = root / "results/0.1.0/fp8/405b/576"
    assert decided.results == out and decided.job.total_gpus == 576
    cmd = decided.command
    assert cmd[:6] == [
        "srun",
        "--nodes=72",
        "--ntasks-per-node=8",
        "--ntasks=576",
        "--kill-on-bad-exit=1",
        f"--output={out}/log-%x_%j.out",
    ]
    # pyxis: the staged squashfs, the stage mounted at the same path, the staged code first.
    assert f"--container-image={root}/nvidia+nemo+25.04.sqsh" in cmd
    assert f"--container-mounts={root}:{root}" in cmd
    assert f"--container-workdir={root}/code" in cmd
    assert "--no-container-mount-home" in cmd
    shell = cmd[cmd.index("-c") + 1]
    assert f'PYTHONPATH="{root}/code/src' in shell
    task = cmd.index("--task")
    assert cmd[task - 3 : task] == ["python", "-m", "recipes.launch"]
    assert cmd[task + 1 :][:3] == [
        "model=llama31_405b",
        "dtype=fp8",
        "+experiment=llama31_405b_576gpu_h100_fp8",
    ]
    assert "cluster=slurm" in cmd and cmd[-1] == "trainer.max_steps=10"
    assert decided.env["MASTER_ADDR"] == "gpu001" and decided.env["MASTER_PORT"] == "24242"
    assert decided.env["RECIPES_CONTAINER_IMAGE"] == "nvcr.io/nvidia/nemo:25.04"
    assert decided.env["RECIPES_CONTAINER_DIGEST"] == "sha256:feed"
    assert decided.env["RECIPES_GIT_SHA"] == "abc123"
    assert (decided.env["JOB_TOTAL_GPUS"], decided.env["GSW_VERSION"]) == ("576", "0.1.0")
    assert decided.env["RECIPES_NODES"].split(",")[:2] == ["gpu001", "gpu002"]
    job_log = f"{out}/log-{env['SLURM_JOB_NAME']}_{env['SLURM_JOB_ID']}.out"
    assert decided.env["RECIPES_JOB_LOG"] == job_log  # for manifest.json


def test_extra_container_mounts_are_added(stage):
    root = stage("container")
    env = slurm_env(4, DTYPE="bf16", MODEL_SIZE="405b", STAGE_PATH=str(root))
    env["CONTAINER_MOUNTS"] = "/data:/data"
    cmd = plan(env, [], expand=nodes(4), pyxis=lambda: True).command
    assert f"--container-mounts={root}:{root},/data:/data" in cmd
    assert "+experiment=llama31_405b_32gpu_h100_bf16" in cmd


def test_a_container_stage_without_pyxis_is_refused(stage):
    root = stage("container")
    env = slurm_env(2, DTYPE="bf16", MODEL_SIZE="debug", STAGE_PATH=str(root))
    with pytest.raises(LaunchError, match="no pyxis.*CONTAINER=none"):
        plan(env, [], expand=nodes(2), pyxis=lambda: False)


def test_venv_stage_runs_its_python_without_pyxis_flags(stage):
    root = stage("venv")
    env = slurm_env(2, DTYPE="bf16", MODEL_SIZE="debug", STAGE_PATH=str(root))
    env["SLURM_GPUS_ON_NODE"] = "2"
    cmd = plan(env, [], expand=nodes(2), pyxis=lambda: False).command
    assert not any(c.startswith("--container") for c in cmd)
    assert "--gres=gpu:2" in cmd and "--ntasks=4" in cmd
    task = cmd.index("--task")
    assert cmd[task - 3 : task] == [f"{root}/venv/bin/python", "-m", "recipes.launch"]


def test_the_launcher_checks_first_where_its_ranks_run_its_python(stage):
    """A venv stage's ranks run the launcher's own Python: it checks the configuration once
    before srun (exit 2); a container's ranks have another Python and check as they start."""
    root = stage("venv")
    env = slurm_env(2, DTYPE="bf16", MODEL_SIZE="debug", STAGE_PATH=str(root))
    assert not launch.checks_first(plan(env, [], expand=nodes(2)))
    record = json.loads((root / "stage.json").read_text())
    record["venv"]["python"] = sys.executable
    (root / "stage.json").write_text(json.dumps(record))
    decided = plan(env, ["trainer.max_steps=3"], expand=nodes(2))
    assert launch.checks_first(decided) and decided.overrides[-1] == "trainer.max_steps=3"
    env = slurm_env(2, DTYPE="bf16", MODEL_SIZE="debug", STAGE_PATH=str(stage("container")))
    assert not launch.checks_first(plan(env, [], expand=nodes(2), pyxis=lambda: True))
    local = {"DTYPE": "bf16", "MODEL_SIZE": "debug"}
    assert launch.checks_first(plan({**local, "NGPU": "2"}, []))
    assert not launch.checks_first(plan(local, []))  # one process: it checks itself, exit 2


def test_the_staged_tokenizer_is_what_text_data_tokenizes_with(stage):
    root = stage("venv")
    record = json.loads((root / "stage.json").read_text())
    tokenizer = {"repo": "meta-llama/Llama-3.1-8B", "path": f"{root}/tokenizer/meta-llama/x"}
    (root / "stage.json").write_text(json.dumps({**record, "tokenizer": tokenizer}))
    env = {"DTYPE": "bf16", "MODEL_SIZE": "debug", "STAGE_PATH": str(root)}
    cmd = plan(env, ["data=c4"]).command
    assert f"data.tokenizer={root}/tokenizer/meta-llama/x" in cmd
    assert cmd[-1] == "data=c4"
    # No tokenizer staged (TOKENIZER_REPO=none): nothing is added.
    assert not any(
        c.startswith("data.tokenizer=") for c in plan({**env, "STAGE_PATH": ""}, []).command
    )


@pytest.mark.parametrize(
    "arg, message",
    [
        ("-m", r"'-m' is a flag.*recipes-train -m key=a,b"),
        ("--cfg", r"'--cfg' is a flag"),
        ("trainer.max_steps", r"'trainer.max_steps' is not a Hydra override"),
    ],
)
def test_what_follows_the_dashes_must_be_overrides(arg, message):
    env = {"DTYPE": "bf16", "MODEL_SIZE": "debug"}
    with pytest.raises(LaunchError, match=message):
        plan(env, ["trainer.max_steps=2", arg])
    assert plan(env, ["~trainer.seed", "+foo=1"]).command[-2:] == ["~trainer.seed", "+foo=1"]


def test_a_moved_stage_runs_from_where_it_is_now(stage, tmp_path):
    """A stage folder moved (or rsynced to another cluster) whole: its stage.json still names
    the old place, and launch.sh runs the squashfs, venv and tokenizer where they are now."""
    root = stage("container")
    record = json.loads((root / "stage.json").read_text())
    tokenizer = {"repo": "meta-llama/Llama-3.1-8B", "path": f"{root}/tokenizer/meta-llama/x"}
    (root / "stage.json").write_text(json.dumps({**record, "tokenizer": tokenizer}))
    moved = root.rename(tmp_path.parent / f"{tmp_path.name}-moved")
    env = slurm_env(2, DTYPE="bf16", MODEL_SIZE="debug", STAGE_PATH=str(moved))
    decided = plan(env, ["data=c4"], expand=nodes(2), pyxis=lambda: True)
    assert f"--container-image={moved}/nvidia+nemo+25.04.sqsh" in decided.command
    assert f"data.tokenizer={moved}/tokenizer/meta-llama/x" in decided.command
    assert decided.env["RECIPES_STAGE_JSON"] == f"{moved}/stage.json"
    assert not any(str(root) + "/" in c for c in decided.command)


def test_an_unfinished_stage_is_refused(stage):
    root = stage("venv")
    record = json.loads((root / "stage.json").read_text())
    (root / "stage.json").write_text(json.dumps({**record, "complete": False}))
    env = slurm_env(2, DTYPE="bf16", MODEL_SIZE="debug", STAGE_PATH=str(root))
    with pytest.raises(LaunchError, match="setup.sh did not finish staging"):
        plan(env, [], expand=nodes(2))


def test_slurm_without_a_stage_says_to_run_setup(tmp_path):
    env = slurm_env(2, DTYPE="bf16", MODEL_SIZE="debug", STAGE_PATH=str(tmp_path))
    with pytest.raises(LaunchError, match="run setup.sh first"):
        plan(env, [], expand=nodes(2))


@pytest.mark.parametrize(
    "extra, staged, expected",
    [
        ({}, None, 8),  # DGX default
        ({}, 4, 4),  # setup.sh's SLURM_GPUS_PER_NODE
        ({"SLURM_GPUS_PER_NODE": "null"}, 4, 4),
        ({"SLURM_GPUS_PER_NODE": "h100:8"}, 4, 8),
        ({"SLURM_GPUS_ON_NODE": "2"}, 4, 2),  # what Slurm allocated
        ({"SLURM_GPUS_ON_NODE": "4", "GPUS_PER_NODE": "2"}, None, 2),  # fewer ranks than GPUs
        # A dry run plans for the GPUs the user names, whatever this allocation holds.
        ({"SLURM_GPUS_ON_NODE": "2", "GPUS_PER_NODE": "4", "DRY_RUN": "1"}, None, 4),
    ],
)
def test_gpus_per_node_and_job_total_gpus(stage, extra, staged, expected):
    root = stage("venv", gpus_per_node=staged)
    env = slurm_env(2, DTYPE="bf16", MODEL_SIZE="debug", STAGE_PATH=str(root), **extra)
    decided = plan(env, [], expand=nodes(2))
    assert decided.job.gpus_per_node == expected
    assert decided.job.total_gpus == 2 * expected
    assert decided.results.name == str(2 * expected)


def test_more_ranks_per_node_than_allocated_gpus_is_refused(stage):
    env = slurm_env(2, DTYPE="bf16", MODEL_SIZE="debug", STAGE_PATH=str(stage("venv")))
    env |= {"SLURM_GPUS_ON_NODE": "2", "GPUS_PER_NODE": "4"}
    with pytest.raises(LaunchError, match=r"GPUS_PER_NODE=4 is more than the 2 GPUs Slurm"):
        plan(env, [], expand=nodes(2))


def test_dry_run_on_slurm_is_one_task(stage):
    root = stage("venv")
    env = slurm_env(72, DTYPE="fp8", MODEL_SIZE="405b", STAGE_PATH=str(root), DRY_RUN="1")
    cmd = plan(env, [], expand=nodes(72)).command
    assert cmd[1:4] == ["--nodes=1", "--ntasks-per-node=1", "--ntasks=1"]
    assert "cluster.num_gpus=576" in cmd and "dry_run=true" in cmd


def test_each_srun_task_becomes_a_torch_distributed_rank():
    env = {
        "SLURM_PROCID": "5",
        "SLURM_NTASKS": "16",
        "SLURM_LOCALID": "1",
        "SLURM_NTASKS_PER_NODE": "8",
        "SLURM_NODEID": "0",
    }
    assert torch_env_from_slurm(env) == {
        "RANK": "5",
        "WORLD_SIZE": "16",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "8",
        "NODE_RANK": "0",
    }
    env["SLURM_NTASKS_PER_NODE"] = "8(x2)"
    assert torch_env_from_slurm(env)["LOCAL_WORLD_SIZE"] == "8"
    with pytest.raises(LaunchError, match="SLURM_PROCID"):
        torch_env_from_slurm({})


# -- the shell script and what it hands to recipes-train ---------------------------------------


def run_launch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "DTYPE", "MODEL"))}
    return subprocess.run(
        ["bash", str(ROOT / "launch.sh"), *args],
        env={**base, "OMP_NUM_THREADS": "1", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_launch_sh_dry_run_writes_a_plan_without_a_gpu(tmp_path):
    proc = run_launch(
        {"DTYPE": "bf16", "MODEL_SIZE": "8b", "NGPU": "16", "DRY_RUN": "1"},
        "--",
        f"output_dir={tmp_path}",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "llama31_8b bf16 on 16 GPUs (this machine) as a dry run" in proc.stdout
    (run_dir,) = tmp_path.iterdir()
    planned = json.loads((run_dir / "plan.json").read_text())
    assert planned["layout"]["world_size"] == 16 and planned["layout"]["cp"] == 2
    assert planned["tokens_per_step"] == 8192 * 256


def test_launch_sh_unknown_scale_fails_fast():
    proc = run_launch({"DTYPE": "fp8", "MODEL_SIZE": "405b", "NGPU": "8"})
    assert proc.returncode == 2
    assert "no configuration for 8 GPUs" in proc.stderr


def test_setup_logging_honours_log_ranks(capsys):
    from recipes.train import setup_logging

    log = logging.getLogger("recipes.test")
    setup_logging(1, [0])
    log.info("quiet")
    setup_logging(1, [0, 1])
    log.info("loud")
    setup_logging(3, None)
    log.info("everyone")
    out = capsys.readouterr().out
    assert "quiet" not in out
    assert "[rank1] recipes.test - loud" in out and "[rank3] recipes.test - everyone" in out
    setup_logging(0)  # back to the default for other tests


def test_manifest_carries_stage_nodes_and_gpus(monkeypatch, tmp_path):
    from recipes.results.manifest import build_manifest

    stage_json = tmp_path / "stage.json"
    stage_json.write_text(
        json.dumps(
            {
                "stage_path": str(tmp_path),
                "runtime": "container",
                "image": "nvcr.io/nvidia/nemo:25.04",
                "digest": "sha256:feed",
                "git_sha": "abc123",
                "versions": {"torch": "2.7.0"},
            }
        )
    )
    monkeypatch.setenv("RECIPES_STAGE_JSON", str(stage_json))
    monkeypatch.setenv("RECIPES_NODES", "n1,n2")
    monkeypatch.setenv("RECIPES_GPUS_PER_NODE", "2")
    monkeypatch.setenv("RECIPES_JOB_TOTAL_GPUS", "4")
    monkeypatch.delenv("RECIPES_CONTAINER_IMAGE", raising=False)
    manifest = build_manifest(world_size=4)
    assert manifest["nodes"] == ["n1", "n2"] and manifest["job_total_gpus"] == 4
    assert manifest["container_image"] == "nvcr.io/nvidia/nemo:25.04"
    assert manifest["container_digest"] == "sha256:feed"
    assert manifest["stage"]["git_sha"] == "abc123"
    # No GPU here: the count comes from the scheduler, model and driver stay unknown.
    assert manifest["gpu"] == {"model": None, "count_per_node": 2, "driver": None}


def test_launch_module_needs_only_the_standard_library():
    # launch.sh runs it with the batch node's python3, before any container or venv.
    code = (
        "import sys, recipes.launch, recipes.stage; "
        "bad = {'torch', 'hydra', 'omegaconf', 'lightning'} & set(sys.modules); "
        "sys.exit(sorted(bad) or 0)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert launch.DEFAULT_GPUS_PER_NODE == 8


@pytest.mark.parametrize("text", ["/stage/a,b/results", "/stage/it's=[1] x", "cpu:gloo,cuda:nccl"])
def test_environment_values_reach_hydra_whole(text):
    """STAGE_PATH (and so output_dir and data.tokenizer) or COMM_BACKEND may hold characters
    Hydra's override grammar reads otherwise: the launcher quotes them."""
    cfg = compose([f"output_dir={hydra_value(text)}"])
    assert cfg.output_dir == text
