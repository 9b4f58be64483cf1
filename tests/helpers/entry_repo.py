"""Helpers for the `llm` entry-model tests and benchmarks.

`build_repo` writes a small Triton repository: one mock tier model per tier (ensemble tensor
contract; it streams pre-made words that name the model and a per-model call number, so a cache
hit is told apart from a regeneration) and the real `llm` model rendered from
model_repo_templates/models/llm.py with the policy package vendored as `tf_policy`.
"""

from __future__ import annotations

import functools
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tritonforge.ensembles import contract as c
from tritonforge.ensembles.server import free_port

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "model_repo_templates" / "models" / "llm.py"
POLICY = ROOT / "model_repo_templates" / "tf_policy"
COMMON = ROOT / "model_repo_templates" / "tf_common"  # shared by the models (llm.py imports it)

# A stand-in for a tier's ensemble. Prompt markers: "#fail-<model>" -> error response,
# "#sleep-<model>=S" -> wait S seconds first. Output: " <model> call<N> w0 w1 ..." (max_tokens words).
MOCK_TIER = """import os, sys
sys.path[0:0] = [p for p in os.environ.get("TRITONFORGE_PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
import re, threading, time  # noqa: E401,E402
import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]
        self.n = 0
        self.lock = threading.Lock()

    def execute(self, requests):
        for r in requests:
            threading.Thread(target=self.serve, args=(r,), daemon=True).start()
        return None

    def serve(self, request):
        sender = request.get_response_sender()

        def get(name, default=None):
            t = pb_utils.get_input_tensor_by_name(request, name)
            return default if t is None else t.as_numpy().reshape(-1)[0]

        text = get("text_input").decode()
        max_tokens = int(get("max_tokens"))
        stream = bool(get("stream", False))
        with self.lock:
            self.n += 1
            n = self.n
        if "#fail-" + self.name in text:
            err = pb_utils.TritonError(self.name + ": simulated engine failure")
            sender.send(pb_utils.InferenceResponse(error=err), flags=FINAL)
            return
        m = re.search("#sleep-" + self.name + "=([0-9.]+)", text)
        if m:
            time.sleep(float(m.group(1)))
        words = [self.name, "call%d" % n] + ["w%d" % i for i in range(max(min(max_tokens, 12) - 2, 0))]
        toks = [" " + w for w in words[:max_tokens]]

        def resp(s, k):
            return pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("text_output", np.array([[s.encode()]], dtype=np.object_)),
                pb_utils.Tensor("num_output_tokens", np.array([[k]], dtype=np.int32)),
            ])

        if stream:
            for t in toks:
                sender.send(resp(t, 1))
            sender.send(flags=FINAL)
        else:
            sender.send(resp("".join(toks), len(toks)), flags=FINAL)
"""


def _tensors(kind: str, tensors: tuple[c.Tensor, ...]) -> str:
    rows = []
    for t in tensors:
        opt = " optional: true" if t.optional and kind == "input" else ""
        dims = ", ".join(str(d) for d in t.dims)
        rows.append(f'  {{ name: "{t.name}" data_type: {t.data_type} dims: [ {dims} ]{opt} }}')
    return f"{kind} [\n" + ",\n".join(rows) + "\n]\n"


def _pbtxt_string(s: str) -> str:
    return json.dumps(s)  # a JSON string literal is a valid protobuf text string


def render_llm_py() -> str:
    """The `llm` model file, as emit copies it."""
    return TEMPLATE.read_text()


def write_llm_model(repo: Path, entry_config: dict[str, Any], name: str = "llm") -> None:
    d = repo / name
    (d / "1").mkdir(parents=True, exist_ok=True)
    (d / "1" / "model.py").write_text(render_llm_py())
    shutil.copytree(
        POLICY, d / "1" / "tf_policy", ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True
    )
    shutil.copytree(
        COMMON, d / "1" / "tf_common", ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True
    )
    outs = c.ENSEMBLE_OUTPUTS + c.LLM_EXTRA_OUTPUTS  # as tritonforge emit declares the entry
    cfg = (
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: 0\nmodel_transaction_policy {{ decoupled: true }}\n'
        + _tensors("input", c.ENSEMBLE_INPUTS + c.LLM_EXTRA_INPUTS)
        + _tensors("output", outs)
        + "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
        + f'parameters {{ key: "entry_config" value {{ string_value: {_pbtxt_string(json.dumps(entry_config))} }} }}\n'
    )
    (d / "config.pbtxt").write_text(cfg)


def write_mock_tier(repo: Path, name: str) -> None:
    d = repo / name
    (d / "1").mkdir(parents=True, exist_ok=True)
    (d / "1" / "model.py").write_text(MOCK_TIER)
    cfg = (
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: 8\nmodel_transaction_policy {{ decoupled: true }}\n'
        + _tensors("input", c.ENSEMBLE_INPUTS)
        + _tensors("output", (c.ENSEMBLE_OUTPUTS[0], c.ENSEMBLE_OUTPUTS[3]))
        + "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
    )
    (d / "config.pbtxt").write_text(cfg)


def entry_config(
    router: dict[str, Any] | None = None, cache: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    tiers = [
        {
            "name": "small",
            "kind": "local",
            "model": "small_ensemble",
            "streaming": True,
            "max_input_len": 1024,
            "max_output_len": 256,
            "tokenizer_dir": None,
        },
        {
            "name": "large",
            "kind": "local",
            "model": "large_ensemble",
            "streaming": True,
            "max_input_len": 2048,
            "max_output_len": 512,
            "tokenizer_dir": None,
        },
    ]
    r = {
        "enabled": True,
        "policy": "heuristic",
        "small_tier": "small",
        "large_tier": "large",
        "fallback": True,
        "tier_timeout_s": 2.0,
        "heuristic": {"max_prompt_tokens": 32, "max_requested_tokens": 64},
        **(router or {}),
    }
    k = {
        "enabled": True,
        "backend": "memory",
        "semantic": True,
        "similarity_threshold": 0.85,
        "ttl_s": 3600,
        "capacity": 1000,
        **(cache or {}),
    }
    return {
        "tiers": tiers,
        "router": r,
        "cache": k,
        "classifier_file": None,
        "embedding_model_dir": None,
        **extra,
    }


def build_repo(repo: Path, cfg: dict[str, Any]) -> Path:
    repo.mkdir(parents=True, exist_ok=True)
    for t in cfg["tiers"]:
        if t.get("kind", "local") == "local":
            write_mock_tier(repo, t["model"])
    write_llm_model(repo, cfg)
    return repo


# --- clients ------------------------------------------------------------------------------------
def generate(
    base: str, payload: dict[str, Any], model: str = "llm", timeout: float = 30
) -> tuple[int, dict[str, Any]]:
    """POST /generate; (status, JSON body) - errors come back as {"error": ...}."""
    req = urllib.request.Request(
        f"{base}/v2/models/{model}/generate",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def generate_stream(
    base: str, payload: dict[str, Any], model: str = "llm", timeout: float = 30
) -> list[dict[str, Any]]:
    """POST /generate_stream; the list of SSE event payloads."""
    req = urllib.request.Request(
        f"{base}/v2/models/{model}/generate_stream",
        data=json.dumps({**payload, "stream": True}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    events = []
    with urllib.request.urlopen(req, timeout=timeout) as r:
        for raw in r:
            line = raw.decode().strip()
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
    return events


def metrics_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the series of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


# --- a real redis-server -----------------------------------------------------------------------
class RedisProc:
    """`redis-server` on a free loopback port, without persistence."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProc:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        t0 = time.monotonic()
        while time.monotonic() - t0 < 10:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@functools.lru_cache(maxsize=1)
def shared_embedder() -> Any:
    """One all-MiniLM-L6-v2 embedder for the whole test run (loading takes seconds)."""
    from tritonforge.model_repo_templates.tf_policy.embedding import load_embedder

    return load_embedder("builtin:all-minilm-l6-v2", threads=1)
