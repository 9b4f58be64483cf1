"""serve: a killed `tritonforge serve` leaves no tritonserver (nor Python stub) behind, and a test server
binds loopback only. Runs the real CLI over a real Triton."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES
from tritonforge.builder import versions
from tritonforge.builder.spec import load_spec
from tritonforge.ensembles.render import emit_files, write_repository
from tritonforge.ensembles.server import free_ports

pytestmark = pytest.mark.server
# 127.0.0.1 as /proc/net/tcp writes it, and as an IPv4-mapped IPv6 address (gRPC listens that way).
LOOPBACK_HEX = {"0100007F", "0000000000000000FFFF00000100007F"}


def _listening(ports: set[int]) -> list[tuple[str, int]]:
    """(local address hex, port) of every LISTEN socket on `ports`, from /proc/net/tcp and tcp6."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            addr, port_hex = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(port_hex, 16) in ports:  # 0A: TCP_LISTEN
                found.append((addr, int(port_hex, 16)))
    return found


def _group(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def _wait_gone(pgid: int, limit_s: float = 30.0) -> list[int]:
    """The group's processes still alive once they are all gone or `limit_s` passed (a bound, not a timing)."""
    deadline = time.monotonic() + limit_s
    while (left := _group(pgid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def test_sigkilled_serve_leaves_no_orphan_and_binds_loopback(tiny_demo_repo: Path, tmp_path: Path) -> None:
    ports = free_ports()
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tritonforge",
            "serve",
            str(tiny_demo_repo),
            "--http-port",
            str(ports.http),
            "--grpc-port",
            str(ports.grpc),
            "--metrics-port",
            str(ports.metrics),
            "--ready-file",
            str(ready),
            "--log",
            str(tmp_path / "triton.log"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    server_pid = None
    try:
        deadline = time.monotonic() + 300
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ready.exists(), proc.communicate()[1] if proc.poll() is not None else "never READY"
        server_pid = json.loads(ready.read_text())["pid"]
        listening = _listening(set(ports.all()))
        assert {p for _, p in listening} == set(ports.all()), listening
        assert all(addr in LOOPBACK_HEX for addr, _ in listening), listening  # no wildcard (0.0.0.0 / ::)
        stubs = [p for p in _group(server_pid) if p != server_pid]
        assert stubs, "the demo repository's Python models run in stub processes of the server's group"
        os.kill(proc.pid, signal.SIGKILL)  # no handler, no finally: only the kernel can tell the server
        proc.communicate(timeout=30)
        assert _wait_gone(server_pid) == []  # tritonserver and every Python stub
        assert _listening(set(ports.all())) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        if server_pid is not None and _group(server_pid):
            os.killpg(server_pid, signal.SIGKILL)


def test_killed_parent_of_a_library_server_takes_it_along(tiny_demo_repo: Path, tmp_path: Path) -> None:
    """TritonServer itself (what the test fixtures and benchmarks use) dies with the process that started it."""
    ports = free_ports()
    pid_file = tmp_path / "pid"
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from tritonforge.ensembles.server import TritonServer, Ports\n"
        f"s = TritonServer({str(tiny_demo_repo)!r}, Ports{ports.all()!r}, log_path=Path({str(tmp_path / 't.log')!r}))\n"
        "s.start()\n"
        f"Path({str(pid_file)!r}).write_text(str(s.proc.pid))\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    server_pid = None
    try:
        deadline = time.monotonic() + 120
        while not pid_file.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pid_file.exists()
        server_pid = int(pid_file.read_text())
        assert _group(server_pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert _wait_gone(server_pid) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        if server_pid is not None and _group(server_pid):
            os.killpg(server_pid, signal.SIGKILL)


def test_docker_command_publishes_on_loopback_by_default(tmp_path: Path) -> None:
    from tests.helpers.builds import fake_build  # serve refuses engines that were never built

    example = "llama3.1-8b-fp8-h100.yaml"
    files, _ = emit_files(load_spec(EXAMPLES / example), EXAMPLES, fake_build(example, tmp_path))
    write_repository(files, tmp_path / "repo")
    image = versions.TRITON_IMAGE
    base = [
        sys.executable,
        "-m",
        "tritonforge",
        "serve",
        str(tmp_path / "repo"),
        "--docker",
        image,
        "--print",
        "--http-port",
        "9000",
        "--grpc-port",
        "9001",
        "--metrics-port",
        "9002",
    ]
    default = subprocess.run(base, capture_output=True, text=True, timeout=60)
    assert default.returncode == 0, default.stderr
    for port, inside in ((9000, 8000), (9001, 8001), (9002, 8002)):
        assert f"-p 127.0.0.1:{port}:{inside}" in default.stdout
    everywhere = subprocess.run([*base, "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60)
    assert everywhere.returncode == 0 and "-p 0.0.0.0:9000:8000" in everywhere.stdout
