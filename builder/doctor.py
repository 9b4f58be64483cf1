"""`tritonforge doctor`: is this host ready to build and serve a spec on GPUs? One line per check.

Checks: the NVIDIA driver and its GPUs (nvidia-smi), each GPU tier of the spec re-planned on the GPUs it
would get here (compute capability and free memory through the planner and `builder.rules`, so FP8 /
NVFP4 / INT4 support and fit are judged by the same rules as `plan`), MPI where the launch uses mpirun,
/dev/shm, the Python client packages and, with `--docker IMAGE`, Docker, the image and the TensorRT-LLM /
ModelOpt / Triton versions inside it.

Every external command goes through an injectable `Runner`, so tests can feed recorded outputs of tools
that cannot run on a CPU-only machine. The nvidia-smi query and its CSV format are NVIDIA's: fields from
`nvidia-smi --help-query-gpu` ("name", "compute_cap", "memory.total", "memory.used", "driver_version";
a copy of that list: https://gist.github.com/Jaid/5e3b3bf4234078a1828fbfa9338c1514), `--format=csv,noheader`
from the nvidia-smi(1) manual (https://man.archlinux.org/man/nvidia-smi.1.en): one line per GPU, values
separated by ", ", memory as "81559 MiB".
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tritonforge.builder import versions
from tritonforge.errors import UserError

OK, WARN, FAIL = "ok", "warn", "fail"
MIB = 1024**2
GIB = 1024**3
SMI_QUERY = [
    "nvidia-smi",
    "--query-gpu=name,compute_cap,memory.total,memory.used,driver_version",
    "--format=csv,noheader",
]
# The TensorRT-LLM backend's documented container start uses --shm-size=2g (tensorrtllm_backend
# README.md, "docker run --rm -it --net host --shm-size=2g --ulimit memlock=-1 ..."); `serve --docker`
# passes the same. A local server's Python models need the host's /dev/shm to hold their regions.
DEFAULT_SHM = "2g"
# Imported by the host-side clients of tritonforge (generate, loadtest, smoke).
CLIENT_MODULES = ("tritonclient.grpc", "tritonclient.http", "grpc", "requests", "numpy", "locust")
# Printed inside the container: package versions by metadata (nothing heavy imported; no GPU needed),
# the Triton release from the image's environment (Triton's build.py sets TRITON_SERVER_VERSION and
# NVIDIA_TRITON_SERVER_VERSION in every image, https://github.com/triton-inference-server/server build.py),
# and the MPI launcher's first line.
CONTAINER_PROBE = r"""
import json, os, subprocess
from importlib import metadata
def v(*names):
    for n in names:
        try:
            return metadata.version(n)
        except Exception:
            pass
    return None
try:
    mpi = subprocess.run(["mpirun", "--version"], capture_output=True, text=True, timeout=30).stdout.strip().splitlines()
    mpi = mpi[0] if mpi else None
except Exception:
    mpi = None
print(json.dumps({"tensorrt_llm": v("tensorrt_llm", "tensorrt-llm"), "modelopt": v("nvidia-modelopt"),
                  "triton": os.environ.get("TRITON_SERVER_VERSION"),
                  "triton_container": os.environ.get("NVIDIA_TRITON_SERVER_VERSION"),
                  "torch": v("torch"), "mpirun": mpi}))
"""

# Run with --gpus all: does CUDA start inside the image on this driver? torch is part of the TensorRT-LLM
# images; torch.cuda.is_available() warns with the reason (e.g. "The NVIDIA driver on your system is too old").
CUDA_PROBE = r"""
import json, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    try:
        import torch
        ok = torch.cuda.is_available()
        out = {"cuda": ok, "cuda_runtime": torch.version.cuda, "devices": torch.cuda.device_count() if ok else 0}
        if ok:
            out["capability"] = list(torch.cuda.get_device_capability(0))
    except Exception as e:
        out = {"cuda": False, "error": type(e).__name__ + ": " + str(e)}
out["warnings"] = [str(w.message) for w in caught][:3]
print(json.dumps(out))
"""


@dataclass(frozen=True)
class CmdResult:
    """What a command did: exit code (127: not on PATH, 124: timed out), stdout, stderr."""

    rc: int
    out: str = ""
    err: str = ""

    @property
    def found(self) -> bool:
        return self.rc != 127

    def first_error_line(self) -> str:
        for text in (self.err, self.out):
            for line in text.splitlines():
                if line.strip():
                    return line.strip()[:240]
        return f"exit code {self.rc}"


Runner = Callable[[Sequence[str], float], CmdResult]


def run_command(argv: Sequence[str], timeout: float = 30.0) -> CmdResult:
    """Run `argv` for real; a missing program is rc 127, a timeout rc 124 (as the shell reports them)."""
    if shutil.which(argv[0]) is None:
        return CmdResult(127, "", f"{argv[0]}: command not found")
    try:
        p = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        return CmdResult(124, "", f"{argv[0]} did not answer within {timeout:g}s")
    except OSError as exc:
        return CmdResult(126, "", f"{argv[0]}: {exc.strerror or exc}")
    return CmdResult(p.returncode, p.stdout, p.stderr)


def shm_size(path: str = "/dev/shm") -> tuple[int, int] | None:
    """(total, free) bytes of the shared-memory mount, None when there is none."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


@dataclass
class Host:
    """What the checks read from the machine; every part can be replaced in tests."""

    run: Runner = run_command
    shm: Callable[[], tuple[int, int] | None] = shm_size
    has_module: Callable[[str], bool] = lambda name: _find_spec(name)


def _find_spec(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@dataclass
class Check:
    """One finding. `fail` with `blocker` makes doctor exit 1."""

    name: str
    status: str
    message: str
    fix: str = ""
    blocker: bool = True
    details: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        fix = f"; fix: {self.fix}" if self.fix and self.status != OK else ""
        return f"{self.status.upper():<4}  {self.name:<18} {self.message}{fix}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------- GPUs


@dataclass(frozen=True)
class Gpu:
    """One GPU as nvidia-smi reports it."""

    index: int
    name: str
    sm: int | None  # compute capability x 10 (9.0 -> 90); None when the driver cannot say
    memory_total_mib: int | None
    memory_used_mib: int | None
    driver: str | None

    @property
    def free_bytes(self) -> int | None:
        if self.memory_total_mib is None or self.memory_used_mib is None:
            return None
        return (self.memory_total_mib - self.memory_used_mib) * MIB

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["compute_cap"] = f"{self.sm // 10}.{self.sm % 10}" if self.sm is not None else None
        return d


def _mib(value: str) -> int | None:
    parts = value.split()
    return int(parts[0]) if parts and parts[0].isdigit() else None


def _sm(value: str) -> int | None:
    major, _, minor = value.strip().partition(".")
    return int(major) * 10 + int(minor or 0) if major.isdigit() and (minor or "0").isdigit() else None


def parse_smi(out: str) -> list[Gpu]:
    """Rows of `SMI_QUERY` output ("NVIDIA H100 80GB HBM3, 9.0, 81559 MiB, 0 MiB, 550.54.15")."""
    gpus = []
    for i, line in enumerate(ln for ln in out.splitlines() if ln.strip()):
        cells = [c.strip() for c in line.split(",")]
        if len(cells) < 5:
            raise ValueError(f"unexpected nvidia-smi line {line!r}")
        name, cap, total, used, driver = cells[0], cells[1], cells[2], cells[3], cells[4]
        gpus.append(Gpu(i, name, _sm(cap), _mib(total), _mib(used), driver or None))
    return gpus


def catalog_gpu(name: str):
    """The planner's catalog entry for an nvidia-smi product name ("NVIDIA H100 80GB HBM3" -> H100-SXM),
    matched on the longest known name or alias the product name starts with; None when unknown."""
    from tritonforge.builder import gpus as catalog

    key = catalog._key(name.removeprefix("NVIDIA").strip())
    names = {**{catalog._key(n): n for n in catalog.CATALOG}, **catalog.ALIASES}
    best = max((k for k in names if key.startswith(k)), key=len, default=None)
    return catalog.CATALOG[names[best]] if best else None


def query_gpus(host: Host) -> tuple[list[Gpu], Check]:
    """The GPUs nvidia-smi lists, with the driver check."""
    r = host.run(SMI_QUERY, 30.0)
    if not r.found:
        return [], Check(
            "driver",
            FAIL,
            "no NVIDIA driver: nvidia-smi not found",
            "run on a host with an NVIDIA GPU and its driver (nvidia-smi on PATH)",
        )
    if r.rc != 0:
        return [], Check(
            "driver",
            FAIL,
            f"nvidia-smi failed: {r.first_error_line()}",
            "install or reload the NVIDIA driver (nvidia-smi must list the GPUs)",
        )
    try:
        found = parse_smi(r.out)
    except ValueError as exc:
        return [], Check(
            "driver", FAIL, f"cannot read nvidia-smi's output: {exc}", "update the NVIDIA driver"
        )
    if not found:
        return [], Check(
            "driver", FAIL, "nvidia-smi lists no GPU", "check the GPUs are visible (CUDA_VISIBLE_DEVICES)"
        )
    return found, Check(
        "driver",
        OK,
        f"NVIDIA driver {found[0].driver}, {len(found)} GPU(s)",
        details={"driver": found[0].driver},
    )


def gpu_checks(found: list[Gpu]) -> list[Check]:
    out = []
    for g in found:
        cat = catalog_gpu(g.name)
        mem = f"{g.memory_total_mib / 1024:.1f} GiB" if g.memory_total_mib else "memory unknown"
        cap = f"sm{g.sm}" if g.sm is not None else "compute capability unknown"
        status, fix = OK, ""
        if g.sm is None:
            status, fix = WARN, "update the NVIDIA driver (its nvidia-smi cannot report compute_cap)"
        out.append(
            Check(
                f"gpu {g.index}",
                status,
                f"{g.name} ({cap}, {mem}; planner catalog: {cat.name if cat else 'not listed'})",
                fix,
                details=g.to_dict(),
            )
        )
    return out


# ------------------------------------------------------------------------------------------ spec


def host_gpu_spec(tier_gpu: str, gpus: Sequence[Gpu]):
    """The planner's GpuSpec for the GPUs a tier gets here: the catalog entry of their model (else the
    spec's), with this host's compute capability, name and the *free* memory of the fullest GPU."""
    from tritonforge.builder.gpus import get_gpu

    base = catalog_gpu(gpus[0].name) or get_gpu(tier_gpu)
    sms = [g.sm for g in gpus if g.sm is not None]
    free = [g.free_bytes for g in gpus if g.free_bytes is not None]
    changes: dict[str, Any] = {"name": gpus[0].name}
    if sms:
        changes["sm"] = min(sms)
    if free:
        changes["memory_mib"] = min(free) // MIB
    return dataclasses.replace(base, **changes)


def spec_checks(spec: Any, found: list[Gpu]) -> list[Check]:
    """Each GPU tier planned again on the GPUs it gets here; `builder.rules` judges precision and fit."""
    from tritonforge.builder import rules
    from tritonforge.builder.gpus import get_gpu
    from tritonforge.builder.launch import parse_gpu_device_ids, place_tiers
    from tritonforge.builder.modelref import resolve_model
    from tritonforge.builder.planner import plan_tier, runtime_is_gpu

    engine_tiers = [t for t in spec.tiers if runtime_is_gpu(t)]
    if not engine_tiers:
        return [Check("spec", OK, f"{spec.name}: no GPU tier (cpu-reference only); GPU checks not needed")]
    if not found:
        return [
            Check(
                "spec",
                FAIL,
                f"{spec.name}: {len(engine_tiers)} GPU tier(s) but no GPU on this host",
                "run on the GPU host the spec is for",
            )
        ]
    try:
        placement = place_tiers(spec)
    except UserError as exc:
        return [Check("spec", FAIL, str(exc))]
    out = []
    for tier in engine_tiers:
        placed = placement.get(tier.name)  # GPU tiers launched another way: their first tp x pp GPUs
        ids = (
            sorted({g for inst in parse_gpu_device_ids(placed) for g in inst})
            if placed
            else list(range(tier.parallelism.tp * tier.parallelism.pp))
        )
        name = f"tier {tier.name}"
        missing = [i for i in ids if i >= len(found)]
        if missing:
            out.append(
                Check(
                    name,
                    FAIL,
                    f"needs GPU(s) {','.join(map(str, ids))} (tp x pp x instances) but this "
                    f"host has {len(found)}",
                    f"use a host with {max(ids) + 1} GPUs or lower parallelism / gpu.count",
                )
            )
            continue
        here = [found[i] for i in ids]
        try:
            target = resolve_model(tier.model)
            draft = resolve_model(tier.draft.model) if tier.draft else None
            gpu = host_gpu_spec(tier.gpu.type, here)
            plan = plan_tier(tier, target.config, gpu, draft_config=draft.config if draft else None)
        except UserError as exc:
            out.append(Check(name, FAIL, str(exc)))
            continue
        problems = rules.check_tier(tier, plan, draft.config if draft else None, target.config)
        errors = [p for p in problems if p.severity == "error"]
        q = tier.quantization
        if not errors:
            out.append(
                Check(
                    name,
                    OK,
                    f"{q.format.value} weights, KV {q.kv_cache_dtype.value}, tp {tier.parallelism.tp} "
                    f"pp {tier.parallelism.pp} on sm{gpu.sm} ({here[0].name}): passes the plan's rules",
                )
            )
        for p in errors:
            out.append(
                Check(name, FAIL, p.message.removeprefix(f"tier {tier.name}: "), details={"rule": p.rule})
            )
        planned_for = catalog_gpu(here[0].name)
        if planned_for is None or planned_for.name != get_gpu(tier.gpu.type).name:
            out.append(
                Check(
                    name,
                    WARN,
                    f"spec plans for gpu.type {tier.gpu.type}, this host has {here[0].name}",
                    "set gpu.type to this GPU so plan's capacity and cost figures are for it",
                    blocker=False,
                )
            )
        m = plan.memory
        need = (
            m.weights
            + m.activations
            + m.other_engine
            + m.blocks_per_sequence * m.tokens_per_block * m.kv_bytes_per_token
        )
        free_here = ", ".join(
            f"GPU {g.index} {g.free_bytes / GIB:.1f} GiB" for g in here if g.free_bytes is not None
        )
        if m.fits:
            out.append(
                Check(
                    f"{name} memory",
                    OK,
                    f"needs >= {need / GIB:.2f} GiB per GPU (weights {m.weights / GIB:.2f}, activations "
                    f"{m.activations / GIB:.2f}, KV of one {plan.engine.engine_max_seq_len}-token sequence); "
                    f"free: {free_here}; KV pool here ~{m.kv_pool_tokens:,} tokens",
                    details={"need_bytes": need, "kv_pool_tokens": m.kv_pool_tokens},
                )
            )
        elif not any(p.rule == "must-fit" for p in errors):
            out.append(
                Check(
                    f"{name} memory",
                    FAIL,
                    f"needs {need / GIB:.2f} GiB per GPU; free: {free_here}",
                    "free the GPUs (other processes hold memory) or lower limits / use a smaller format",
                )
            )
        busy = [g for g in here if (g.memory_used_mib or 0) * MIB > GIB]
        if busy:
            out.append(
                Check(
                    f"{name} memory",
                    WARN,
                    "other processes hold "
                    + ", ".join(f"{(g.memory_used_mib or 0) / 1024:.1f} GiB on GPU {g.index}" for g in busy)
                    + "; the KV pool is a fraction of what is free when the engine loads",
                    "stop them before serving for the planned capacity",
                    blocker=False,
                )
            )
    return out


def mpi_needed(spec: Any | None) -> str | None:
    """Why the launch needs mpirun (None when it does not): `builder.launch` starts every repository with a
    TensorRT-LLM model through mpirun, leader mode (one rank per TP x PP) or orchestrator mode."""
    if spec is None:
        return None
    from tritonforge.builder.spec import Runtime

    tiers = [t for t in spec.tiers if t.runtime == Runtime.trtllm_engine]
    if not tiers:
        if any(t.runtime == Runtime.trtllm_pytorch for t in spec.tiers):
            # launch.py: a PyTorch-backend-only repository runs one rank; the LLM API spawns its TP x PP workers
            return "the launch runs tritonserver under mpirun (one rank; the LLM API spawns its own workers)"
        return None
    worlds = [t.parallelism.tp * t.parallelism.pp for t in tiers]
    return f"the launch runs tritonserver under mpirun ({'TP x PP ' + str(max(worlds)) if max(worlds) > 1 else 'one rank'})"


# ----------------------------------------------------------------------------------- container


def container_checks(image: str, host: Host, trtllm_target: str) -> tuple[list[Check], dict[str, Any]]:
    """Docker, the image, GPU access inside it and the versions it ships."""
    info: dict[str, Any] = {"image": image}
    r = host.run(["docker", "--version"], 20.0)
    if not r.found:
        return [
            Check(
                "docker", FAIL, "docker not found", "install Docker Engine and the NVIDIA Container Toolkit"
            )
        ], info
    r = host.run(["docker", "info", "--format", "{{.ServerVersion}}"], 30.0)
    if r.rc != 0:
        return [
            Check(
                "docker",
                FAIL,
                f"Docker engine not reachable: {r.first_error_line()}",
                "start the Docker daemon (and let this user use it)",
            )
        ], info
    out = [Check("docker", OK, f"Docker engine {r.out.strip()}")]
    info["docker"] = r.out.strip()
    r = host.run(["docker", "image", "inspect", "--format", "{{.Id}}", image], 60.0)
    if r.rc != 0:
        out.append(
            Check(
                "image",
                FAIL,
                f"{image} is not present locally ({r.first_error_line()})",
                f"docker pull {image}",
            )
        )
        return out, info
    info["image_id"] = r.out.strip()
    out.append(Check("image", OK, f"{image} ({r.out.strip()[:19]})"))
    r = host.run(["docker", "run", "--rm", "--entrypoint", "python3", image, "-c", CONTAINER_PROBE], 180.0)
    try:
        probe = json.loads(r.out.strip().splitlines()[-1]) if r.rc == 0 else None
    except (ValueError, IndexError):
        probe = None
    if probe is None:
        out.append(
            Check(
                "container",
                FAIL,
                f"cannot read versions inside {image}: {r.first_error_line()}",
                "use an NGC tritonserver:<yy.mm>-trtllm-python-py3 image",
            )
        )
        return out, info
    info.update(probe)
    shipped = probe.get("tensorrt_llm")
    if not shipped:
        out.append(
            Check("tensorrt-llm", FAIL, f"{image} has no TensorRT-LLM", f"use {versions.TRITON_IMAGE}")
        )
    else:
        same = versions._release_of(shipped) == versions._release_of(trtllm_target)
        out.append(
            Check(
                "tensorrt-llm",
                OK if same else FAIL,
                f"{shipped} in the image, target {trtllm_target}",
                ""
                if same
                else (
                    f"engines only load in the version that built them: use an image with "
                    f"{trtllm_target} ({', '.join(versions.images_for(trtllm_target)[:1]) or '?'})"
                    f" or set triton.trtllm_version: {shipped}"
                ),
            )
        )
    mo = probe.get("modelopt")
    mo_ok = bool(mo) and mo.startswith(versions.MODELOPT_VERSION)
    out.append(
        Check(
            "modelopt",
            OK if mo_ok else WARN,
            f"{mo or 'not installed'} in the image (TensorRT-LLM "
            f"{versions.TRTLLM_VERSION} pins {versions.MODELOPT_REQUIREMENT})",
            "" if mo_ok else "quantize with the ModelOpt the targeted TensorRT-LLM pins",
            blocker=False,
        )
    )
    out.append(
        Check(
            "triton",
            OK if probe.get("triton") else WARN,
            f"Triton {probe.get('triton') or 'version unknown'} (container {probe.get('triton_container') or '?'})",
            "" if probe.get("triton") else "use an NGC tritonserver image",
            blocker=False,
        )
    )
    r = host.run(
        ["docker", "run", "--rm", "--gpus", "all", "--entrypoint", "python3", image, "-c", CUDA_PROBE], 300.0
    )
    try:
        cuda = json.loads(r.out.strip().splitlines()[-1]) if r.rc == 0 else None
    except (ValueError, IndexError):
        cuda = None
    if cuda is None:
        out.append(
            Check(
                "container gpus",
                FAIL,
                f"no GPU inside the container: {r.first_error_line()}",
                "install the NVIDIA Container Toolkit and restart Docker (docker run --gpus all must work)",
            )
        )
    elif not cuda.get("cuda"):
        why = (cuda.get("warnings") or [cuda.get("error") or "torch.cuda.is_available() is False"])[0]
        out.append(
            Check(
                "container gpus",
                FAIL,
                f"CUDA does not start inside the container: {' '.join(str(why).split())[:240]}",
                f"install a driver the image's CUDA {cuda.get('cuda_runtime') or ''} supports (its release "
                f"notes, Driver Requirements)",
            )
        )
    else:
        cap = cuda.get("capability") or []
        info["cuda_runtime"] = cuda.get("cuda_runtime")
        out.append(
            Check(
                "container gpus",
                OK,
                f"CUDA {cuda.get('cuda_runtime')} starts inside the container: "
                f"{cuda.get('devices')} GPU(s)" + (f", sm{cap[0]}{cap[1]}" if len(cap) == 2 else ""),
            )
        )
    return out, info


def mpi_check(reason: str | None, container: dict[str, Any] | None, host: Host) -> Check:
    """MPI where the launch needs it: inside the container with --docker, else on this host."""
    where = "in the image" if container is not None else "on this host"
    if container is not None:
        line = container.get("mpirun")
    else:
        r = host.run(["mpirun", "--version"], 30.0)
        line = r.out.strip().splitlines()[0] if r.rc == 0 and r.out.strip() else None
    if line:
        return Check("mpi", OK, f"{line} {where}")
    if reason is None:
        return Check(
            "mpi",
            WARN,
            f"mpirun not found {where}; needed only to serve TensorRT-LLM engines",
            "install Open MPI or serve with --docker (the NGC image has it)",
            blocker=False,
        )
    return Check(
        "mpi",
        FAIL,
        f"mpirun not found {where}; {reason}",
        "serve in the NGC TensorRT-LLM container (--docker IMAGE), which ships Open MPI",
    )


def parse_size(text: str) -> int:
    """Docker-style size ("2g", "512m", "1024k", "67108864") in bytes."""
    t = text.strip().lower().removesuffix("b")
    units = {"k": 1024, "m": MIB, "g": GIB, "t": 1024 * GIB}
    try:
        return int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)
    except ValueError:
        raise UserError(f"size {text!r} is not like 2g, 512m or a byte count; fix triton.shm_size") from None


def shm_check(spec: Any | None, image: str | None, host: Host) -> Check:
    want_text = getattr(getattr(spec, "triton", None), "shm_size", None) or DEFAULT_SHM
    want = parse_size(want_text)
    if image:
        return Check(
            "shm",
            OK,
            f"the container gets --shm-size {DEFAULT_SHM} from serve --docker "
            f"(the backend's documented docker run uses 2g)",
        )
    size = host.shm()
    if size is None:
        return Check(
            "shm",
            WARN,
            "no /dev/shm on this host; the Python backend keeps its tensors there",
            "mount a tmpfs at /dev/shm",
            blocker=False,
        )
    total, free = size
    if total < want:
        return Check(
            "shm",
            WARN,
            f"/dev/shm is {total / MIB:.0f} MiB, below {want_text} (triton.shm_size)",
            "in a container, start it with --shm-size=2g; else remount /dev/shm larger",
            blocker=False,
        )
    return Check("shm", OK, f"/dev/shm {total / GIB:.1f} GiB ({free / GIB:.1f} GiB free), >= {want_text}")


def python_check(host: Host) -> Check:
    missing = [m for m in CLIENT_MODULES if not host.has_module(m)]
    if missing:
        return Check(
            "python",
            WARN,
            f"missing {', '.join(missing)} (clients of generate / loadtest / smoke)",
            "pip install 'tritonclient[grpc,http]' requests numpy locust (or make setup)",
            blocker=False,
        )
    return Check("python", OK, "tritonclient (gRPC, HTTP), grpc, requests, numpy, locust importable")


# ------------------------------------------------------------------------------------------- run


@dataclass
class DoctorResult:
    checks: list[Check]
    gpus: list[Gpu]
    container: dict[str, Any] | None = None

    @property
    def blocked(self) -> bool:
        return any(c.status == FAIL and c.blocker for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.blocked,
            "checks": [c.to_dict() for c in self.checks],
            "gpus": [g.to_dict() for g in self.gpus],
            "container": self.container,
        }


def run_doctor(spec: Any | None = None, image: str | None = None, host: Host | None = None) -> DoctorResult:
    """All checks, in a fixed order. `spec` is a loaded DeploymentSpec (or None)."""
    from tritonforge.builder.planner import runtime_is_gpu

    host = host or Host()
    checks: list[Check] = []
    found, driver = query_gpus(host)
    gpu_needed = spec is None or any(runtime_is_gpu(t) for t in spec.tiers)
    if driver.status == FAIL and not gpu_needed:
        driver = dataclasses.replace(
            driver,
            status=WARN,
            blocker=False,
            message=driver.message + " (not needed: the spec has only cpu-reference tiers)",
        )
    checks.append(driver)
    checks += gpu_checks(found)
    if spec is not None:
        checks += spec_checks(spec, found)
    container = None
    if image:
        target = (
            spec.triton.trtllm_version
            if spec is not None
            else (versions.image_trtllm(image) or versions.TRTLLM_VERSION)
        )
        cchecks, container = container_checks(image, host, target)
        checks += cchecks
        if "mpirun" not in container:  # the probe did not run
            container = None
    reason = mpi_needed(spec)
    if spec is not None and reason is None:
        checks.append(Check("mpi", OK, "not needed: the spec has no TensorRT-LLM tier"))
    elif image and container is None:
        checks.append(
            Check(
                "mpi",
                WARN,
                "not checked: the container could not be inspected (see above)",
                "fix the container checks first",
                blocker=False,
            )
        )
    else:
        checks.append(mpi_check(reason, container, host))
    checks.append(shm_check(spec, image, host))
    checks.append(python_check(host))
    return DoctorResult(checks, found, container)
