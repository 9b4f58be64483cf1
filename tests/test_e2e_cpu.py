"""End to end on CPU: emit the demo spec (tiny model), serve it with a real Triton, generate."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

pytestmark = pytest.mark.server
PROMPT = "def main(argv):\n    "


def _generate(url: str, body: dict) -> dict:
    r = requests.post(f"{url}/v2/models/ensemble/generate", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def _stream(url: str, body: dict) -> list[dict]:
    r = requests.post(
        f"{url}/v2/models/ensemble/generate_stream", json={**body, "stream": True}, stream=True, timeout=120
    )
    assert r.status_code == 200, r.text
    events = []
    for line in r.iter_lines():
        if line.startswith(b"data:"):
            events.append(json.loads(line[5:]))
    return events


def test_all_models_ready(tiny_demo_server) -> None:
    states = {m["name"]: m["state"] for m in tiny_demo_server.model_states()}
    assert states == {m: "READY" for m in ("ensemble", "preprocessing", "postprocessing", "tensorrt_llm")}


def test_generate_and_stream_agree(tiny_demo_server) -> None:
    url = tiny_demo_server.http_url
    body = {"text_input": PROMPT, "max_tokens": 24, "min_tokens": 24}
    whole = _generate(url, body)
    assert isinstance(whole["text_output"], str) and whole["text_output"]
    events = _stream(url, {**body, "id": "agree-1"})
    assert len(events) >= 4, events  # the first token alone, then groups of the default stream interval (8)
    streamed = "".join(e["text_output"] for e in events)
    # Greedy, and the request id lets postprocessing carry a character split across chunks; only an
    # incomplete character at the very end (U+FFFD when decoded whole) can differ.
    assert streamed in (
        whole["text_output"],
        whole["text_output"][:-1] if whole["text_output"].endswith("\ufffd") else None,
    )
    assert sum(int(e["num_output_tokens"]) for e in events) == 24


def test_grpc_streaming_client_gets_same_text(tiny_demo_server) -> None:
    import tritonclient.grpc as grpcclient

    url = tiny_demo_server.http_url
    expected = _generate(url, {"text_input": PROMPT, "max_tokens": 16, "min_tokens": 16})["text_output"]
    results: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(tiny_demo_server.grpc_url)
    inputs = []
    for name, value, dtype in (
        ("text_input", np.array([[PROMPT.encode()]], dtype=object), "BYTES"),
        ("max_tokens", np.array([[16]], dtype=np.int32), "INT32"),
        ("min_tokens", np.array([[16]], dtype=np.int32), "INT32"),
        ("stream", np.array([[True]], dtype=bool), "BOOL"),
    ):
        t = grpcclient.InferInput(name, list(value.shape), dtype)
        t.set_data_from_numpy(value)
        inputs.append(t)
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    client.async_stream_infer("ensemble", inputs, request_id="g1", enable_empty_final_response=True)
    pieces = []
    deadline = time.time() + 60
    while time.time() < deadline:
        result, error = results.get(timeout=60)
        assert error is None, error
        response = result.get_response()
        if response.outputs:
            pieces.append(result.as_numpy("text_output").reshape(-1)[0].decode())
        if (
            response.parameters.get("triton_final_response")
            and response.parameters["triton_final_response"].bool_param
        ):
            break
    client.stop_stream()
    assert len(pieces) > 1
    assert "".join(pieces) in (expected, expected[:-1] if expected.endswith("\ufffd") else None)


def test_bad_requests_get_errors_and_server_stays_up(tiny_demo_server) -> None:
    url = tiny_demo_server.http_url
    cases = [
        ({"text_input": "", "max_tokens": 8}, "empty"),
        ({"text_input": "x", "max_tokens": 0}, "max_tokens"),
        ({"text_input": "x", "max_tokens": 100000}, "max_tokens"),
        ({"text_input": "word " * 5000, "max_tokens": 8}, "max_input_len"),
        ({"text_input": "x", "max_tokens": "many"}, ""),
    ]
    for body, needle in cases:
        r = requests.post(f"{url}/v2/models/ensemble/generate", json=body, timeout=60)
        assert r.status_code >= 400, (body, r.text)
        assert needle in r.json()["error"], r.text
    assert _generate(url, {"text_input": PROMPT, "max_tokens": 4})["text_output"]


def _run_cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tritonforge", *args], capture_output=True, text=True, **kw)


def test_serve_cli_busy_port_is_one_line(tiny_demo_repo: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        proc = _run_cli("serve", str(tiny_demo_repo), "--http-port", str(busy), timeout=60)
    assert proc.returncode == 2
    assert f"port {busy}" in proc.stderr and "Traceback" not in proc.stderr


def test_serve_cli_model_load_failure_is_one_line(tiny_demo_repo: Path, tmp_path: Path) -> None:
    from tritonforge.ensembles.server import free_ports

    repo = tmp_path / "repo"
    shutil.copytree(tiny_demo_repo, repo)
    cfg = repo / "preprocessing" / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace(str(Path(os.environ["TRITONFORGE_CACHE"])), "/nonexistent"))
    ports = free_ports()
    proc = _run_cli(
        "serve",
        str(repo),
        "--http-port",
        str(ports.http),
        "--grpc-port",
        str(ports.grpc),
        "--metrics-port",
        str(ports.metrics),
        "--timeout",
        "120",
        timeout=180,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "preprocessing" in lines[0], proc.stderr
    assert (
        "Traceback" not in proc.stderr.split("error:")[-1].split("(full log")[0]
        or "preprocessing" in lines[0]
    )


def test_serve_cli_stops_cleanly_on_sigterm(tiny_demo_repo: Path, tmp_path: Path) -> None:
    from tritonforge.ensembles.server import free_ports

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
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(900):
            if ready.exists() or proc.poll() is not None:
                break
            time.sleep(0.2)
        assert ready.exists(), proc.stderr.read() if proc.poll() is not None else "not ready"
        server_pid = json.loads(ready.read_text())["pid"]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "READY" in out and "ensemble" in out
    time.sleep(0.5)
    # Neither the server nor any of its Python stubs is left behind.
    left = subprocess.run(["pgrep", "-g", str(server_pid)], capture_output=True, text=True).stdout.split()
    assert left == []
