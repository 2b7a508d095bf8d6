"""setup.sh's staging: settings, image names, OCI -> enroot squashfs, tokenizer through
huggingface_hub (a local fake hub), idempotence and interrupted runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fake_hub import LLAMA_TOKENIZER, FakeHub, Repo
from recipes import stage
from recipes.stage import (
    StageError,
    Stager,
    StageSettings,
    enroot_configure,
    enroot_uri,
    skopeo_source,
    sqsh_name,
    staging_lock,
)

ROOT = Path(__file__).resolve().parents[2]
REPO = "meta-llama/Llama-3.1-8B"
TOOLS = ("skopeo", "umoci", "mksquashfs", "unsquashfs")
needs_tools = pytest.mark.skipif(
    any(shutil.which(t) is None for t in TOOLS),
    reason="needs skopeo, umoci and squashfs-tools (apt-get install skopeo umoci squashfs-tools)",
)


# -- settings and names ------------------------------------------------------------------------


def test_stage_path_is_required():
    with pytest.raises(StageError, match="STAGE_PATH is required: a folder on a file system"):
        StageSettings.from_env({})


@pytest.mark.parametrize(
    "env, message",
    [
        ({"CONTAINER": "docker"}, "CONTAINER='docker' must be one of: enroot none"),
        ({"SLURM_GPUS_PER_NODE": "eight"}, "SLURM_GPUS_PER_NODE='eight' must be a positive"),
        ({"SLURM_GPUS_PER_NODE": "h100:0"}, "SLURM_GPUS_PER_NODE='h100:0' must be a positive"),
        ({"VENV_SYSTEM_SITE_PACKAGES": "sure"}, "VENV_SYSTEM_SITE_PACKAGES='sure' must be 1"),
        # The tokenizer is staged at tokenizer/<repo>: a path that leaves it is refused.
        ({"TOKENIZER_REPO": "../.."}, "TOKENIZER_REPO='../..' is not a Hugging Face repo id"),
        ({"TOKENIZER_REPO": "meta-llama"}, "TOKENIZER_REPO='meta-llama' is not a Hugging Face"),
        ({"TOKENIZER_REPO": "a/../b"}, "TOKENIZER_REPO='a/../b' is not a Hugging Face repo id"),
    ],
)
def test_bad_settings_name_the_valid_values(tmp_path, env, message):
    with pytest.raises(StageError, match=message):
        StageSettings.from_env({"STAGE_PATH": str(tmp_path), **env})


def test_stage_path_must_be_a_folder_and_a_pasted_token_loses_its_newline(tmp_path):
    (tmp_path / "a_file").write_text("kept")
    for path in (tmp_path / "a_file", tmp_path / "a_file" / "sub"):
        with pytest.raises(StageError, match=r"is not a folder \(.*a_file is a file\)"):
            StageSettings.from_env({"STAGE_PATH": str(path)})
    assert (tmp_path / "a_file").read_text() == "kept"
    settings = StageSettings.from_env({"STAGE_PATH": str(tmp_path), "HF_TOKEN": "hf_x\n"})
    assert settings.hf_token == "hf_x"


@pytest.mark.parametrize(
    "gpus_per_node, command",
    [
        (None, "sbatch -N 72 /s/code/launch.sh"),
        ("2", "sbatch --gres=gpu:2 -N 288 /s/code/launch.sh"),  # still 576 GPUs
        ("h100:8", "sbatch --gres=gpu:h100:8 -N 72 /s/code/launch.sh"),  # Slurm's type:count
    ],
)
def test_the_suggested_launch_runs_the_576_gpu_benchmark(tmp_path, gpus_per_node, command):
    env = {"STAGE_PATH": str(tmp_path), "SLURM_GPUS_PER_NODE": gpus_per_node or ""}
    s = StageSettings.from_env(env)
    slurm = {"gpus_per_node": s.gpus_per_node, "gpu_gres_type": s.gpu_gres_type}
    record = {"slurm": slurm, "code": {"path": "/s/code"}}
    assert stage.next_step(record) == f"DTYPE=fp8 MODEL_SIZE=405b {command}"
    record["code"]["path"] = "/my stage/code"
    assert stage.next_step(record).endswith(" '/my stage/code/launch.sh'")


def test_defaults_pin_the_nemo_image_and_the_llama_tokenizer(tmp_path):
    s = StageSettings.from_env({"STAGE_PATH": str(tmp_path), "SLURM_GPUS_PER_NODE": "null"})
    assert (s.container, s.image, s.tokenizer_repo) == ("enroot", "nvcr.io/nvidia/nemo:25.04", REPO)
    assert s.gpus_per_node is None and s.torch_spec == "torch"
    s = StageSettings.from_env({"STAGE_PATH": str(tmp_path), "TOKENIZER_REPO": "none"})
    assert s.tokenizer_repo is None


@pytest.mark.parametrize(
    "image, name, enroot, skopeo",
    [
        (
            "nvcr.io/nvidia/nemo:25.04",
            "nvidia+nemo+25.04.sqsh",
            "docker://nvcr.io#nvidia/nemo:25.04",
            "docker://nvcr.io/nvidia/nemo:25.04",
        ),
        (
            "docker://nvcr.io/nvidia/pytorch:25.03-py3",
            "nvidia+pytorch+25.03-py3.sqsh",
            "docker://nvcr.io#nvidia/pytorch:25.03-py3",
            "docker://nvcr.io/nvidia/pytorch:25.03-py3",
        ),
        ("rocm/pytorch:latest", "rocm+pytorch+latest.sqsh", "docker://rocm/pytorch:latest", None),
        ("oci:/srv/images/tiny:v1", "tiny+v1.sqsh", None, "oci:/srv/images/tiny:v1"),
        ("dockerd://mine:dev", "mine+dev.sqsh", "dockerd://mine:dev", "docker-daemon:mine:dev"),
    ],
)
def test_image_names_follow_enroot(image, name, enroot, skopeo):
    assert sqsh_name(image) == name
    assert enroot_uri(image) == enroot
    assert skopeo_source(image) == (skopeo or "docker://" + image)


def test_enroot_configure_writes_what_pyxis_reads(tmp_path):
    config = {
        "config": {
            "Env": ["PATH=/usr/bin", "FOO=bar"],
            "WorkingDir": "/workspace",
            "Entrypoint": ["/opt/entry.sh"],
            "Cmd": ["bash"],
            "Volumes": {"/data": {}},
            "Labels": {"org.example": "yes"},
        }
    }
    enroot_configure(tmp_path, config)
    assert (tmp_path / "etc/environment").read_text() == "PATH=/usr/bin\nFOO=bar\n"
    assert "/data /data none x-create=dir,bind" in (tmp_path / "etc/fstab").read_text()
    rc = (tmp_path / "etc/rc").read_text()
    assert rc.startswith("# org.example yes\n")
    assert 'cd "/workspace"' in rc and 'exec /opt/entry.sh "$@"' in rc
    assert "exec /opt/entry.sh bash" in rc
    assert (tmp_path / "workspace").is_dir() and (tmp_path / "etc/rc.local").is_file()


# -- a whole setup.sh run ----------------------------------------------------------------------


def build_oci_image(tmp: Path) -> str:
    """A tiny OCI image built offline with umoci: a file, a fake torch install, an Env."""
    layout, bundle = tmp / "oci-image", tmp / "bundle"
    rootless = [] if os.geteuid() == 0 else ["--rootless"]
    for cmd in (
        ["umoci", "init", "--layout", str(layout)],
        ["umoci", "new", "--image", f"{layout}:v1"],
        ["umoci", "unpack", *rootless, "--image", f"{layout}:v1", str(bundle)],
    ):
        subprocess.run(cmd, check=True, capture_output=True)
    rootfs = bundle / "rootfs"
    (rootfs / "app").mkdir()
    (rootfs / "app/hello.txt").write_text("hello\n")
    dist = rootfs / "usr/local/lib/python3.12/dist-packages/torch-2.7.0a0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Name: torch\nVersion: 2.7.0a0\n")
    for cmd in (
        ["umoci", "repack", "--image", f"{layout}:v1", str(bundle)],
        ["umoci", "config", "--image", f"{layout}:v1", "--config.env", "FOO=bar"]
        + ["--config.workingdir", "/app", "--config.cmd", "/bin/sh"],
    ):
        subprocess.run(cmd, check=True, capture_output=True)
    return f"oci:{layout}:v1"


def setup_sh(env: dict[str, str], **popen) -> subprocess.CompletedProcess | subprocess.Popen:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "SLURM_"))}
    full = {**clean, "PYTHON": sys.executable, **env}
    cmd = ["bash", str(ROOT / "setup.sh")]
    if popen:
        return subprocess.Popen(cmd, env=full, text=True, **popen)
    return subprocess.run(cmd, env=full, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def oci_image(tmp_path_factory):
    if any(shutil.which(t) is None for t in TOOLS):
        pytest.skip("needs skopeo, umoci and squashfs-tools")
    return build_oci_image(tmp_path_factory.mktemp("image"))


@needs_tools
def test_oci_image_becomes_an_enroot_squashfs_and_a_rerun_reuses_it(tmp_path, oci_image):
    env = {"STAGE_PATH": str(tmp_path), "CONTAINER_IMAGE": oci_image, "TOKENIZER_REPO": "none"}
    first = setup_sh(env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "with skopeo, umoci and mksquashfs" in first.stdout
    sqsh = tmp_path / "oci-image+v1.sqsh"
    listing = subprocess.run(
        ["unsquashfs", "-l", "-d", "", str(sqsh)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert {"/app/hello.txt", "/etc/environment", "/etc/rc", "/etc/fstab"} <= set(listing)
    cat = ["unsquashfs", "-cat", str(sqsh), "etc/environment"]
    assert "FOO=bar" in subprocess.run(cat, capture_output=True, text=True).stdout

    record = json.loads((tmp_path / "stage.json").read_text())
    inspect = ["skopeo", "inspect", "--format", "{{.Digest}}", oci_image]
    digest = subprocess.run(inspect, capture_output=True, text=True, check=True).stdout.strip()
    assert (record["image"], record["digest"], record["runtime"]) == (
        oci_image,
        digest,
        "container",
    )
    assert record["container"]["method"] == "skopeo+umoci+mksquashfs"
    assert record["versions"] == {"torch": "2.7.0a0"}  # read from the image's dist-info
    assert record["git_sha"] and len(record["code"]["fingerprint"]) == 64
    assert (tmp_path / "code/launch.sh").is_file() and (tmp_path / "code/conf/train.yaml").is_file()
    assert "next, e.g.: DTYPE=fp8 MODEL_SIZE=405b sbatch -N 72" in first.stdout

    mtime = sqsh.stat().st_mtime_ns
    second = setup_sh(env)
    assert second.returncode == 0, second.stderr
    assert "container oci-image+v1.sqsh already staged" in second.stdout
    assert "code already staged" in second.stdout
    assert sqsh.stat().st_mtime_ns == mtime
    assert not list(tmp_path.glob(".tmp-*"))


@needs_tools
def test_a_failed_rerun_keeps_the_staged_container_and_tokenizer_usable(tmp_path, oci_image):
    """A rerun that cannot build its new image or reach the Hub replaces nothing: the squashfs
    and the tokenizer already staged stay, and so does stage.json's complete."""
    with FakeHub({REPO: Repo(LLAMA_TOKENIZER)}) as hub:
        env = {"STAGE_PATH": str(tmp_path), "CONTAINER_IMAGE": oci_image, "HF_ENDPOINT": hub.url}
        assert setup_sh(env).returncode == 0
    sqsh, tokenizer = tmp_path / "oci-image+v1.sqsh", tmp_path / "tokenizer" / REPO
    before = (sqsh.stat().st_size, sorted(p.name for p in tokenizer.iterdir()))
    # The same squashfs name from an image that is not there (a typo of the path).
    missing = f"oci:{tmp_path / 'nowhere' / 'oci-image'}:v1"
    rerun = setup_sh({**env, "CONTAINER_IMAGE": missing})
    assert rerun.returncode != 0 and "oci-image+v1.sqsh" in rerun.stdout
    # The Hub unreachable (an offline login node) while the tokenizer needs downloading again.
    record = json.loads((tmp_path / "stage.json").read_text())
    record["tokenizer"]["path"] = "elsewhere"
    (tmp_path / "stage.json").write_text(json.dumps(record))
    offline = setup_sh({**env, "HF_ENDPOINT": "http://127.0.0.1:9"})
    assert offline.returncode == 2, offline.stderr
    assert "could not be reached" in offline.stderr and "Traceback" not in offline.stderr
    assert (sqsh.stat().st_size, sorted(p.name for p in tokenizer.iterdir())) == before
    assert json.loads((tmp_path / "stage.json").read_text())["complete"] is True
    assert not list(tmp_path.glob(".tmp-*"))


@needs_tools
def test_a_squashfs_no_stage_json_vouches_for_is_rebuilt(tmp_path, oci_image):
    (tmp_path / "oci-image+v1.sqsh").write_text("half an image")  # e.g. a crash before stage.json
    (tmp_path / ".tmp-oci-image+v1.sqsh.999").write_text("partial")
    proc = setup_sh(
        {"STAGE_PATH": str(tmp_path), "CONTAINER_IMAGE": oci_image, "TOKENIZER_REPO": "none"}
    )
    assert proc.returncode == 0, proc.stderr
    assert "removing .tmp-oci-image+v1.sqsh.999, left by an interrupted run" in proc.stdout
    assert "no stage.json vouches for it; importing it again" in proc.stdout
    assert (tmp_path / "oci-image+v1.sqsh").stat().st_size > 1000


@needs_tools
def test_gated_tokenizer_without_token_names_the_access_page(tmp_path, oci_image):
    with FakeHub({REPO: Repo(LLAMA_TOKENIZER, gated=True)}) as hub:
        env = {"STAGE_PATH": str(tmp_path), "CONTAINER_IMAGE": oci_image, "HF_ENDPOINT": hub.url}
        proc = setup_sh(env)
        assert proc.returncode == 2
        assert f"{REPO} is a gated repository: request access at {hub.url}/{REPO}" in proc.stderr
        assert "HF_TOKEN is not set" in proc.stderr
        proc = setup_sh({**env, "HF_TOKEN": "hf_not_approved"})
        assert proc.returncode == 2 and "has no access yet" in proc.stderr
    assert not (tmp_path / "tokenizer" / REPO).exists()
    assert json.loads((tmp_path / "stage.json").read_text())["complete"] is False


@needs_tools
def test_tokenizer_downloads_once_and_only_tokenizer_files(tmp_path, oci_image):
    with FakeHub({REPO: Repo(LLAMA_TOKENIZER, gated=True)}) as hub:
        env = {
            "STAGE_PATH": str(tmp_path),
            "CONTAINER_IMAGE": oci_image,
            "HF_ENDPOINT": hub.url,
            "HF_TOKEN": "hf_good",
        }
        first = setup_sh(env)
        assert first.returncode == 0, first.stderr
        fetched = {p.rsplit("/", 1)[1] for p in hub.downloads()}
        assert fetched == {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}
        hub.requests.clear()
        second = setup_sh(env)
        assert second.returncode == 0, second.stderr
        assert f"tokenizer {REPO} already staged" in second.stdout
        assert hub.requests == []
    folder = tmp_path / "tokenizer" / REPO
    assert sorted(p.name for p in folder.iterdir()) == sorted(fetched)
    record = json.loads((tmp_path / "stage.json").read_text())
    assert record["tokenizer"] == {
        "repo": REPO,
        "revision": Repo(LLAMA_TOKENIZER).sha,
        "path": str(folder),
    }


@needs_tools
def test_an_interrupted_download_leaves_nothing_trusted(tmp_path, oci_image):
    env = {"STAGE_PATH": str(tmp_path), "CONTAINER_IMAGE": oci_image, "HF_TOKEN": "hf_good"}
    with FakeHub({REPO: Repo(LLAMA_TOKENIZER, gated=True)}, stall="tokenizer.json") as hub:
        proc = setup_sh(
            {**env, "HF_ENDPOINT": hub.url}, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            assert hub.stalled.wait(timeout=120), "the download never started"
        finally:
            proc.send_signal(signal.SIGKILL)  # as a node failure or a ^C would
            proc.communicate()
    assert not (tmp_path / "tokenizer" / REPO).exists()
    assert list((tmp_path / "tokenizer/meta-llama").glob(".tmp-*"))  # the partial download
    # stage.json names what was finished and is not complete: launch.sh refuses it.
    record = json.loads((tmp_path / "stage.json").read_text())
    assert record["complete"] is False and "tokenizer" not in record
    assert record["container"]["image"] == oci_image

    with FakeHub({REPO: Repo(LLAMA_TOKENIZER, gated=True)}) as hub:
        again = setup_sh({**env, "HF_ENDPOINT": hub.url})
    assert again.returncode == 0, again.stderr
    assert "left by an interrupted run" in again.stdout
    assert "container oci-image+v1.sqsh already staged" in again.stdout  # finished pieces stay
    assert json.loads((tmp_path / "tokenizer" / REPO / "tokenizer.json").read_text())
    assert json.loads((tmp_path / "stage.json").read_text())["complete"] is True
    assert not list(tmp_path.rglob(".tmp-*"))


# -- the venv and the code, with the installs recorded instead of run ---------------------------


@pytest.fixture
def recorded(monkeypatch):
    """Replace subprocess work with a log; ``python -m venv`` makes the python file it names."""
    calls: list[list[str]] = []

    def fake_run(cmd, **kwargs):
        calls.append([str(c) for c in cmd])
        if cmd[1:3] == ["-m", "venv"]:
            python = Path(cmd[3]) / "bin" / "python"
            python.parent.mkdir(parents=True)
            python.write_text("")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(stage, "run", fake_run)
    monkeypatch.setattr(Stager, "runtime_versions", staticmethod(lambda python: {"torch": "x"}))
    return calls


def venv_stager(tmp_path, source, **env) -> Stager:
    settings = StageSettings.from_env(
        {
            "STAGE_PATH": str(tmp_path / "stage"),
            "CONTAINER": "none",
            "TOKENIZER_REPO": "none",
            **env,
        }
    )
    return Stager(settings, source=source)


@pytest.fixture
def source(tmp_path):
    """A minimal source tree: what code/ would copy."""
    src = tmp_path / "src-tree"
    (src / "src/recipes").mkdir(parents=True)
    (src / "src/recipes/__init__.py").write_text("__version__ = '0'\n")
    (src / "src/recipes/__pycache__").mkdir()
    (src / "src/recipes/__pycache__/x.pyc").write_bytes(b"\0")
    (src / "conf").mkdir()
    (src / "conf/train.yaml").write_text("a: 1\n")
    (src / "launch.sh").write_text("#!/bin/bash\n")
    return src


def test_venv_installs_torch_first_then_reuses(tmp_path, source, recorded):
    first = venv_stager(tmp_path, source, TORCH_SPEC="torch==2.13.0").run()
    venv = tmp_path / "stage/venv"
    assert [c[1:3] for c in recorded] == [["-m", "venv"], ["-m", "pip"], ["-m", "pip"]]
    assert recorded[1][-1] == "torch==2.13.0"  # torch first: the package must find it satisfied
    assert recorded[2][-1] == str(tmp_path / "stage/code")
    assert first["runtime"] == "venv" and first["versions"] == {"torch": "x"}
    assert json.loads((venv / ".staged").read_text())["torch_spec"] == "torch==2.13.0"
    assert not (tmp_path / "stage/code/src/recipes/__pycache__").exists()

    recorded.clear()
    venv_stager(tmp_path, source, TORCH_SPEC="torch==2.13.0").run()
    assert recorded == []


def test_a_moved_stage_is_reused_where_it_is_now(tmp_path, source, recorded):
    venv_stager(tmp_path, source).run()
    (tmp_path / "stage").rename(tmp_path / "moved")
    recorded.clear()
    settings = StageSettings.from_env(
        {"STAGE_PATH": str(tmp_path / "moved"), "CONTAINER": "none", "TOKENIZER_REPO": "none"}
    )
    record = Stager(settings, source=source).run()
    assert recorded == []  # nothing rebuilt
    moved = str(tmp_path / "moved")
    assert (record["stage_path"], record["code"]["path"]) == (moved, f"{moved}/code")
    assert record["venv"]["python"] == f"{moved}/venv/bin/python"
    assert json.loads((tmp_path / "moved/stage.json").read_text()) == record
    assert f"{moved}/code/launch.sh" in stage.next_step(record)


def test_a_venv_without_its_marker_is_rebuilt(tmp_path, source, recorded, capsys):
    venv_stager(tmp_path, source).run()
    (tmp_path / "stage/venv/.staged").unlink()  # as if pip had been interrupted
    recorded.clear()
    venv_stager(tmp_path, source).run()
    assert "is incomplete (interrupted run); rebuilding it" in capsys.readouterr().out
    assert recorded[0][1:3] == ["-m", "venv"]


def test_new_code_is_restaged_and_reinstalled_alone(tmp_path, source, recorded, capsys):
    venv_stager(tmp_path, source).run()
    (source / "conf/train.yaml").write_text("a: 2\n")
    recorded.clear()
    record = venv_stager(tmp_path, source).run()
    out = capsys.readouterr().out
    assert "holds other code; reinstalling the package only" in out
    assert [c[-1] for c in recorded] == [str(tmp_path / "stage/code")]
    assert (tmp_path / "stage/code/conf/train.yaml").read_text() == "a: 2\n"
    assert record["venv"]["code"] == record["code"]["fingerprint"]


def test_a_changed_torch_spec_rebuilds_the_venv(tmp_path, source, recorded, capsys):
    venv_stager(tmp_path, source, TORCH_SPEC="torch==2.13.0").run()
    recorded.clear()
    venv_stager(tmp_path, source, TORCH_SPEC="torch", TORCH_INDEX_URL="https://rocm.example/").run()
    assert "was built differently; rebuilding it" in capsys.readouterr().out
    assert recorded[0][1:3] == ["-m", "venv"]
    assert recorded[1][-3:] == ["torch", "--index-url", "https://rocm.example/"]


def test_arguments_and_a_stage_path_that_cannot_be_made_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STAGE_PATH", str(tmp_path / "stage"))
    assert stage.main(["--container", "none"]) == 2
    assert "setup.sh takes no arguments, got --container none" in capsys.readouterr().err
    assert not (tmp_path / "stage").exists()
    monkeypatch.setenv("STAGE_PATH", "/proc/recipes-stage")  # takes no new folders, even as root
    assert stage.main([]) == 2
    assert "STAGE_PATH='/proc/recipes-stage' cannot be created" in capsys.readouterr().err


def test_a_python_that_is_not_there_exits_2(tmp_path):
    done = setup_sh({"STAGE_PATH": str(tmp_path / "stage"), "PYTHON": str(tmp_path / "python")})
    assert done.returncode == 2 and f"PYTHON='{tmp_path}/python' is not a command" in done.stderr
    assert not (tmp_path / "stage").exists()


def test_one_setup_at_a_time(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STAGE_PATH", str(tmp_path))
    with staging_lock(tmp_path):
        assert stage.main([]) == 2
    assert "another setup.sh is staging into" in capsys.readouterr().err


@needs_tools
@pytest.mark.slow
def test_a_login_python_without_huggingface_hub_downloads_through_a_tools_venv(tmp_path, oci_image):
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", str(bare)], check=True)
    stage_path = tmp_path / "stage"
    env = {
        "STAGE_PATH": str(stage_path),
        "CONTAINER_IMAGE": oci_image,
        "PYTHON": str(bare / "bin/python"),
    }
    with FakeHub({REPO: Repo(LLAMA_TOKENIZER, gated=True)}) as hub:
        env["HF_ENDPOINT"] = hub.url
        refused = setup_sh(env)
        assert refused.returncode == 2
        assert f"request access at {hub.url}/{REPO}" in refused.stderr  # the child's message
        done = setup_sh({**env, "HF_TOKEN": "hf_good"})
    assert done.returncode == 0, done.stderr
    assert (stage_path / "tools/bin/python").exists()
    assert (stage_path / "tokenizer" / REPO / "tokenizer.json").is_file()


def test_a_commit_is_recorded_only_for_the_checkout_itself(tmp_path):
    """A folder inside another git repository (an install under ~/.pyenv, a home-folder dotfiles
    repo) is not a checkout of this code: its HEAD is not recorded."""
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "f").write_text("x")
    subprocess.run([*git, "-C", str(tmp_path), "add", "f"], check=True)
    subprocess.run([*git, "-C", str(tmp_path), "commit", "-qm", "x"], check=True)
    head = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    (tmp_path / "lib/site-packages").mkdir(parents=True)
    assert stage.checkout_head(tmp_path) == head
    assert stage.checkout_head(tmp_path / "lib/site-packages") is None
    assert stage.git_state(tmp_path / "lib/site-packages") == (None, None)
    assert stage.checkout_head(tmp_path.parent / "nowhere") is None
