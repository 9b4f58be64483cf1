"""A Python model's stub that dies is seen: `TritonServer.dead_stubs()` names its instance (real Triton, real
crash: the stub gets SIGSEGV), while the other model's stub is left alone and still answers. A server killed
before it could unload its models leaves its stubs' shared-memory regions in /dev/shm; `stop()` removes them."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tritonforge.ensembles.server import SHM_DIR, TritonServer, free_ports, stub_processes

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

CONFIG = """name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "IN" data_type: TYPE_INT32 dims: [ 1 ] }} ]
output [ {{ name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] }} ]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
"""

MODEL = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor("OUT", pb_utils.get_input_tensor_by_name(r, "IN").as_numpy())])
            for r in requests
        ]
"""


def _repo(root: Path) -> Path:
    for name in ("victim", "bystander"):
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(CONFIG.format(name=name))
        (root / name / "1" / "model.py").write_text(MODEL)
    return root


def _infer(server: TritonServer, model: str, value: int) -> list[int]:
    body = json.dumps(
        {"inputs": [{"name": "IN", "shape": [1], "datatype": "INT32", "data": [value]}]}
    ).encode()
    req = urllib.request.Request(f"{server.http_url}/v2/models/{model}/infer", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310
        return json.loads(r.read())["outputs"][0]["data"]


def test_dead_stub_is_named(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    with TritonServer(repo, free_ports(), log_path=tmp_path / "triton.log") as server:
        server.wait_ready(120)  # watches the stubs
        assert server.dead_stubs() == []
        watched = server.watch_stubs()
        assert sorted(watched.values()) == ["bystander_0_0", "victim_0_0"]
        assert _infer(server, "victim", 7) == [7]

        victim = next(pid for pid, name in watched.items() if name == "victim_0_0")
        os.kill(victim, signal.SIGSEGV)  # what a segfault in the stub does
        deadline = time.monotonic() + 30
        while not server.dead_stubs() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.dead_stubs() == ["victim_0_0"]
        assert server.proc is not None
        assert victim not in stub_processes(server.proc.pid)
        assert _infer(server, "bystander", 5) == [5]  # the other stub is untouched


def test_stop_removes_regions_a_killed_server_left(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    server = TritonServer(repo, free_ports(), log_path=tmp_path / "triton.log")
    with server:
        server.wait_ready(120)
        assert server.proc is not None
        regions = sorted(
            SHM_DIR / argv[2]
            for argv in (
                Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0") for pid in server.watch_stubs()
            )
        )
        assert len(regions) == 2 and all(r.is_file() for r in regions)
        os.killpg(server.proc.pid, signal.SIGKILL)  # nobody unloads: the regions stay behind
        server.proc.wait(timeout=30)
        time.sleep(0.5)  # the stubs die with the group; nothing else removes the files
        assert [r for r in regions if r.is_file()] == regions
    assert [r for r in regions if r.exists()] == []


def test_serve_stops_with_one_line_when_a_stub_dies(tmp_path: Path) -> None:
    """`tritonforge serve` does not keep a server whose requests would hang: a dead stub ends it, exit 2,
    one line naming the instance, and the server with its other stubs is gone."""
    import subprocess

    repo = _repo(tmp_path / "repo")
    ports = free_ports()
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tritonforge", "serve", str(repo), "--http-port", str(ports.http)]
        + ["--grpc-port", str(ports.grpc), "--metrics-port", str(ports.metrics)]
        + ["--ready-file", str(ready), "--log", str(tmp_path / "triton.log")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ready.exists(), proc.communicate()[1] if proc.poll() is not None else "never READY"
        server_pid = json.loads(ready.read_text())["pid"]
        stubs = stub_processes(server_pid)
        victim = next(pid for pid, name in stubs.items() if "victim" in name)
        os.kill(victim, signal.SIGSEGV)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 2, err
        last = err.strip().splitlines()[-1]
        assert "victim_0_0" in last and "died" in last and "Traceback" not in err, err
        deadline = time.monotonic() + 30
        while Path(f"/proc/{server_pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{server_pid}").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
