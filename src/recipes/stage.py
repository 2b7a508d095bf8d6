"""``setup.sh``: stage what benchmark jobs need under STAGE_PATH, reusing what is already there.

What lands under STAGE_PATH (each piece is built under a temporary name and moved into place
only when complete; a venv, which cannot be moved, gets a marker file written last), so an
interrupted run leaves nothing a later run would trust:

- the runtime: the container as an enroot squashfs (``enroot import``), or, where enroot is
  missing, the same format built from the OCI image with skopeo + umoci + mksquashfs; or, with
  ``CONTAINER=none``, a venv with this package installed (``venv/``);
- the code and conf at this version (``code/``), which every job runs;
- the Llama 3.1 tokenizer through huggingface_hub (``tokenizer/<repo>/``);
- ``stage.json``: image, digest, git SHA, versions, Slurm defaults; written last.

Only the standard library is imported at module level: setup.sh runs this with the login
node's ``python3`` before any venv exists.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from recipes import __version__
from recipes.results.run_dir import file_in_the_way

DEFAULT_IMAGE = "nvcr.io/nvidia/nemo:25.04"
"""Pinned NeMo container (PyTorch, Transformer Engine, Megatron-core, NCCL for H100/B200)."""
DEFAULT_TOKENIZER_REPO = "meta-llama/Llama-3.1-8B"
"""Llama 3.1 8B, 70B and 405B share this tokenizer."""
REPO_ID = re.compile(r"(?!.*\.\.)[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
"""A Hub repo id: ``<org>/<name>`` (the tokenizer is staged at tokenizer/<org>/<name>)."""
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
CONTAINERS = ("enroot", "none")
CODE_ITEMS = (
    "src",
    "conf",
    "recipes",
    "scripts",
    "docs",
    "launch.sh",
    "setup.sh",
    "pyproject.toml",
    "README.md",
)
"""What of the source tree ``code/`` holds: everything a job or a re-run of setup.sh needs."""
SKIP_NAMES = ("__pycache__", ".pytest_cache", ".ruff_cache")
VERSION_PACKAGES = (
    "recipes",
    "torch",
    "lightning",
    "hydra-core",
    "omegaconf",
    "huggingface_hub",
    "hydra-submitit-launcher",
    "submitit",
    "torchao",
    "megatron-core",
    "transformer-engine",
)
"""Packages whose versions stage.json records for the staged runtime."""
ENROOT_SQUASH_OPTIONS = "-comp lzo -noI -noD -noF -noX -no-duplicates"
"""enroot's default mksquashfs options (overridable, as in enroot, by ENROOT_SQUASH_OPTIONS)."""
TMP_PREFIX = ".tmp-"


class StageError(Exception):
    """Something setup.sh cannot do; the message says what and how to fix it."""


def say(message: str) -> None:
    print(f"setup.sh: {message}", flush=True)


# -- settings --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageSettings:
    """What setup.sh reads from the environment, checked."""

    stage_path: Path
    container: str = "enroot"
    image: str = DEFAULT_IMAGE
    torch_spec: str = "torch"
    torch_index_url: str | None = None
    venv_system_site_packages: bool = False
    hf_token: str | None = None
    hf_endpoint: str | None = None
    tokenizer_repo: str | None = DEFAULT_TOKENIZER_REPO
    tokenizer_revision: str | None = None
    partition: str | None = None
    account: str | None = None
    gpus_per_node: int | None = None
    gpu_gres_type: str | None = None  # "h100" in SLURM_GPUS_PER_NODE=h100:8

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StageSettings:
        stage_path = env.get("STAGE_PATH", "").strip()
        if not stage_path:
            raise StageError(
                "STAGE_PATH is required: a folder on a file system every node sees "
                "(e.g. STAGE_PATH=/lustre/$USER/recipes)"
            )
        where = Path(stage_path).expanduser().absolute()
        blocking = file_in_the_way(where)
        if blocking is not None:
            raise StageError(
                f"STAGE_PATH={stage_path!r} is not a folder ({blocking} is a file); name a "
                "folder (new or existing) on a file system every node sees"
            )
        container = env.get("CONTAINER", "enroot").strip() or "enroot"
        if container not in CONTAINERS:
            raise StageError(
                f"CONTAINER={container!r} must be one of: {' '.join(CONTAINERS)} "
                "(enroot: a squashfs of CONTAINER_IMAGE for pyxis; none: a venv)"
            )
        tokenizer = env.get("TOKENIZER_REPO", DEFAULT_TOKENIZER_REPO).strip()
        if tokenizer not in ("", "none") and not REPO_ID.fullmatch(tokenizer):
            raise StageError(
                f"TOKENIZER_REPO={tokenizer!r} is not a Hugging Face repo id (<org>/<name>, "
                f"letters, digits, '.', '_', '-', no '..'); e.g. TOKENIZER_REPO="
                f"{DEFAULT_TOKENIZER_REPO}, or none to skip the tokenizer"
            )
        return cls(
            stage_path=where,
            container=container,
            image=env.get("CONTAINER_IMAGE", "").strip() or DEFAULT_IMAGE,
            torch_spec=env.get("TORCH_SPEC", "").strip() or "torch",
            torch_index_url=env.get("TORCH_INDEX_URL") or None,
            venv_system_site_packages=_flag(env, "VENV_SYSTEM_SITE_PACKAGES"),
            hf_token=env.get("HF_TOKEN", "").strip() or None,  # a pasted token's newline
            hf_endpoint=env.get("HF_ENDPOINT") or None,
            tokenizer_repo=None if tokenizer in ("", "none") else tokenizer,
            tokenizer_revision=env.get("TOKENIZER_REVISION") or None,
            partition=env.get("SLURM_PARTITION") or None,
            account=env.get("SLURM_ACCOUNT") or None,
            **_gpus_per_node(env.get("SLURM_GPUS_PER_NODE", "")),
        )


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise StageError(f"{name}={value!r} must be 1 or 0")


SLURM_GPU_COUNT = re.compile(r"(?:([\w.-]+):)?(\d+)")
"""Slurm's ``[type:]count`` form of SLURM_GPUS_PER_NODE ("8", "h100:8")."""


def _gpus_per_node(value: str) -> dict:
    """SLURM_GPUS_PER_NODE as Slurm writes it, ``[type:]count`` ("8", "h100:8"), or null."""
    value = value.strip()
    if value in ("", "null", "none"):
        return {}
    m = SLURM_GPU_COUNT.fullmatch(value)
    if not m or int(m.group(2)) < 1:
        raise StageError(
            f"SLURM_GPUS_PER_NODE={value!r} must be a positive number of GPUs, optionally with "
            "their gres type (8, h100:8), or null (see https://slurm.schedmd.com/gres.html)"
        )
    return {"gpu_gres_type": m.group(1), "gpus_per_node": int(m.group(2))}


# -- container image references --------------------------------------------------------------

SKOPEO_TRANSPORTS = ("docker://", "oci:", "oci-archive:", "docker-archive:", "docker-daemon:")
ENROOT_ONLY = ("dockerd://", "podman://")


def skopeo_source(image: str) -> str:
    """The image as a skopeo source; a bare reference is a registry image (docker://)."""
    if image.startswith(ENROOT_ONLY):
        return "docker-daemon:" + image.split("://", 1)[1]
    if image.startswith(SKOPEO_TRANSPORTS):
        return image
    return "docker://" + image


def enroot_uri(image: str) -> str | None:
    """The image as an ``enroot import`` URI, ``docker://[REGISTRY#]IMAGE[:TAG]``, if it has one."""
    if image.startswith(ENROOT_ONLY):
        return image
    if image.startswith(SKOPEO_TRANSPORTS) and not image.startswith("docker://"):
        return None  # local OCI layouts and archives: enroot cannot read them
    ref = image.removeprefix("docker://")
    registry, rest = _split_registry(ref)
    return f"docker://{registry}#{rest}" if registry else f"docker://{rest}"


def _split_registry(ref: str) -> tuple[str | None, str]:
    first, _, rest = ref.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first, rest
    return None, ref


def sqsh_name(image: str) -> str:
    """enroot's file name: ``nvcr.io/nvidia/nemo:25.04`` -> ``nvidia+nemo+25.04.sqsh``."""
    if image.startswith(("oci:", "oci-archive:", "docker-archive:")):
        ref = image.split(":", 1)[1]
        path, _, tag = ref.rpartition(":") if ref.count(":") else (ref, "", "")
        name = Path(path or ref).name.removesuffix(".tar")
        return f"{name}+{tag}.sqsh" if tag else f"{name}.sqsh"
    ref = image.split("://", 1)[1] if "://" in image else image
    _, rest = _split_registry(ref)
    return re.sub(r"[/:@]", "+", rest) + ".sqsh"


# -- small helpers ---------------------------------------------------------------------------


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a command; a failure becomes a StageError with the command and its last output."""
    try:
        return subprocess.run(cmd, check=True, text=True, capture_output=True, **kwargs)
    except FileNotFoundError as err:
        raise StageError(f"{cmd[0]} is not installed: {err}") from err
    except subprocess.CalledProcessError as err:
        tail = "\n".join((err.stdout + err.stderr).strip().splitlines()[-15:])
        raise StageError(f"`{shlex.join(cmd)}` failed (exit {err.returncode}):\n{tail}") from err


def remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def write_json_atomic(path: Path, obj: object) -> None:
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def relocated(record: dict, root: Path) -> dict:
    """stage.json's record with the paths under its stage_path moved to ``root``: a stage folder
    moved or copied whole (mv, rsync to another cluster) is used where it is, not where it was
    staged (the venv runs as ``venv/bin/python -m``, which a move leaves working)."""
    old = record.get("stage_path")
    if not old or old == str(root):
        return record

    def move(value):
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        if isinstance(value, str) and (value == old or value.startswith(old + "/")):
            return str(root) + value[len(old) :]
        return value

    return move(record)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def staging_lock(stage_path: Path) -> Iterator[None]:
    """One setup.sh at a time per STAGE_PATH."""
    try:
        stage_path.mkdir(parents=True, exist_ok=True)
        lock = open(stage_path / ".stage.lock", "w")  # noqa: SIM115 - closed by the with below
    except OSError as err:
        raise StageError(
            f"STAGE_PATH={str(stage_path)!r} cannot be created or written ({err.strerror}); "
            "name a folder you can write to, on a file system every node sees"
        ) from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise StageError(
                f"another setup.sh is staging into {stage_path}; wait for it to finish"
            ) from err
        yield


def tool_version(cmd: list[str]) -> str | None:
    """First line of a tool's version output, or None when it is not installed."""
    if shutil.which(cmd[0]) is None:
        return None
    out = subprocess.run(cmd, capture_output=True, text=True)
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0].strip() if lines else None


# -- code ------------------------------------------------------------------------------------


def source_root() -> Path:
    """The tree this module was loaded from (a checkout, or an earlier stage's ``code/``)."""
    return Path(__file__).resolve().parents[2]


def code_files(root: Path) -> list[Path]:
    """The files of CODE_ITEMS under ``root``, relative and sorted."""
    files = []
    for item in CODE_ITEMS:
        path = root / item
        if path.is_file():
            files.append(Path(item))
        elif path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = sorted(
                    d for d in dirnames if d not in SKIP_NAMES and not d.endswith(".egg-info")
                )
                for name in filenames:
                    if not name.endswith((".pyc", ".pyo")):
                        files.append((Path(dirpath) / name).relative_to(root))
    return sorted(files)


def fingerprint(root: Path, files: list[Path]) -> str:
    """sha256 over names and contents: equal fingerprints mean identical code."""
    digest = hashlib.sha256()
    for rel in files:
        digest.update(str(rel).encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return digest.hexdigest()


def git_state(root: Path) -> tuple[str | None, bool | None]:
    """(commit, dirty) of a git checkout; from STAGED.json in a staged copy; else (None, None)."""
    staged = read_json(root / "STAGED.json")
    if staged and not (root / ".git").exists():
        return staged.get("git_sha"), staged.get("git_dirty")
    sha = checkout_head(root)
    if sha is None:
        return None, None
    try:
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", *CODE_ITEMS],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None, None
    return sha, bool(status.stdout.strip())


def checkout_head(root: Path) -> str | None:
    """HEAD of the git checkout whose top folder is ``root``; None when ``root`` is not one, even
    inside another repository (an install under ~/.pyenv or a dotfiles repo has another HEAD)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--show-toplevel", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.stdout.split("\n")
    if out.returncode != 0 or len(lines) < 2 or Path(lines[0]).resolve() != root.resolve():
        return None
    return lines[1].strip() or None


# -- OCI image -> enroot squashfs ------------------------------------------------------------


def oci_image_config(layout: Path, tag: str) -> dict:
    """The image configuration (Env, Cmd, ...) of ``tag`` in an OCI layout directory."""

    def blob(digest: str) -> dict:
        algo, _, value = digest.partition(":")
        return json.loads((layout / "blobs" / algo / value).read_text())

    index = json.loads((layout / "index.json").read_text())
    for entry in index["manifests"]:
        if entry.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            return blob(blob(entry["digest"])["config"]["digest"])
    raise StageError(f"tag {tag!r} not found in the OCI layout {layout}")


def enroot_configure(rootfs: Path, image_config: dict) -> None:
    """Write the files enroot derives from the image config, as ``enroot import`` does.

    ``etc/environment`` (the image's Env, which pyxis applies), ``etc/fstab`` (its volumes as
    bind mounts), ``etc/rc`` (labels as comments, then cd to WorkingDir and exec
    Entrypoint/Cmd) and an empty ``etc/rc.local``.
    """
    config = image_config.get("config") or {}
    etc = rootfs / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "environment").write_text("".join(f"{e}\n" for e in config.get("Env") or []))
    (etc / "fstab").write_text(
        "".join(
            f"${{ENROOT_ROOTFS}}{v} {v} none x-create=dir,bind,rw,nosuid,nodev\n"
            for v in sorted(config.get("Volumes") or {})
        )
    )
    labels = "".join(f"# {k} {v}\n" for k, v in (config.get("Labels") or {}).items())
    workdir = config.get("WorkingDir") or "/"
    entrypoint = config.get("Entrypoint") or []
    cmd = config.get("Cmd") or ([] if entrypoint else ["/bin/sh"])
    (rootfs / workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
    ep = shlex.join(entrypoint)
    (etc / "rc").write_text(
        (labels + "\n" if labels else "")
        + f'mkdir -p "{workdir}" 2> /dev/null\n'
        + f'cd "{workdir}" && unset OLDPWD || exit 1\n\n'
        + "if [ -s /etc/rc.local ]; then\n    . /etc/rc.local\nfi\n\n"
        + f'if [ $# -gt 0 ]; then\n    exec {ep} "$@"\nelse\n'
        + f"    exec {shlex.join([*entrypoint, *cmd])}\nfi\n"
    )
    (etc / "rc.local").write_text(
        "# This file is sourced by /etc/rc when the container starts.\n"
        "# It can be used to manipulate the entrypoint or the command of the container.\n"
    )


def squashfs_versions(sqsh: Path) -> dict[str, str]:
    """Versions of VERSION_PACKAGES installed in a squashfs image, read from its dist-info names."""
    listing = run(["unsquashfs", "-l", "-d", "", str(sqsh)]).stdout
    wanted = {_dist_key(p): p for p in VERSION_PACKAGES}
    found: dict[str, str] = {}
    pattern = re.compile(r"/(?:site|dist)-packages/([A-Za-z0-9_.]+?)-([^-/]+)\.dist-info$")
    for line in listing.splitlines():
        if m := pattern.search(line.strip()):
            key = _dist_key(m.group(1))
            if key in wanted:
                found.setdefault(wanted[key], m.group(2))
    return found


def _dist_key(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


# -- the stager ------------------------------------------------------------------------------


class Stager:
    """Stages each piece in turn; every piece is reused when already complete."""

    def __init__(self, settings: StageSettings, source: Path | None = None) -> None:
        self.s = settings
        self.root = settings.stage_path
        self.source = source or source_root()
        self.record: dict = relocated(read_json(self.root / "stage.json") or {}, self.root)

    # ---- entry -------------------------------------------------------------------------------
    def run(self) -> dict:
        self.root.mkdir(parents=True, exist_ok=True)
        self.clear_leftovers()
        # stage.json names each piece once it is in place and says complete only at the end: a
        # rerun after an interruption reuses what is done, and launch.sh refuses an incomplete one.
        # A complete stage stays complete (and usable) until a rerun starts replacing a piece:
        # a rerun that fails before that (a wrong image tag, the Hub unreachable) changes nothing.
        if not self.record.get("complete"):
            self.save(complete=False)
        code = self.stage_code()
        self.save(code=code, git_sha=code["git_sha"], git_dirty=code["git_dirty"])
        if self.s.container == "none":
            venv = self.stage_venv()
            self.save(runtime="venv", venv=venv, container=None, image=None, digest=None)
        else:
            container = self.stage_container()
            image, digest = container["image"], container["digest"]
            self.save(
                runtime="container", container=container, venv=None, image=image, digest=digest
            )
        self.save(versions=(self.record["container"] or self.record["venv"])["versions"])
        tokenizer = self.stage_tokenizer() if self.s.tokenizer_repo else None
        self.save(
            tokenizer=tokenizer,
            complete=True,
            recipes_version=__version__,
            stage_path=str(self.root),
            staged_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            slurm={
                "partition": self.s.partition,
                "account": self.s.account,
                "gpus_per_node": self.s.gpus_per_node,
                "gpu_gres_type": self.s.gpu_gres_type,
            },
            tools={
                "enroot": tool_version(["enroot", "version"]),
                "skopeo": tool_version(["skopeo", "--version"]),
                "umoci": tool_version(["umoci", "--version"]),
                "mksquashfs": tool_version(["mksquashfs", "-version"]),
            },
        )
        return self.record

    def save(self, **fields) -> None:
        """Record finished pieces in stage.json (atomically: a reader sees the old or the new)."""
        self.record.update(fields)
        write_json_atomic(self.root / "stage.json", self.record)

    def clear_leftovers(self) -> None:
        """Remove what an interrupted run left under temporary names; nothing trusts it."""
        patterns = (f"{TMP_PREFIX}*", f"tokenizer/*/{TMP_PREFIX}*")  # where tmp_path() puts them
        for path in [p for pattern in patterns for p in self.root.glob(pattern)]:
            say(f"removing {path.relative_to(self.root)}, left by an interrupted run")
            remove(path)

    def tmp_path(self, final: Path) -> Path:
        return final.with_name(f"{TMP_PREFIX}{final.name}.{os.getpid()}")

    def changing(self) -> None:
        """A piece is about to change in place: the stage is incomplete until the run ends."""
        if self.record.get("complete"):
            self.save(complete=False)

    def commit(self, tmp: Path, final: Path) -> None:
        """Move a completed piece into place (replacing an older one) in one rename."""
        self.changing()
        if final.exists():
            old = final.with_name(f"{TMP_PREFIX}old-{final.name}.{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            remove(old)
        else:
            os.replace(tmp, final)

    # ---- code --------------------------------------------------------------------------------
    def stage_code(self) -> dict:
        files = code_files(self.source)
        if not (self.source / "src" / "recipes").is_dir() or not files:
            raise StageError(f"{self.source} is not a recipes source tree (no src/recipes)")
        digest = fingerprint(self.source, files)
        final = self.root / "code"
        staged = read_json(final / "STAGED.json")
        if staged and staged.get("fingerprint") == digest:
            say(f"code already staged at {final} ({digest[:12]}); reusing it")
            return {**staged, "path": str(final)}  # the stage may have moved since
        sha, dirty = git_state(self.source)
        tmp = self.tmp_path(final)
        for rel in files:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(self.source / rel, tmp / rel)
        info = {
            "path": str(final),
            "fingerprint": digest,
            "git_sha": sha,
            "git_dirty": dirty,
            "files": len(files),
        }
        (tmp / "STAGED.json").write_text(json.dumps(info, indent=2) + "\n")
        self.commit(tmp, final)
        note = " (with uncommitted changes)" if dirty else ""
        say(f"staged code {sha or 'outside git'}{note} at {final}")
        return info

    # ---- venv --------------------------------------------------------------------------------
    def venv_python(self) -> Path:
        return self.root / "venv" / "bin" / "python"

    def stage_venv(self) -> dict:
        venv = self.root / "venv"
        marker = venv / ".staged"
        code = self.root / "code"
        code_fp = read_json(code / "STAGED.json")["fingerprint"]
        wanted = {"torch_spec": self.s.torch_spec, "system": self.s.venv_system_site_packages}
        staged = read_json(marker)
        if staged and {k: staged.get(k) for k in wanted} == wanted:
            if staged.get("code") == code_fp:
                say(f"venv already staged at {venv}; reusing it")
                return {**staged, "path": str(venv), "python": str(self.venv_python())}
            say(f"venv at {venv} holds other code; reinstalling the package only")
            self.changing()
            marker.unlink()
            self._pip(code)
        else:
            self.changing()
            if venv.exists():
                why = "is incomplete (interrupted run)" if not staged else "was built differently"
                say(f"venv at {venv} {why}; rebuilding it")
                remove(venv)
            say(f"creating venv at {venv} with {self.s.torch_spec}, then this package")
            cmd = [sys.executable, "-m", "venv", str(venv)]
            if self.s.venv_system_site_packages:
                cmd.append("--system-site-packages")
            run(cmd)
            torch = [self.s.torch_spec]
            if self.s.torch_index_url:
                torch += ["--index-url", self.s.torch_index_url]
            # torch first: the package's own "torch" requirement must find it satisfied.
            self._pip(*torch)
            self._pip(code)
        info = {
            **wanted,
            "code": code_fp,
            "path": str(venv),
            "python": str(self.venv_python()),
            "versions": self.runtime_versions(self.venv_python()),
        }
        write_json_atomic(marker, info)  # last: without it the venv is rebuilt
        return info

    def _pip(self, *args: str | Path) -> None:
        run([str(self.venv_python()), "-m", "pip", "install", "-q", *map(str, args)])

    @staticmethod
    def runtime_versions(python: Path | str) -> dict[str, str | None]:
        script = (
            "import importlib.metadata as m, json, platform, sys\n"
            "def v(n):\n"
            "    try: return m.version(n)\n"
            "    except m.PackageNotFoundError: return None\n"
            f"print(json.dumps({{'python': platform.python_version(), "
            f"**{{n: v(n) for n in {list(VERSION_PACKAGES)!r}}}}}))"
        )
        return json.loads(run([str(python), "-c", script]).stdout)

    # ---- container ---------------------------------------------------------------------------
    def stage_container(self) -> dict:
        image = self.s.image
        final = self.root / sqsh_name(image)
        previous = self.record.get("container") or {}
        reusable = previous.get("sqsh") == str(final) and previous.get("image") == image
        if final.is_file() and reusable:
            say(f"container {final.name} already staged ({previous.get('digest')}); reusing it")
            return previous
        if final.exists():  # replaced only once the new one is built
            say(f"{final.name} exists but no stage.json vouches for it; importing it again")
        tmp = self.tmp_path(final)
        uri = enroot_uri(image)
        if shutil.which("enroot") and uri:
            say(f"importing {image} with enroot into {final.name}")
            run(["enroot", "import", "--output", str(tmp), uri])
            method = "enroot import"
        else:
            missing = [t for t in ("skopeo", "umoci", "mksquashfs") if shutil.which(t) is None]
            if missing:
                raise StageError(
                    "neither enroot nor the tools to build its squashfs are here (missing: "
                    f"{' '.join(missing)}); install enroot, or apt-get install skopeo umoci "
                    "squashfs-tools, or stage a venv instead with CONTAINER=none"
                )
            say(f"building {final.name} from {image} with skopeo, umoci and mksquashfs")
            self.build_squashfs(image, tmp)
            method = "skopeo+umoci+mksquashfs"
        info = {
            "image": image,
            "digest": self.image_digest(image),
            "sqsh": str(final),
            "method": method,
            "versions": squashfs_versions(tmp),
        }
        self.commit(tmp, final)
        say(f"staged container {final}")
        return info

    def image_digest(self, image: str) -> str | None:
        """The manifest digest of the image, where skopeo can tell."""
        if "@sha256:" in image:
            return image.rsplit("@", 1)[1]
        if shutil.which("skopeo") is None:
            return None
        out = subprocess.run(
            ["skopeo", "inspect", "--format", "{{.Digest}}", skopeo_source(image)],
            capture_output=True,
            text=True,
        )
        return (out.stdout.strip() or None) if out.returncode == 0 else None

    def build_squashfs(self, image: str, out: Path) -> None:
        """OCI image -> flattened root filesystem -> enroot-format squashfs at ``out``."""
        work = out.with_name(out.name + ".work")
        work.mkdir()
        try:
            layout = work / "oci"
            run(["skopeo", "copy", "-q", skopeo_source(image), f"oci:{layout}:image"])
            config = oci_image_config(layout, "image")
            unpack = ["umoci", "unpack"]
            if os.geteuid() != 0:
                unpack.append("--rootless")
            run([*unpack, "--image", f"{layout}:image", str(work / "bundle")])
            rootfs = work / "bundle" / "rootfs"
            for entry in (rootfs / "dev").glob("*"):  # enroot leaves /dev to the runtime
                remove(entry)
            enroot_configure(rootfs, config)
            options = os.environ.get("ENROOT_SQUASH_OPTIONS", ENROOT_SQUASH_OPTIONS).split()
            mksquashfs = ["mksquashfs", str(rootfs), str(out), "-noappend", "-all-root"]
            run([*mksquashfs, "-no-progress", *options])
        finally:
            remove(work)

    # ---- tokenizer ---------------------------------------------------------------------------
    def stage_tokenizer(self) -> dict:
        repo = self.s.tokenizer_repo
        final = self.root / "tokenizer" / repo
        previous = self.record.get("tokenizer") or {}
        if final.is_dir() and previous.get("repo") == repo and previous.get("path") == str(final):
            say(f"tokenizer {repo} already staged ({previous.get('revision')}); reusing it")
            return previous
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.tmp_path(final)
        say(f"downloading the {repo} tokenizer through huggingface_hub")
        revision = self.download_tokenizer(tmp)
        self.commit(tmp, final)  # an older copy is replaced only once the new one is here
        say(f"staged tokenizer at {final}")
        return {"repo": repo, "revision": revision, "path": str(final)}

    def download_tokenizer(self, dest: Path) -> str:
        """Download into ``dest``; in this Python if it has huggingface_hub, else in the venv's."""
        repo, revision = self.s.tokenizer_repo, self.s.tokenizer_revision
        try:
            import huggingface_hub  # noqa: F401
        except ImportError:
            python = self.hub_python()
            cmd = [str(python), "-m", "recipes.stage", "--tokenizer", repo, str(dest)]
            cmd += [revision] if revision else []
            env = {**os.environ, "PYTHONPATH": str(self.root / "code" / "src")}
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise StageError(proc.stderr.strip().removeprefix("setup.sh: ")) from None
            return proc.stdout.strip().splitlines()[-1]
        return download_tokenizer(
            repo, revision, dest, token=self.s.hf_token, endpoint=self.s.hf_endpoint
        )

    def hub_python(self) -> Path:
        """A Python with huggingface_hub: the staged venv's, or a small tools venv."""
        if self.venv_python().exists():
            return self.venv_python()
        tools = self.root / "tools"
        python = tools / "bin" / "python"
        if not (tools / ".staged").exists():
            remove(tools)
            say(f"creating {tools} (a venv with huggingface_hub) for the download")
            run([sys.executable, "-m", "venv", str(tools)])
            run([str(python), "-m", "pip", "install", "-q", "huggingface_hub"])
            (tools / ".staged").write_text("")
        return python


def download_tokenizer(
    repo: str,
    revision: str | None,
    dest: Path,
    *,
    token: str | None,
    endpoint: str | None,
) -> str:
    """Download the tokenizer files of ``repo`` into ``dest``; return the commit downloaded."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()  # three small files; the log says what was fetched

    page = f"{(endpoint or 'https://huggingface.co').rstrip('/')}/{repo}"
    api = HfApi(endpoint=endpoint, token=token or False)
    try:
        info = api.model_info(repo, revision=revision)
        snapshot_download(
            repo,
            revision=info.sha,
            allow_patterns=list(TOKENIZER_FILES),
            local_dir=dest,
            token=token or False,
            endpoint=endpoint,
        )
    except GatedRepoError as err:
        how = (
            "HF_TOKEN is not set: create a token at https://huggingface.co/settings/tokens and "
            "export HF_TOKEN=<token>"
            if not token
            else "the account of HF_TOKEN has no access yet"
        )
        raise StageError(
            f"{repo} is a gated repository: request access at {page} (approval can take a "
            f"day); {how}. Or set TOKENIZER_REPO=none to skip the tokenizer (synthetic data "
            "needs none)."
        ) from err
    except RepositoryNotFoundError as err:
        raise StageError(
            f"{repo} was not found at {page}, or it needs a token: check TOKENIZER_REPO, and "
            "set HF_TOKEN to a token with access to it"
        ) from err
    except HfHubHTTPError as err:
        raise StageError(f"downloading the tokenizer from {page} failed: {err}") from err
    except Exception as err:  # unreachable, offline, a bad URL: huggingface_hub's HTTP client's
        transport = type(err).__module__.split(".")[0] in ("httpx", "httpx2")  # (by version)
        if not (transport or isinstance(err, (OSError, ValueError))):
            raise
        raise StageError(
            f"the Hub at {page} could not be reached ({type(err).__name__}: {err}); check "
            "HF_ENDPOINT and the network (a login node may be offline: run setup.sh where the "
            "Hub is reachable), or set TOKENIZER_REPO=none to skip the tokenizer"
        ) from err
    if not (dest / "tokenizer.json").is_file():
        raise StageError(f"{repo} at {info.sha} has no tokenizer.json; set TOKENIZER_REPO")
    remove(dest / ".cache")  # huggingface_hub's download bookkeeping
    return info.sha


def next_step(record: dict) -> str:
    """The launch command to run next, with this stage's Slurm defaults."""
    slurm = record.get("slurm") or {}
    opts = []
    if slurm.get("account"):
        opts.append(f"-A {slurm['account']}")
    if slurm.get("partition"):
        opts.append(f"-p {slurm['partition']}")
    if slurm.get("gpus_per_node"):
        gres = ":".join(str(p) for p in (slurm.get("gpu_gres_type"), slurm["gpus_per_node"]) if p)
        opts.append(f"--gres=gpu:{gres}")
    # Seed 003's 405B benchmark runs on 576 GPUs: 72 nodes of 8, or as many nodes as that takes.
    per_node = slurm.get("gpus_per_node") or 8
    nodes = 576 // per_node if 576 % per_node == 0 else 72
    launch = shlex.quote(str(Path(record["code"]["path"]) / "launch.sh"))
    return " ".join(["DTYPE=fp8 MODEL_SIZE=405b sbatch", *opts, f"-N {nodes}", launch])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["--tokenizer"]:  # the download, run in a Python that has huggingface_hub
            repo, dest, *revision = argv[1:]
            print(
                download_tokenizer(
                    repo,
                    revision[0] if revision else None,
                    Path(dest),
                    token=os.environ.get("HF_TOKEN") or None,
                    endpoint=os.environ.get("HF_ENDPOINT") or None,
                )
            )
            return 0
        if argv:
            raise StageError(
                f"setup.sh takes no arguments, got {shlex.join(argv)}; its settings are "
                "environment variables, e.g. STAGE_PATH=/lustre/$USER/recipes CONTAINER=none "
                "./setup.sh"
            )
        settings = StageSettings.from_env(os.environ)
        with staging_lock(settings.stage_path):
            record = Stager(settings).run()
    except StageError as err:
        print(f"setup.sh: {err}", file=sys.stderr)
        return 2
    say(f"done: {settings.stage_path / 'stage.json'}")
    say(f"next, e.g.: {next_step(record)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
