"""Start, watch and stop a real Triton Inference Server.

`tritonserver` comes from PATH when present (an NGC container, a GPU host), else from the CPU build
inside the `nvidia-pytriton` wheel. That build needs three things arranged (all checked here):
a backends directory holding the Python backend *and* the stub for this interpreter, the wheel's
bundled libraries on LD_LIBRARY_PATH, and this interpreter's libpython first on it (the stub links
`libpython3.11.so.1.0`; Debian's copy would meet pyenv's stdlib and fail to import ssl).

The stub embeds Python in isolated mode (`sys.flags.isolated == 1`: PYTHONPATH and PYTHONHOME are ignored),
but it still finds its prefix the way CPython does for a program named `python3`: it looks `python3` up on
PATH and, next to it, for a `pyvenv.cfg` (CPython 3.11 Modules/getpath.py, https://github.com/python/cpython).
So PATH with this interpreter's directory first makes every Python model, hand-written ones included, run in
this interpreter's environment (its site-packages, no other) without any cooperation from the model — what
the Python backend's own EXECUTION_ENV_PATH does by sourcing an environment's `bin/activate`.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tritonforge.builder import versions
from tritonforge.builder.launch import Launch
from tritonforge.errors import UserError
from tritonforge.paths import cache_root


@dataclass(frozen=True)
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002

    def all(self) -> tuple[int, int, int]:
        return (self.http, self.grpc, self.metrics)


@dataclass
class TritonInstall:
    """Where a runnable tritonserver and its backends are, and the environment it needs."""

    binary: Path
    backend_dir: Path | None = None
    cache_dir: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    source: str = "PATH"


def _pytriton_root() -> Path | None:
    try:
        import pytriton
    except ImportError:
        return None
    root = Path(pytriton.__file__).parent / "tritonserver"
    return root if (root / "bin" / "tritonserver").is_file() else None


def _python_paths() -> list[str]:
    """The running interpreter's import path, so Python models see the same packages (torch, ...)."""
    return [p for p in sys.path if p and Path(p).is_dir()]


def _interpreter_bin() -> str:
    """The directory of this interpreter when it holds a `python3` (a venv's bin/ does), else ""."""
    exe_dir = Path(sys.executable).parent  # not resolved: a venv's python3 is a symlink out of the venv
    return str(exe_dir) if (exe_dir / "python3").exists() else ""


def locate_triton(prefer_path: bool = True) -> TritonInstall:
    """Find a runnable tritonserver: PATH first, then the nvidia-pytriton wheel's CPU build."""
    on_path = shutil.which("tritonserver")
    if on_path and prefer_path:
        return TritonInstall(binary=Path(on_path), source="PATH")
    root = _pytriton_root()
    if root is None:
        raise UserError(
            "no tritonserver found: put one on PATH (NGC tritonserver container) or install the "
            "CPU build with `pip install nvidia-pytriton` (`make setup` does)"
        )
    pyver = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / pyver / "triton_python_backend_stub"
    if not stub.is_file():
        raise UserError(f"nvidia-pytriton has no Python backend stub for Python {pyver}; use Python 3.8-3.13")
    backends = _prepare_backends(root, stub)
    libs = root.parent.parent / "nvidia_pytriton.libs"
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    ld = [p for p in (libdir, str(libs), os.environ.get("LD_LIBRARY_PATH", "")) if p]
    env = {
        "LD_LIBRARY_PATH": os.pathsep.join(ld),
        # The stub's interpreter resolves `python3` on PATH to find its environment (module docstring).
        "PATH": os.pathsep.join(p for p in (_interpreter_bin(), os.environ.get("PATH", "")) if p),
        # Kept for models emitted before the PATH mechanism: they put these first on sys.path.
        "TRITONFORGE_PYTHONPATH": os.pathsep.join(_python_paths()),
        # Python models must never reach a model hub; everything they load is local.
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    return TritonInstall(
        binary=root / "bin" / "tritonserver",
        backend_dir=backends,
        cache_dir=root / "caches",
        env=env,
        source="nvidia-pytriton",
    )


def _prepare_backends(root: Path, stub: Path) -> Path:
    """A backends dir whose python/ holds the backend library, its utils and the stub (copied once)."""
    target = cache_root() / "triton-backends" / f"py{sys.version_info.major}{sys.version_info.minor}"
    python_dir = target / "python"
    wanted = {
        "libtriton_python.so": root / "backends" / "python" / "libtriton_python.so",
        "triton_python_backend_utils.py": root / "backends" / "python" / "triton_python_backend_utils.py",
        "triton_python_backend_stub": stub,
    }
    if all(
        (python_dir / n).is_file() and (python_dir / n).stat().st_size == p.stat().st_size
        for n, p in wanted.items()
    ):
        return target
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "python").mkdir(parents=True)
    for name, src in wanted.items():
        shutil.copy2(src, tmp / "python" / name)
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(tmp, target)
    return target


LOOPBACK = "127.0.0.1"
PR_SET_PDEATHSIG = 1  # include/uapi/linux/prctl.h


def connect_host(host: str) -> str:
    """Where a client on this machine reaches a server bound to `host` (URL form)."""
    if host in ("", "0.0.0.0", "::"):
        return LOOPBACK
    return f"[{host}]" if ":" in host else host


def port_in_use(port: int, host: str = LOOPBACK) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports() -> Ports:
    return Ports(free_port(), free_port(), free_port())


def server_command(
    install: TritonInstall, repo: Path, ports: Ports, extra: list[str] | None = None, host: str = LOOPBACK
) -> list[str]:
    """tritonserver's argv; every endpoint binds `host` (Triton's own default is 0.0.0.0, every interface)."""
    cmd = [
        str(install.binary),
        f"--model-repository={repo}",
        f"--http-port={ports.http}",
        f"--grpc-port={ports.grpc}",
        f"--metrics-port={ports.metrics}",
        f"--http-address={host}",
        f"--grpc-address={host}",
        f"--metrics-address={host}",
        "--allow-metrics=true",
        "--log-verbose=0",
        "--exit-on-error=true",
        "--strict-readiness=true",
        "--exit-timeout-secs=5",
        "--cache-config=local,size=67108864",
    ]
    if install.backend_dir:
        cmd.append(f"--backend-directory={install.backend_dir}")
    if install.cache_dir:
        cmd.append(f"--cache-directory={install.cache_dir}")
    return cmd + list(extra or [])


# Parameters naming a directory the serving host must have, per the backend's docs/model_config.md
# (https://github.com/triton-inference-server/tensorrtllm_backend docs/model_config.md): `engine_dir` ("the path
# to the engine for the model", written into the `tensorrt_llm` config as `gpt_model_path`), `encoder_engine_dir`
# (`encoder_model_path`) and `tokenizer_dir` ("the path to the tokenizer for the model": preprocessing,
# postprocessing, tensorrt_llm_bls).
# A trtllm-pytorch `tensorrt_llm` model names its checkpoints inside the `llmapi_kwargs` JSON (the LLM API's
# `model` and the draft path of `speculative_config`, see builder/llmapi.py); they count as engines here.
LLMAPI_PARAMS = ("llmapi_kwargs.model", "llmapi_kwargs.speculative_config")
ENGINE_PARAMS = ("gpt_model_path", "encoder_model_path", *LLMAPI_PARAMS)
PATH_PARAMS = (*ENGINE_PARAMS, "tokenizer_dir")
# Where the container sees the repository: the launcher's /models, unless a mounted host path overlaps it.
CONTAINER_REPOS = ("/models", "/opt/tritonforge/models")
# Container paths a mount must not cover (the image's own files, Triton, the stubs' shared memory).
CONTAINER_SYSTEM = (
    "/bin",
    "/dev",
    "/etc",
    "/lib",
    "/lib64",
    "/opt/tritonserver",
    "/proc",
    "/sbin",
    "/sys",
    "/tmp",
    "/usr",
)


@dataclass(frozen=True)
class RepoPath:
    model: str
    param: str
    value: str

    @property
    def is_engine(self) -> bool:
        return self.param in ENGINE_PARAMS


def repository_paths(repo: Path) -> list[RepoPath]:
    """Every engine/tokenizer directory the repository's configs name (empty values skipped)."""
    from tritonforge.ensembles.validate import load_configs

    configs, _ = load_configs(Path(repo))
    out = []
    for name, cfg in sorted(configs.items()):
        for key in PATH_PARAMS:
            value = cfg.parameters[key].string_value if key in cfg.parameters else ""
            if value:
                out.append(RepoPath(name, key, value))
        if "llmapi_kwargs" in cfg.parameters:
            try:
                kw = json.loads(cfg.parameters["llmapi_kwargs"].string_value)
            except ValueError:
                raise UserError(
                    f"{name}: parameter llmapi_kwargs is not JSON; re-emit the repository"
                ) from None
            draft = [v for k, v in (kw.get("speculative_config") or {}).items() if k != "max_draft_len"]
            for key, value in zip(LLMAPI_PARAMS, [kw.get("model"), *draft[:1]], strict=False):
                if isinstance(value, str) and value:
                    out.append(RepoPath(name, key, value))
    return out


def _build_hint(repo: Path) -> str:
    from tritonforge.ensembles.render import read_lock

    lock = read_lock(repo) or {}
    name = lock.get("spec_name") or "NAME"
    return (
        f"run `tritonforge build SPEC -o build/{name}` then `tritonforge emit SPEC -o {repo} "
        f"--build-dir build/{name}`"
    )


def check_servable(repo: Path) -> None:
    """Refuse (one line) a repository whose TensorRT-LLM engines or tokenizers are not on this host: the
    backend would fail with "model path does not exist" minutes into loading, or in the container."""
    from tritonforge.ensembles.render import read_lock

    repo = Path(repo)
    lock = read_lock(repo) or {}
    for tier, info in sorted((lock.get("paths") or {}).items()):
        for key in (
            "engine_dir",
            "draft_engine_dir",
            "tokenizer_dir",
            "checkpoint_dir",
            "draft_checkpoint_dir",
        ):
            entry = info.get(key) if isinstance(info, dict) else None
            if isinstance(entry, dict) and entry.get("source") == "placeholder":
                raise UserError(
                    f"{repo}: tier {tier}'s {key.replace('_', ' ')} {entry.get('path')!r} was never built "
                    f"(the repository was emitted without a build); {_build_hint(repo)}"
                )
    if not lock:
        fix = "point it at a directory on this host (or build the engine there)"
    elif lock.get("paths"):
        fix = _build_hint(repo)
    else:  # CPU tiers only (or a lock older than "paths"): checkpoints of the host that emitted it
        fix = f"re-run `tritonforge emit SPEC -o {repo}` on this host"
    for rp in sorted(repository_paths(repo), key=lambda r: not r.is_engine):  # engines first: the root cause
        if not rp.value.startswith("/"):
            if rp.is_engine:
                raise UserError(
                    f"{rp.model}: {rp.param} {rp.value!r} is not an absolute path, so no server finds it; "
                    f"{fix}"
                )
            continue  # a relative tokenizer_dir may be a model-hub name: the model's own business
        if not Path(rp.value).is_dir():
            what = "checkpoint" if rp.param in LLMAPI_PARAMS else "engine" if rp.is_engine else "tokenizer"
            raise UserError(
                f"{rp.model}: {rp.param} {rp.value!r} does not exist on this host, so the {what} cannot "
                f"be loaded or mounted; {fix}"
            )


def repository_mounts(repo: Path) -> list[str]:
    """Host directories (absolute, existing) the repository names: engines and tokenizers."""
    return sorted(
        {rp.value for rp in repository_paths(repo) if rp.value.startswith("/") and Path(rp.value).is_dir()}
    )


def _overlaps(a: str, b: str) -> bool:
    pa, pb = Path(a), Path(b)
    return pa == pb or pa in pb.parents or pb in pa.parents


def plan_mounts(mounts: list[str]) -> tuple[str, list[str]]:
    """(container path of the repository, host paths to mount at the same path inside): duplicates and
    paths inside another mounted path dropped, so no two `-v` targets are equal or nested."""
    norm = sorted({os.path.normpath(m) for m in mounts})
    for m in norm:
        if not m.startswith("/"):
            raise UserError(
                f"cannot mount {m!r} into the container: not an absolute path; use an absolute path"
            )
        hit = next((c for c in CONTAINER_SYSTEM if Path(m) == Path(c) or Path(m) in Path(c).parents), None)
        if m == "/" or hit:
            raise UserError(
                f"cannot mount {m} into the container at the same path: it would hide the image's {hit or '/'}; "
                f"move the engine/tokenizer directory elsewhere (e.g. /data/...) and re-emit"
            )
    kept = [m for m in norm if not any(o != m and Path(o) in Path(m).parents for o in norm)]
    repo_at = next((c for c in CONTAINER_REPOS if not any(_overlaps(c, m) for m in kept)), None)
    if repo_at is None:
        raise UserError(
            f"engine/tokenizer directories overlap every container path for the repository "
            f"({', '.join(CONTAINER_REPOS)}); move them elsewhere (e.g. /data/...) and re-emit"
        )
    return repo_at, kept


def docker_command(
    image: str,
    repo: Path,
    ports: Ports,
    shm_size: str = "2g",
    gpus: str | None = None,
    mounts: list[str] | None = None,
    publish_host: str | None = None,
) -> list[str]:
    """The NGC container command that serves `repo` on a GPU host; `mounts` appear at the same path inside.

    Inside, the TensorRT-LLM backend's own launch (MPI leader or orchestrator mode): `builder.launch`.
    Every mount is read-only and at its own container path (`plan_mounts`); the repository is at /models
    unless an engine or tokenizer directory overlaps that. With `publish_host` the ports are published on
    that host address only (`-p 127.0.0.1:8000:8000`); inside the container Triton keeps binding 0.0.0.0,
    which Docker's port forwarding needs.
    """
    from tritonforge.builder import versions
    from tritonforge.builder.launch import engine_models, launch_command, llmapi_models
    from tritonforge.ensembles.validate import load_configs

    at = f"{publish_host}:" if publish_host else ""
    repo_at, kept = plan_mounts(list(mounts or []))
    configs, _ = load_configs(Path(repo))
    release = versions.container_release(image) or versions.TRITON_CONTAINER
    launch = launch_command(
        engine_models(configs), model_repo=repo_at, triton_release=release, llmapi=llmapi_models(configs)
    )
    extra: list[str] = []
    for m in kept:
        extra += ["-v", f"{m}:{m}:ro"]
    for name in secret_env_names(Path(repo)):
        extra += ["-e", name]  # by name only: docker copies the value from this environment
    return [
        "docker",
        "run",
        "--rm",
        "-it",
        f"--gpus={gpus or launch.docker_gpus()}",
        f"--shm-size={shm_size}",
        "--ulimit",
        "memlock=-1",
        "--ulimit",
        "stack=67108864",
        "-p",
        f"{at}{ports.http}:8000",
        "-p",
        f"{at}{ports.grpc}:8001",
        "-p",
        f"{at}{ports.metrics}:8002",
        "-v",
        f"{Path(repo).resolve()}:{repo_at}:ro",
        *extra,
        *launch.docker_env(),
        image,
        *launch.argv,
    ]


def secret_env_names(repo: Path) -> list[str]:
    """Environment variables the repository's `llm` model reads secrets from (remote tiers' API keys, the
    cache's HMAC key), named in the spec its lock records."""
    from tritonforge.ensembles.render import read_lock

    spec = (read_lock(repo) or {}).get("spec") or {}
    names = [r.get("api_key_env") for r in (spec.get("router") or {}).get("remote") or []]
    names.append((spec.get("cache") or {}).get("hmac_key_env"))
    return sorted({n for n in names if isinstance(n, str) and n})


DOCKERFILE = "Dockerfile"


def deployment_image(repo: Path, image: str) -> tuple[str, list[str]] | None:
    """(tag, `docker build` argv) of the repository's own Dockerfile (IMAGE plus what its Python models
    import), or None when the repository has none (hand-written, or emitted before tritonforge wrote one)."""
    from tritonforge.ensembles.render import read_lock

    repo = Path(repo)
    dockerfile = repo / DOCKERFILE
    if not dockerfile.is_file():
        return None
    base = next(
        (
            ln.split()[1]
            for ln in dockerfile.read_text(errors="replace").splitlines()
            if ln.upper().startswith("FROM ") and len(ln.split()) > 1
        ),
        None,
    )
    if base != image:
        raise UserError(
            f"{dockerfile} builds on {base} but --docker names {image}; pass --docker {base}, "
            f"set triton.image: {image} in the spec and re-emit, or pass --no-build to run {image} as given"
        )
    lock = read_lock(repo) or {}
    name = (
        re.sub(r"[^a-z0-9_.-]", "-", str(lock.get("spec_name") or repo.resolve().name).lower()).strip("-._")
        or "repo"
    )
    digest = str(lock.get("spec_hash") or "")[:12] or "latest"
    tag = f"tritonforge/{name}:{digest}"
    return tag, ["docker", "build", "--target", "serve", "-t", tag, str(repo.resolve())]


def _death_signal(sig: int) -> Callable[[], None] | None:
    """A preexec function that makes the child get `sig` when its parent dies (prctl(2),
    https://man7.org/linux/man-pages/man2/prctl.2.html, PR_SET_PDEATHSIG); None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before the fork, not in the child
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec


# The kernel's 15-character name (comm) of the Python backend's `triton_python_backend_stub` processes.
STUB_COMM = "triton_python_b"


def _stat(pid: int) -> tuple[str, str, int] | None:
    """(comm, state letter, parent pid) of a process from /proc/<pid>/stat (proc(5)); None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    return comm, fields[0], int(fields[1])


def _stub_argvs(server_pid: int) -> dict[int, list[str]]:
    """pid -> argv of the live (not exited) Python stubs `server_pid` started; {} off Linux."""
    out: dict[int, list[str]] = {}
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return out
    for pid in pids:
        st = _stat(pid)
        if st is None or st[0] != STUB_COMM or st[2] != server_pid or st[1] == "Z":
            continue
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        out[pid] = [a.decode(errors="replace") for a in raw.split(b"\0")]
    return out


def stub_processes(server_pid: int) -> dict[int, str]:
    """pid -> model instance name (e.g. `tensorrt_llm_0_0`) of the live Python stubs `server_pid` started.

    The stub's argv (python_backend src/stub_launcher.cc, https://github.com/triton-inference-server/
    python_backend): model path, shm region, shm sizes, parent pid, backend dir, IPC handle, then the
    instance name."""
    return {pid: argv[8] if len(argv) > 8 else "?" for pid, argv in _stub_argvs(server_pid).items()}


# The shared-memory region of one stub: the Python backend's default prefix plus a UUID (python_backend
# src/stub_launcher.cc, `shared_memory_region_prefix + GenerateUUID()`); the launcher creates it under /dev/shm
# and removes it when the model unloads, so a server that exits without unloading (its exit timeout expired
# while requests hung, or a kill) leaves it behind, holding memory.
SHM_DIR = Path("/dev/shm")
SHM_REGION = re.compile(r"triton_python_backend_shm_region_[0-9a-f-]{36}")


def _regions(argvs: dict[int, list[str]]) -> set[str]:
    return {argv[2] for argv in argvs.values() if len(argv) > 2 and SHM_REGION.fullmatch(argv[2])}


class TritonServer:
    """A tritonserver process over one model repository; a context manager that always cleans up."""

    def __init__(
        self,
        repo: str | Path,
        ports: Ports | None = None,
        install: TritonInstall | None = None,
        log_path: Path | None = None,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        host: str = LOOPBACK,
        die_with_parent: bool = True,
    ) -> None:
        """`host`: the address every endpoint binds (0.0.0.0 only where other machines must reach it).
        `die_with_parent`: the server gets SIGTERM when the thread that started it ends, even by SIGKILL
        (Linux), so a killed `tritonforge serve` or test run leaves no orphan; start it from a thread that
        lives as long as the server should, or pass False."""
        self.repo = Path(repo).resolve()
        self.ports = ports or Ports()
        self.install = install or locate_triton()
        self.log_path = log_path
        self.extra_args = extra_args or []
        self.extra_env = env or {}
        self.host = host
        self.die_with_parent = die_with_parent
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._stubs: dict[int, str] = {}
        self._shm_regions: set[str] = set()  # of this server's stubs, removed by stop() if left behind

    @property
    def http_url(self) -> str:
        return f"http://{connect_host(self.host)}:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"{connect_host(self.host)}:{self.ports.grpc}"

    @property
    def metrics_url(self) -> str:
        return f"http://{connect_host(self.host)}:{self.ports.metrics}/metrics"

    def start(self) -> None:
        if not (self.repo / "").is_dir():
            raise UserError(
                f"model repository {str(self.repo)!r} does not exist; run `tritonforge emit SPEC -o DIR` first"
            )
        for name, port in zip(("http", "grpc", "metrics"), self.ports.all(), strict=True):
            if port_in_use(port, self.host or "0.0.0.0"):
                raise UserError(
                    f"port {port} ({name}) is already in use; stop what holds it or pass --{name}-port"
                )
        env = {**os.environ, **self.install.env, **self.extra_env}
        if self.log_path is None:
            self.log_path = (
                Path(os.environ.get("TMPDIR", "/tmp")) / f"tritonforge-triton-{self.ports.http}.log"
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        cmd = server_command(self.install, self.repo, self.ports, self.extra_args, host=self.host)
        preexec = _death_signal(signal.SIGTERM) if self.die_with_parent else None
        # A new session: on stop we signal the whole group, so no Python stub is orphaned.
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=preexec,
        )

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace") if self.log_path else ""
        except OSError:
            return ""

    def model_states(self) -> list[dict[str, str]]:
        """name/version/state/reason of every model in the repository index."""
        req = urllib.request.Request(f"{self.http_url}/v2/repository/index", data=b"{}", method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310
            return json.loads(r.read())

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=1) as r:  # noqa: S310
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float = 120.0, on_progress: Callable[[str], None] | None = None) -> float:
        """Wait until the server and all its models are ready; return seconds taken."""
        t0 = time.monotonic()
        last = ""
        while time.monotonic() - t0 < timeout:
            if self.proc is None or self.proc.poll() is not None:
                raise UserError(f"tritonserver exited while loading: {self.failure_summary()}")
            if self.is_ready():
                self.watch_stubs()
                return time.monotonic() - t0
            if on_progress is not None:
                try:
                    states = self.model_states()
                    line = ", ".join(f"{m['name']}:{m.get('state', '?')}" for m in states)
                except (urllib.error.URLError, OSError, ValueError):
                    line = "starting"
                if line != last:
                    on_progress(line)
                    last = line
            time.sleep(0.25)
        summary = self.failure_summary()
        self.stop()
        raise UserError(f"tritonserver not ready after {timeout:.0f}s: {summary}")

    def watch_stubs(self) -> dict[int, str]:
        """Remember this server's Python stubs (wait_ready does, once all models are ready; call again after
        loading a model); returns pid -> instance name."""
        argvs = _stub_argvs(self.proc.pid) if self.proc is not None else {}
        self._stubs = {pid: argv[8] if len(argv) > 8 else "?" for pid, argv in argvs.items()}
        self._shm_regions |= _regions(argvs)
        return dict(self._stubs)

    def dead_stubs(self) -> list[str]:
        """Instances whose stub (seen by `watch_stubs`) has exited, e.g. crashed. Triton 2.51 does not restart
        a dead stub (python_backend src/python_be.cc, r24.10: "TODO: Implement restart on decoupled"), its
        decoupled requests in flight never end, and /v2/health/ready stays 200 (the stub check behind model
        readiness, TRITONBACKEND_ModelInstanceReady, came in r25.12), so only this tells. A model unloaded
        on purpose (explicit model control) shows up here too."""
        if not self._stubs or self.proc is None:
            return []
        alive = stub_processes(self.proc.pid)
        return sorted(name for pid, name in self._stubs.items() if pid not in alive)

    def failure_summary(self) -> str:
        """The most telling error lines of the server log, as one line."""
        lines = [ln.strip() for ln in self.log_text().splitlines() if ln.strip()]
        noise = ("NVML", "DCGM", "failed to load all models")  # CPU-only hosts always print these
        interesting = [
            ln
            for ln in lines
            if (
                re.match(r"^E\d{4} ", ln)
                or any(k in ln for k in ("UNAVAILABLE", "Address already in use", "Traceback", "error:"))
            )
            and not any(n in ln for n in noise)
        ]
        picked = interesting[-3:] if interesting else lines[-2:]
        text = " | ".join(picked) or "no log output"
        return f"{text} (full log: {self.log_path})"

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the server's process group (stubs included), then SIGKILL what is left; then remove the
        shared-memory regions of its stubs that it left behind."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._shm_regions |= _regions(_stub_argvs(self.proc.pid))
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=5)
        for name in sorted(self._shm_regions):
            (SHM_DIR / name).unlink(missing_ok=True)
        self._shm_regions = set()
        if self._log_file:
            self._log_file.close()
            self._log_file = None
        self.proc = None

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def repository_launch(repo: Path, image: str | None = None) -> Launch:
    """`launch_command` for a model repository on disk, served by the NGC `image` (its tag gives the
    Triton release; an image without a yy.mm tag is taken as the targeted release)."""
    from tritonforge.builder.launch import engine_models, launch_command, llmapi_models
    from tritonforge.ensembles.validate import load_configs

    configs, _ = load_configs(Path(repo))
    release = (versions.container_release(image) if image else None) or versions.TRITON_CONTAINER
    return launch_command(engine_models(configs), triton_release=release, llmapi=llmapi_models(configs))
