"""`tritonforge doctor`: real runs on this machine, and the GPU/Docker checks fed recorded tool outputs.

No GPU, no Docker engine and no MPI are here, so nvidia-smi, `docker image inspect`, `docker run` and
`mpirun --version` are stand-ins: a runner that answers with outputs written in the tools' documented
formats. Sources:
- nvidia-smi: `--query-gpu=name,compute_cap,memory.total,memory.used,driver_version --format=csv,noheader`
  prints one line per GPU, fields separated by ", ", memory as "<n> MiB", compute capability as "9.0"
  (field list of `nvidia-smi --help-query-gpu`, copy: https://gist.github.com/Jaid/5e3b3bf4234078a1828fbfa9338c1514;
  CSV format: nvidia-smi(1), https://man.archlinux.org/man/nvidia-smi.1.en). Memory totals are the ones the
  planner's catalog records from nvidia-smi (builder/gpus.py). The failure text is the driver's well-known
  "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver" message.
- docker: `docker image inspect` exits 1 with "Error: No such image: NAME" on stderr, and `docker info`
  reports "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon
  running?" (https://docs.docker.com/reference/cli/docker/image/inspect/, https://docs.docker.com/engine/daemon/troubleshoot/).
- mpirun --version (Open MPI): "mpirun (Open MPI) 4.1.7" then a bug-report line (https://docs.open-mpi.org/en/v5.0.x/man-openmpi/man1/mpirun.1.html).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tritonforge.builder import doctor
from tritonforge.builder.doctor import FAIL, OK, WARN, CmdResult, Host
from tritonforge.builder.spec import load_spec

H100 = "NVIDIA H100 80GB HBM3, 9.0, 81559 MiB, 0 MiB, 550.54.15\n"
A100 = "NVIDIA A100-SXM4-80GB, 8.0, 81920 MiB, 4 MiB, 535.104.05\n"
B200 = "NVIDIA B200, 10.0, 183359 MiB, 0 MiB, 570.86.15\n"
SMI_DOWN = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the "
    "latest NVIDIA driver is installed and running.\n"
)
IMAGE = "nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3"
PROBE_OK = json.dumps(
    {
        "tensorrt_llm": "1.2.1",
        "modelopt": "0.37.0",
        "triton": "2.71.0",
        "triton_container": "26.07",
        "torch": "2.9.0",
        "mpirun": "mpirun (Open MPI) 4.1.7",
    }
)
CUDA_OK = json.dumps(
    {"cuda": True, "cuda_runtime": "13.0", "devices": 1, "capability": [9, 0], "warnings": []}
)


def recorded(answers: dict[tuple[str, ...], CmdResult]) -> Host:
    """A host whose commands answer from `answers` (longest matching argv prefix); others are 'not found'."""
    calls: list[list[str]] = []

    def run(argv, timeout):
        calls.append(list(argv))
        best = max((k for k in answers if tuple(argv[: len(k)]) == k), key=len, default=None)
        return answers[best] if best is not None else CmdResult(127, "", f"{argv[0]}: command not found")

    host = Host(run=run, shm=lambda: (2 * 1024**3, 2 * 1024**3), has_module=lambda name: True)
    host.calls = calls  # type: ignore[attr-defined]
    return host


def smi(out: str) -> dict[tuple[str, ...], CmdResult]:
    return {("nvidia-smi",): CmdResult(0, out)}


def spec_file(tmp_path: Path, **tier: object) -> Path:
    base = {
        "name": "main",
        "model": "fixture:llama-3.1-8b",
        "runtime": "trtllm-engine",
        "dtype": "bfloat16",
        "gpu": {"type": "H100-SXM", "count": 1},
        "triton": None,
    }
    base.pop("triton")
    base.update(tier)
    data = {"name": "doc", "tiers": [base], "triton": {"image": IMAGE, "trtllm_version": "1.2.1"}}
    path = tmp_path / f"spec-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def by_name(result: doctor.DoctorResult, name: str) -> list[doctor.Check]:
    return [c for c in result.checks if c.name == name]


# ------------------------------------------------------------------------------------ real runs


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this host has an NVIDIA driver")
def test_real_cli_on_this_machine_fails_on_the_driver() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "tritonforge", "doctor"], capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 1, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("FAIL  driver") and "no NVIDIA driver" in lines[0] and "fix:" in lines[0]
    assert any(ln.startswith("OK    python") for ln in lines)  # tritonclient & co are installed here
    assert lines[-1].startswith("not ready: 1 blocker(s): driver")
    assert "Traceback" not in p.stderr


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this host has an NVIDIA driver")
def test_real_cli_json_and_cpu_only_spec() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "tritonforge", "doctor", "--json"], capture_output=True, text=True, timeout=120
    )
    checks = json.loads(p.stdout)
    assert p.returncode == 1
    assert checks[0]["name"] == "driver" and checks[0]["status"] == FAIL and checks[0]["blocker"]
    assert {"name", "status", "message", "fix", "blocker", "details"} <= set(checks[0])
    # A CPU-only spec does not need the driver: reported, not a blocker.
    p = subprocess.run(
        [sys.executable, "-m", "tritonforge", "doctor", "examples/cpu-demo.yaml"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.splitlines()[0].startswith("WARN  driver") and "not needed" in p.stdout


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client here")
def test_real_docker_without_engine_is_a_blocker() -> None:
    """This machine has the docker client but no engine: the real `docker info` answer is reported."""
    r = doctor.run_command(["docker", "info", "--format", "{{.ServerVersion}}"], 30)
    if r.rc == 0:
        pytest.skip("a Docker engine is reachable here")
    result = doctor.run_doctor(None, IMAGE)
    (check,) = by_name(result, "docker")
    assert check.status == FAIL and "not reachable" in check.message and result.blocked


def test_bad_spec_is_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntiers: [{name: main, model: builtin:demo, runtime: warp-drive}]\n")
    p = subprocess.run(
        [sys.executable, "-m", "tritonforge", "doctor", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1 and p.stderr.startswith("error:")


# -------------------------------------------------------------------------------- driver / GPUs


def test_parse_recorded_smi_and_catalog_names() -> None:
    gpus = doctor.parse_smi(H100 + H100)
    assert [g.index for g in gpus] == [0, 1]
    assert gpus[0].sm == 90 and gpus[0].memory_total_mib == 81559 and gpus[0].driver == "550.54.15"
    assert gpus[0].free_bytes == 81559 * 1024**2
    assert gpus[0].to_dict()["compute_cap"] == "9.0"
    names = {
        "NVIDIA H100 80GB HBM3": "H100-SXM",
        "NVIDIA H100 PCIe": "H100-PCIe",
        "NVIDIA H200": "H200",
        "NVIDIA B200": "B200",
        "NVIDIA L40S": "L40S",
        "NVIDIA A100-SXM4-80GB": "A100-80GB",
    }
    for smi_name, cat in names.items():
        assert doctor.catalog_gpu(smi_name).name == cat, smi_name
    assert doctor.catalog_gpu("NVIDIA GeForce RTX 4090") is None
    with pytest.raises(ValueError):
        doctor.parse_smi("NVIDIA H100, 9.0\n")


def test_driver_down_and_missing() -> None:
    down = doctor.run_doctor(None, None, recorded({("nvidia-smi",): CmdResult(9, SMI_DOWN, "")}))
    (drv,) = by_name(down, "driver")
    assert drv.status == FAIL and "couldn't communicate" in drv.message and down.blocked
    missing = doctor.run_doctor(None, None, recorded({}))
    assert by_name(missing, "driver")[0].message == "no NVIDIA driver: nvidia-smi not found"


def test_gpus_listed_without_spec() -> None:
    result = doctor.run_doctor(
        None, None, recorded({**smi(H100 + H100), ("mpirun",): CmdResult(0, "mpirun (Open MPI) 4.1.7\n")})
    )
    assert not result.blocked
    assert [c.status for c in result.checks[:3]] == [OK, OK, OK]
    assert "H100 80GB HBM3 (sm90, 79.6 GiB; planner catalog: H100-SXM)" in result.checks[1].message
    assert by_name(result, "mpi")[0].status == OK


# ---------------------------------------------------------------------------------- spec rules


@pytest.mark.parametrize(
    ("smi_out", "fmt", "kv", "ok"),
    [
        (H100, "fp8", "fp8", True),
        (A100, "fp8", "auto", False),  # FP8 needs sm89+
        (H100, "nvfp4", "auto", False),  # NVFP4 needs Blackwell
        (B200, "nvfp4", "auto", True),
        (B200, "int4_awq", "auto", False),  # the engine builder refuses INT4 weights on SM>=100
    ],
)
def test_precision_judged_by_the_plan_rules_on_this_gpu(
    tmp_path: Path, smi_out: str, fmt: str, kv: str, ok: bool
) -> None:
    gpu_type = doctor.catalog_gpu(smi_out.split(",")[0]).name
    spec = load_spec(
        spec_file(
            tmp_path, quantization={"format": fmt, "kv_cache_dtype": kv}, gpu={"type": gpu_type, "count": 1}
        )
    )
    result = doctor.run_doctor(
        spec, None, recorded({**smi(smi_out), ("mpirun",): CmdResult(0, "mpirun (Open MPI) 4.1.7\n")})
    )
    tier = by_name(result, "tier main")
    assert (tier[0].status == OK) is ok, [c.line() for c in tier]
    assert result.blocked is not ok
    if not ok:
        assert tier[0].details["rule"] in (
            "fp8-needs-sm89",
            "nvfp4-needs-blackwell",
            "int-weights-refused-on-sm100",
        )
        assert f"sm{doctor.parse_smi(smi_out)[0].sm}" in tier[0].message


def test_spec_for_another_gpu_warns(tmp_path: Path) -> None:
    spec = load_spec(spec_file(tmp_path, gpu={"type": "H100-SXM", "count": 1}))
    result = doctor.run_doctor(
        spec, None, recorded({**smi(B200), ("mpirun",): CmdResult(0, "mpirun (Open MPI) 4.1.7")})
    )
    warn = [c for c in by_name(result, "tier main") if c.status == WARN]
    assert warn and "NVIDIA B200" in warn[0].message and not warn[0].blocker
    assert not result.blocked


def test_free_memory_against_the_plan(tmp_path: Path) -> None:
    spec = load_spec(spec_file(tmp_path))  # 8B bf16: ~15 GiB of weights
    idle = doctor.run_doctor(
        spec, None, recorded({**smi(H100), ("mpirun",): CmdResult(0, "mpirun (Open MPI) 4.1.7")})
    )
    (mem,) = by_name(idle, "tier main memory")
    assert mem.status == OK and "GPU 0 79.6 GiB" in mem.message
    busy_smi = "NVIDIA H100 80GB HBM3, 9.0, 81559 MiB, 72000 MiB, 550.54.15\n"  # another process holds 70 GiB
    busy = doctor.run_doctor(
        spec, None, recorded({**smi(busy_smi), ("mpirun",): CmdResult(0, "mpirun (Open MPI) 4.1.7")})
    )
    lines = [c for c in by_name(busy, "tier main") + by_name(busy, "tier main memory") if c.status != OK]
    assert busy.blocked
    assert any(c.status == FAIL and c.details.get("rule") == "must-fit" for c in lines), [
        c.line() for c in lines
    ]
    assert any(c.status == WARN and "70.3 GiB on GPU 0" in c.message for c in lines)
    assert idle.to_dict()["ok"] and not busy.to_dict()["ok"]


def test_tp2_needs_two_gpus_and_mpi(tmp_path: Path) -> None:
    spec = load_spec(spec_file(tmp_path, parallelism={"tp": 2}, gpu={"type": "H100-SXM", "count": 2}))
    one = doctor.run_doctor(spec, None, recorded(smi(H100)))
    (tier,) = by_name(one, "tier main")
    assert tier.status == FAIL and "needs GPU(s) 0,1" in tier.message and "has 1" in tier.message
    (mpi,) = by_name(one, "mpi")
    assert mpi.status == FAIL and "TP x PP 2" in mpi.message
    two = doctor.run_doctor(
        spec,
        None,
        recorded({**smi(H100 + H100), ("mpirun",): CmdResult(0, "mpirun (Open MPI) 4.1.7\n\nReport bugs\n")}),
    )
    assert not two.blocked, [c.line() for c in two.checks if c.status == FAIL]
    assert by_name(two, "mpi")[0].message == "mpirun (Open MPI) 4.1.7 on this host"


# ---------------------------------------------------------------------------------- container


def docker_ok(probe: str = PROBE_OK) -> dict[tuple[str, ...], CmdResult]:
    return {
        ("docker", "--version"): CmdResult(0, "Docker version 27.3.1, build ce12230\n"),
        ("docker", "info"): CmdResult(0, "27.3.1\n"),
        ("docker", "image", "inspect"): CmdResult(
            0, "sha256:4f2a9c0e1b7d3a5f6e8c9b0a1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e\n"
        ),
        ("docker", "run", "--rm", "--entrypoint", "python3"): CmdResult(0, probe + "\n"),
        ("docker", "run", "--rm", "--gpus"): CmdResult(0, CUDA_OK + "\n"),
    }


def test_container_all_good(tmp_path: Path) -> None:
    spec = load_spec(spec_file(tmp_path))
    host = recorded({**smi(H100), **docker_ok()})
    result = doctor.run_doctor(spec, IMAGE, host)
    assert not result.blocked, [c.line() for c in result.checks if c.status != OK]
    names = [c.name for c in result.checks]
    for n in ("docker", "image", "tensorrt-llm", "modelopt", "triton", "container gpus", "mpi"):
        assert n in names
    assert by_name(result, "mpi")[0].message.endswith("in the image")
    assert result.container["tensorrt_llm"] == "1.2.1"
    assert (
        by_name(result, "container gpus")[0].message
        == "CUDA 13.0 starts inside the container: 1 GPU(s), sm90"
    )
    # the probe runs python3 inside the image, never on this host
    assert any(
        c[:5] == ["docker", "run", "--rm", "--entrypoint", "python3"] and IMAGE in c for c in host.calls
    )


def test_container_ships_another_trtllm(tmp_path: Path) -> None:
    spec = load_spec(spec_file(tmp_path))
    probe = json.dumps({**json.loads(PROBE_OK), "tensorrt_llm": "1.1.0", "modelopt": "0.35.1"})
    result = doctor.run_doctor(spec, IMAGE, recorded({**smi(H100), **docker_ok(probe)}))
    (trt,) = by_name(result, "tensorrt-llm")
    assert trt.status == FAIL and "1.1.0 in the image, target 1.2.1" in trt.message and "26.07" in trt.fix
    (mo,) = by_name(result, "modelopt")
    assert mo.status == WARN and not mo.blocker
    assert result.blocked


def test_image_missing_and_docker_missing(tmp_path: Path) -> None:
    answers = {**smi(H100), **docker_ok()}
    answers[("docker", "image", "inspect")] = CmdResult(1, "[]\n", f"Error: No such image: {IMAGE}\n")
    result = doctor.run_doctor(None, IMAGE, recorded(answers))
    (img,) = by_name(result, "image")
    assert img.status == FAIL and img.fix == f"docker pull {IMAGE}" and "No such image" in img.message
    assert by_name(result, "mpi")[0].status == WARN  # not checked without the container
    nodocker = doctor.run_doctor(None, IMAGE, recorded(smi(H100)))
    assert by_name(nodocker, "docker")[0].message == "docker not found"
    assert nodocker.blocked


def test_no_gpu_inside_the_container(tmp_path: Path) -> None:
    answers = {**smi(H100), **docker_ok()}
    answers[("docker", "run", "--rm", "--gpus")] = CmdResult(
        125,
        "",
        'docker: Error response from daemon: could not select device driver "" with capabilities: [[gpu]].\n',
    )
    result = doctor.run_doctor(None, IMAGE, recorded(answers))
    (c,) = by_name(result, "container gpus")
    assert c.status == FAIL and "could not select device driver" in c.message and "Container Toolkit" in c.fix
    # The driver is older than the image's CUDA: torch says so (torch/cuda/__init__.py's warning text).
    old = json.dumps(
        {
            "cuda": False,
            "cuda_runtime": "13.0",
            "devices": 0,
            "warnings": [
                "CUDA initialization: The NVIDIA driver on your system is too old (found version 12020). Please update your "
                "GPU driver by downloading and installing a new version from the URL: http://www.nvidia.com/Download/index.aspx"
            ],
        }
    )
    answers[("docker", "run", "--rm", "--gpus")] = CmdResult(0, old + "\n")
    (c,) = by_name(doctor.run_doctor(None, IMAGE, recorded(answers)), "container gpus")
    assert c.status == FAIL and "driver on your system is too old" in c.message and "CUDA 13.0" in c.fix


# ------------------------------------------------------------------------------- shm / python


def test_small_shm_warns_and_missing_clients_warn() -> None:
    host = recorded(smi(H100))
    host.shm = lambda: (64 * 1024**2, 60 * 1024**2)  # Docker's default /dev/shm is 64 MiB
    host.has_module = lambda name: name != "tritonclient.grpc"
    result = doctor.run_doctor(None, None, host)
    (shm,) = by_name(result, "shm")
    assert shm.status == WARN and "64 MiB, below 2g" in shm.message
    (py,) = by_name(result, "python")
    assert py.status == WARN and "tritonclient.grpc" in py.message
    assert doctor.parse_size("2g") == 2 * 1024**3 and doctor.parse_size("512m") == 512 * 1024**2
