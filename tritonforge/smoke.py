"""`tritonforge smoke --gpu`: prove a GPU host serves a real deployment, and write one report about it.

On a GPU host the embedded demo model (`builtin:demo`) is built into real engines (FP16, and FP8 where
the plan's rules allow it on this GPU) with `tritonforge build --docker IMAGE`, emitted, served in the
container with the backend's own launch (`builder.launch` through `server.docker_command`), compared
token by token with the CPU reference engine run in this process on the same prompts (greedy), streamed
through HTTP and gRPC, load-tested for 30 s with `tritonforge loadtest`, and stopped. Everything lands in
`smoke-report.json` (schema `tritonforge.smoke_report/1`): versions, GPU, per-step timings, agreement,
throughput, and on failure which step failed and why.

Shape: `plan_steps(cfg)` is pure (a list of `Step`s: what runs, with which command); `Executor` runs
them in order, records each result, stops at the first failure (cleanup steps, which stop a started
server, still run) and writes the report. Runtimes plug in through `RUNTIMES`: a function that returns
one precision's steps: `trtllm-engine`, and `trtllm-pytorch` (export a unified Hugging Face checkpoint
instead of building an engine; the LLM API launch) without touching the executor or the report.
"""

from __future__ import annotations

import json
import os
import platform
import queue
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tritonforge.builder import versions
from tritonforge.builder.manifest import MANIFEST, read_manifest
from tritonforge.errors import UserError

SCHEMA = "tritonforge.smoke_report/1"
REPORT = "smoke-report.json"
DEMO = "builtin:demo"
# Python-flavoured prompts: the demo model is trained on Python standard-library sources.
PROMPTS = (
    "def parse_args(argv):",
    "import os\nimport sys\n\n\ndef main():",
    "class Cache:\n    def __init__(self, size):",
    "    for i, line in enumerate(lines):",
    "def read_config(path):\n    with open(path) as f:",
    "# Copyright",
    "    if not isinstance(value, str):\n        raise",
    "    return sorted(items, key=lambda",
)
# Minimum share of prompts whose first greedy token matches the CPU reference. A wrong tokenizer,
# weights or launch gets the first token wrong almost always; numerical differences (FP16 on a GPU vs
# FP32 on a CPU, FP8 quantization) move later tokens first. ModelOpt FP8 on this model agrees with the
# unquantized one on 98.6% of top-1 tokens on CPU (README), so 0.8 leaves room without hiding a broken
# deployment.
MIN_FIRST_TOKEN_AGREEMENT = {"fp16": 0.9, "fp8": 0.8}
PRECISIONS = ("fp16", "fp8")
LIMITS = {"max_batch_size": 8, "max_input_len": 512, "max_output_len": 256}
LOAD_WORKLOAD = "isl=128,osl=64"
# Planner catalog GPU standing in for an unlisted GPU of the same compute capability (--print, odd GPUs).
SM_CATALOG = {80: "A100-80GB", 89: "L40S", 90: "H100-SXM", 100: "B200"}


@dataclass(frozen=True)
class SmokeConfig:
    """What one smoke run targets. `sm`: compute capability x 10 of the GPU it runs on."""

    out_dir: Path
    image: str
    sm: int
    gpu_type: str  # planner catalog name (gpus.CATALOG)
    runtime: str = "trtllm-engine"
    http_port: int = 18000
    grpc_port: int = 18001
    metrics_port: int = 18002
    load_seconds: int = 30
    load_users: int = 8
    max_tokens: int = 32
    prompts: tuple[str, ...] = PROMPTS
    python: str = sys.executable
    serve_timeout_s: float = 900.0
    build_timeout_s: float = 3600.0

    @property
    def trtllm_version(self) -> str:
        return versions.image_trtllm(self.image) or versions.TRTLLM_VERSION

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


@dataclass(frozen=True)
class Step:
    """One step of the run. `argv` for steps that run a command; `cleanup` steps run even after a failure."""

    name: str  # "fp16/build"
    kind: (
        str  # doctor | write-spec | command | serve | agreement | stream-http | stream-grpc | loadtest | stop
    )
    precision: str | None = None
    argv: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    timeout_s: float = 600.0
    cleanup: bool = False

    def describe(self) -> str:
        if self.argv:
            return " ".join(self.argv)
        p = self.params
        return {
            "doctor": f"tritonforge doctor --docker {p.get('image')} (blockers stop the run)",
            "write-spec": f"write {p.get('path')}",
            "serve": f"docker run {p.get('image')} over {p.get('repo')} with the backend's launch (serve --docker), "
            f"wait for READY on {p.get('http_url')}",
            "agreement": f"greedy output_ids of {p.get('model')} over gRPC vs the CPU reference engine, "
            f"{len(p.get('prompts', ()))} prompts x {p.get('max_tokens')} tokens",
            "stream-http": f"POST {p.get('url')}/v2/models/{p.get('model')}/generate_stream",
            "stream-grpc": f"gRPC ModelStreamInfer {p.get('url')} {p.get('model')}",
            "stop": f"docker stop {p.get('container')}",
        }.get(self.kind, self.kind)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "precision": self.precision,
            "command": self.describe(),
            "cleanup": self.cleanup,
        }


# ------------------------------------------------------------------------------------------ plan


def smoke_spec(cfg: SmokeConfig, precision: str) -> dict[str, Any]:
    """The deployment spec of one precision (pure): the demo model, one GPU, the runtime under test."""
    quant: dict[str, Any] = {"format": "fp8" if precision == "fp8" else "none"}
    if precision == "fp8":
        quant["calibration"] = {"dataset": "builtin:stdlib", "size": 32, "seq_len": 128}
    return {
        "name": f"smoke-{precision}",
        "description": "tritonforge smoke test: the embedded demo model on this GPU",
        "tiers": [
            {
                "name": "main",
                "model": DEMO,
                "runtime": cfg.runtime,
                "dtype": "float16",
                "quantization": quant,
                "kv_cache": {"paged": True, "block_reuse": True, "tokens_per_block": 32},
                "limits": dict(LIMITS),
                "gpu": {"type": cfg.gpu_type, "count": 1},
                "serving": {"streaming": True, "exclude_input_in_output": True},
            }
        ],
        "triton": {"image": cfg.image, "trtllm_version": cfg.trtllm_version},
    }


def precision_problem(cfg: SmokeConfig, precision: str) -> str | None:
    """Why `precision` cannot run on this GPU, by the plan's own rules (None when it can)."""
    from tritonforge.builder import rules
    from tritonforge.builder.gpus import get_gpu
    from tritonforge.builder.modelref import resolve_model
    from tritonforge.builder.planner import plan_tier
    from tritonforge.builder.spec import DeploymentSpec

    spec = DeploymentSpec.model_validate(smoke_spec(cfg, precision))
    tier = spec.tiers[0]
    config = resolve_model(DEMO).config
    gpu = replace(get_gpu(cfg.gpu_type), sm=cfg.sm)
    plan = plan_tier(tier, config, gpu)
    errors = [p for p in rules.check_tier(tier, plan, None, config) if p.severity == "error"]
    return errors[0].message.removeprefix("tier main: ") if errors else None


def _tf(cfg: SmokeConfig, *args: str) -> tuple[str, ...]:
    return (cfg.python, "-m", "tritonforge", *args)


def engine_steps(cfg: SmokeConfig, precision: str) -> list[Step]:
    """trtllm-engine: quantize/build in the container, emit, serve with the backend's launch, check, stop."""
    d = cfg.out_dir / precision
    spec, build, repo = d / "spec.yaml", d / "build", d / "repo"
    container = f"tritonforge-smoke-{precision}-{os.getpid()}"
    min_first = MIN_FIRST_TOKEN_AGREEMENT[precision]
    return [
        Step(
            f"{precision}/spec",
            "write-spec",
            precision,
            params={"path": str(spec), "spec": smoke_spec(cfg, precision)},
        ),
        Step(
            f"{precision}/build",
            "command",
            precision,
            _tf(cfg, "build", str(spec), "-o", str(build), "--docker", cfg.image, "--json"),
            params={"log": str(d / "build.log"), "manifest": str(build / MANIFEST)},
            timeout_s=cfg.build_timeout_s,
        ),
        Step(
            f"{precision}/emit",
            "command",
            precision,
            _tf(cfg, "emit", str(spec), "-o", str(repo), "--build-dir", str(build), "--json"),
            params={"log": str(d / "emit.log")},
        ),
        Step(
            f"{precision}/serve",
            "serve",
            precision,
            params={
                "repo": str(repo),
                "image": cfg.image,
                "container": container,
                "http_url": cfg.http_url,
                "ports": [cfg.http_port, cfg.grpc_port, cfg.metrics_port],
                "log": str(d / "server.log"),
            },
            timeout_s=cfg.serve_timeout_s,
        ),
        Step(
            f"{precision}/agreement",
            "agreement",
            precision,
            params={
                "url": cfg.grpc_url,
                "model": "tensorrt_llm",
                "prompts": list(cfg.prompts),
                "max_tokens": cfg.max_tokens,
                "model_ref": DEMO,
                "min_first_token_agreement": min_first,
            },
        ),
        Step(
            f"{precision}/stream-http",
            "stream-http",
            precision,
            params={
                "url": cfg.http_url,
                "model": "ensemble",
                "prompt": cfg.prompts[0],
                "max_tokens": cfg.max_tokens,
            },
        ),
        Step(
            f"{precision}/stream-grpc",
            "stream-grpc",
            precision,
            params={
                "url": cfg.grpc_url,
                "http_url": cfg.http_url,
                "model": "ensemble",
                "prompt": cfg.prompts[0],
                "max_tokens": cfg.max_tokens,
            },
        ),
        Step(
            f"{precision}/loadtest",
            "loadtest",
            precision,
            _tf(
                cfg,
                "loadtest",
                "--url",
                cfg.http_url,
                "--model",
                "ensemble",
                "--users",
                str(cfg.load_users),
                "--duration",
                f"{cfg.load_seconds}s",
                "--workload",
                LOAD_WORKLOAD,
                "--gpu",
                cfg.gpu_type,
                "--repo",
                str(repo),
                "--build-dir",
                str(build),
                "-o",
                str(d / "load"),
            ),
            params={"log": str(d / "loadtest.log"), "report": str(d / "load" / "report.json")},
            timeout_s=cfg.load_seconds * 4 + 300,
        ),
        Step(
            f"{precision}/stop",
            "stop",
            precision,
            params={"container": container},
            timeout_s=120,
            cleanup=True,
        ),
    ]


def pytorch_steps(cfg: SmokeConfig, precision: str) -> list[Step]:
    """trtllm-pytorch: the engine steps with the build replaced by the HF checkpoint export.

    `tritonforge build` of a trtllm-pytorch spec runs ModelOpt's unified HF checkpoint export in the
    container (no trtllm-build); `emit` writes the LLM API Python model over that checkpoint, and the serve
    step's launch (`builder.launch`) runs one tritonserver rank while the LLM API spawns its own workers.
    """
    steps = engine_steps(cfg, precision)
    out = []
    for st in steps:
        if st.name == f"{precision}/build":
            st = replace(
                st,
                name=f"{precision}/export",
                params={**st.params, "checkpoint": "unified HF checkpoint (ModelOpt export_hf_checkpoint)"},
            )
        out.append(st)
    return out


# runtime -> the steps of one precision. A new target registers its own here.
RUNTIMES: dict[str, Callable[[SmokeConfig, str], list[Step]]] = {
    "trtllm-engine": engine_steps,
    "trtllm-pytorch": pytorch_steps,
}


def check_runtime(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise UserError(
            f"smoke --runtime {runtime}: not available in this tritonforge (it has no {runtime} target "
            f"yet); use --runtime {', '.join(RUNTIMES)}"
        )


def plan_precisions(cfg: SmokeConfig) -> tuple[list[str], dict[str, str]]:
    """(precisions to run, {skipped precision: why}) on this GPU."""
    run, skipped = [], {}
    for p in PRECISIONS:
        why = precision_problem(cfg, p)
        if why is None:
            run.append(p)
        else:
            skipped[p] = why
    return run, skipped


def plan_steps(cfg: SmokeConfig) -> list[Step]:
    """Every step of the run, in order (pure apart from reading the demo model's config)."""
    check_runtime(cfg.runtime)
    run, _ = plan_precisions(cfg)
    if "fp16" not in run:
        raise UserError(
            f"the demo model cannot be planned in FP16 on sm{cfg.sm}: {precision_problem(cfg, 'fp16')}"
        )
    steps = [
        Step("doctor", "doctor", params={"image": cfg.image, "spec": smoke_spec(cfg, "fp16")}, timeout_s=900)
    ]
    for p in run:
        steps += RUNTIMES[cfg.runtime](cfg, p)
    return steps


# ------------------------------------------------------------------------------------- agreement


def _strip_end(tokens: Sequence[int], end_id: int | None) -> list[int]:
    out = list(tokens)
    while end_id is not None and out and out[-1] == end_id:
        out.pop()
    return out


def token_agreement(
    reference: Sequence[Sequence[int]], got: Sequence[Sequence[int]], end_id: int | None = None
) -> dict[str, Any]:
    """How far greedy outputs agree, prompt by prompt (trailing end ids ignored: one engine may return
    the end token, the other not).

    first_token: share of prompts whose first token matches; exact: share identical; prefix: mean share
    of the longer output covered by the common prefix; positional: matching positions over all positions
    of the longer outputs; first_divergence: per prompt, the first differing index (None when identical).
    """
    if len(reference) != len(got) or not reference:
        raise ValueError("token_agreement needs one output per prompt on both sides")
    per: list[dict[str, Any]] = []
    for ref, out in zip(reference, got, strict=True):
        a, b = _strip_end(ref, end_id), _strip_end(out, end_id)
        longest = max(len(a), len(b))
        prefix = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        same = sum(1 for x, y in zip(a, b, strict=False) if x == y)
        per.append(
            {
                "reference_tokens": len(a),
                "tokens": len(b),
                "common_prefix": prefix,
                "first_divergence": None if a == b else prefix,
                "matching_positions": same,
                "positions": longest,
            }
        )
    n = len(per)
    positions = sum(p["positions"] for p in per)
    return {
        "prompts": n,
        "first_token": round(sum(1 for p in per if p["common_prefix"] >= 1 or p["positions"] == 0) / n, 4),
        "exact": round(sum(1 for p in per if p["first_divergence"] is None) / n, 4),
        "prefix": round(
            sum(p["common_prefix"] / p["positions"] if p["positions"] else 1.0 for p in per) / n, 4
        ),
        "positional": round(sum(p["matching_positions"] for p in per) / positions, 4) if positions else 1.0,
        "per_prompt": per,
    }


def tokenize(model_dir: str, prompts: Sequence[str]) -> tuple[list[list[int]], int | None, int | None]:
    """Prompt token ids with the model's own tokenizer, and its end / pad ids."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = [list(tok(p)["input_ids"]) for p in prompts]
    return ids, tok.eos_token_id, tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def reference_tokens(
    model_dir: str,
    input_ids: Sequence[Sequence[int]],
    max_tokens: int,
    end_id: int | None,
    pad_id: int | None,
) -> list[list[int]]:
    """Greedy outputs of the CPU reference engine (in this process, FP32) for each prompt."""
    import threading

    from tritonforge.model_repo_templates.tf_runtime.engine import CpuEngine, GenerationRequest

    longest = max(len(i) for i in input_ids)
    out: list[list[int]] = []
    with CpuEngine(
        model_dir,
        max_batch_size=1,
        max_num_tokens=max(256, longest),
        max_input_len=longest + 1,
        max_seq_len=longest + max_tokens + 2,
        num_threads=None,
    ) as eng:
        for ids in input_ids:
            done = threading.Event()
            tokens: list[int] = []
            errors: list[str] = []

            def on_chunk(c, tokens=tokens, errors=errors, done=done) -> None:
                tokens.extend(c.token_ids)
                if c.finished:
                    if c.error:
                        errors.append(c.error)
                    done.set()

            eng.submit(
                GenerationRequest(list(ids), max_tokens, end_id=end_id, pad_id=pad_id, streaming=True),
                on_chunk,
            )
            if not done.wait(300):
                raise UserError("the CPU reference engine did not finish a prompt within 300 s")
            if errors:
                raise UserError(f"the CPU reference engine failed: {errors[0]}")
            out.append(tokens)
    return out


def served_tokens(
    grpc_url: str,
    model: str,
    input_ids: Sequence[Sequence[int]],
    max_tokens: int,
    end_id: int | None,
    pad_id: int | None,
    timeout: float = 120.0,
) -> list[list[int]]:
    """Greedy `output_ids` of a served `tensorrt_llm` model (the backend's tensor contract), over gRPC
    streaming, which serves decoupled and non-decoupled models alike. Inputs carry the batch dimension
    (max_batch_size > 0 in the backend's config)."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    def tensor(name: str, value: Any, dtype: Any) -> Any:
        arr = np.asarray(value, dtype=dtype)
        t = grpcclient.InferInput(name, list(arr.shape), "BOOL" if dtype is bool else "INT32")
        t.set_data_from_numpy(arr)
        return t

    results: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(grpc_url)
    out: list[list[int]] = []
    try:
        client.start_stream(callback=lambda result, error: results.put((result, error)))
        for i, ids in enumerate(input_ids):
            inputs = [
                tensor("input_ids", [list(ids)], np.int32),
                tensor("input_lengths", [[len(ids)]], np.int32),
                tensor("request_output_len", [[max_tokens]], np.int32),
                tensor("streaming", [[False]], bool),
                tensor("exclude_input_in_output", [[True]], bool),
            ]
            if end_id is not None:
                inputs.append(tensor("end_id", [[end_id]], np.int32))
            if pad_id is not None:
                inputs.append(tensor("pad_id", [[pad_id]], np.int32))
            client.async_stream_infer(model, inputs, request_id=str(i), enable_empty_final_response=True)
            tokens: list[int] = []
            while True:
                try:
                    result, error = results.get(timeout=timeout)
                except queue.Empty:
                    raise UserError(f"{model}: no response within {timeout:g}s for prompt {i}") from None
                if error is not None:
                    raise UserError(f"{model}: {error}")
                ids_out = result.as_numpy("output_ids")
                if ids_out is not None and ids_out.size:
                    row = ids_out.reshape(-1).tolist()
                    lengths = result.as_numpy("sequence_length")
                    if lengths is not None and lengths.size and 0 <= int(lengths.reshape(-1)[0]) <= len(row):
                        row = row[: int(lengths.reshape(-1)[0])]
                    tokens.extend(int(t) for t in row)
                final = result.get_response().parameters.get("triton_final_response")
                if final is not None and final.bool_param:
                    break
            out.append(tokens)
    finally:
        client.stop_stream()
        client.close()
    return out


def measure_agreement(
    grpc_url: str, model: str, model_dir: str, prompts: Sequence[str], max_tokens: int
) -> dict:
    """Served greedy tokens against the CPU reference engine's on the same prompts and token ids."""
    ids, end_id, pad_id = tokenize(model_dir, prompts)
    t0 = time.perf_counter()
    got = served_tokens(grpc_url, model, ids, max_tokens, end_id, pad_id)
    served_s = time.perf_counter() - t0
    ref = reference_tokens(model_dir, ids, max_tokens, end_id, pad_id)
    result = token_agreement(ref, got, end_id)
    result.update({"max_tokens": max_tokens, "served_s": round(served_s, 3), "end_id": end_id})
    return result


# ------------------------------------------------------------------------------------------ report


STEP_STATUSES = ("ok", "failed", "skipped")


def build_report(
    cfg: SmokeConfig,
    steps: list[dict[str, Any]],
    *,
    host: dict[str, Any] | None = None,
    container: dict[str, Any] | None = None,
    skipped_precisions: dict[str, str] | None = None,
    started: float | None = None,
) -> dict[str, Any]:
    """The report (pure): what ran, how long, agreement and throughput per precision, and the failure."""
    import tritonforge

    failed = next((s for s in steps if s["status"] == "failed" and not s.get("cleanup")), None) or next(
        (s for s in steps if s["status"] == "failed"), None
    )
    agreement = {
        s["precision"]: s["details"] for s in steps if s["kind"] == "agreement" and s["status"] == "ok"
    }
    throughput = {
        s["precision"]: s["details"].get("summary")
        for s in steps
        if s["kind"] == "loadtest" and s["status"] == "ok"
    }
    return {
        "schema": SCHEMA,
        "tritonforge_version": tritonforge.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "runtime": cfg.runtime,
        "ok": failed is None and bool(steps) and all(s["status"] == "ok" for s in steps),
        "failed_step": failed["name"] if failed else None,
        "reason": failed["error"] if failed else None,
        "host": {"platform": platform.platform(), "python": platform.python_version(), **(host or {})},
        "gpu": {"sm": cfg.sm, "catalog": cfg.gpu_type},
        "versions": {
            "image": cfg.image,
            "trtllm_target": cfg.trtllm_version,
            "modelopt_target": versions.MODELOPT_VERSION,
            "container": container or {},
        },
        "settings": {
            "prompts": len(cfg.prompts),
            "max_tokens": cfg.max_tokens,
            "load_seconds": cfg.load_seconds,
            "load_users": cfg.load_users,
            "load_workload": LOAD_WORKLOAD,
            "min_first_token_agreement": MIN_FIRST_TOKEN_AGREEMENT,
        },
        "precisions": sorted({s["precision"] for s in steps if s.get("precision")}, key=PRECISIONS.index),
        "skipped_precisions": skipped_precisions or {},
        "steps": steps,
        "timings_s": {s["name"]: s["seconds"] for s in steps},
        "total_s": round(time.time() - started, 3) if started else round(sum(s["seconds"] for s in steps), 3),
        "agreement": agreement,
        "throughput": throughput,
    }


def report_problems(report: dict[str, Any]) -> list[str]:
    """What is wrong with a report's shape (empty when it is a valid smoke report)."""
    problems = []
    need: dict[str, type | tuple[type, ...]] = {
        "schema": str,
        "tritonforge_version": str,
        "created": str,
        "runtime": str,
        "ok": bool,
        "host": dict,
        "gpu": dict,
        "versions": dict,
        "precisions": list,
        "skipped_precisions": dict,
        "steps": list,
        "timings_s": dict,
        "total_s": (int, float),
        "agreement": dict,
        "throughput": dict,
        "settings": dict,
    }
    for key, typ in need.items():
        if not isinstance(report.get(key), typ):
            problems.append(f"{key}: missing or not {typ}")
    if report.get("schema") != SCHEMA:
        problems.append(f"schema is not {SCHEMA}")
    for i, s in enumerate(report.get("steps") or []):
        for key in ("name", "kind", "status", "seconds", "command"):
            if key not in s:
                problems.append(f"steps[{i}]: no {key}")
        if s.get("status") not in STEP_STATUSES:
            problems.append(f"steps[{i}]: status {s.get('status')!r} not one of {STEP_STATUSES}")
    if report.get("ok") is False and not report.get("failed_step"):
        problems.append("ok is false but failed_step is empty")
    if report.get("ok") and report.get("failed_step"):
        problems.append("ok is true but a step failed")
    return problems


def write_report(out_dir: Path, report: dict[str, Any]) -> Path:
    """Write atomically (temp file + rename): a reader never sees half a report."""
    problems = report_problems(report)
    if problems:
        raise ValueError(f"smoke report does not follow {SCHEMA}: {problems[0]}")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REPORT
    tmp = path.with_name(f".{REPORT}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------- executor


class StepFailed(Exception):
    """A step did not do what it must; the message says why (one line)."""


def _tail(path: Path, n: int = 3) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in lines if ln.startswith("error:")]
    return " | ".join((errors or lines)[-n:])[:600]


class Executor:
    """Runs planned steps in order, recording each; a failed step stops the run (cleanup steps still run)."""

    def __init__(self, cfg: SmokeConfig, progress: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.say = progress or (lambda _m: None)
        self.servers: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Any] = {}
        self.container: dict[str, Any] | None = None
        self.host: dict[str, Any] = {}
        self.handlers: dict[str, Callable[[Step], dict[str, Any]]] = {
            "doctor": self._doctor,
            "write-spec": self._write_spec,
            "command": self._command,
            "serve": self._serve,
            "agreement": self._agreement,
            "stream-http": self._stream_http,
            "stream-grpc": self._stream_grpc,
            "loadtest": self._loadtest,
            "stop": self._stop,
        }

    def run(self, steps: Sequence[Step], skipped_precisions: dict[str, str] | None = None) -> dict[str, Any]:
        started = time.time()
        records: list[dict[str, Any]] = []
        failed = False
        try:
            for i, step in enumerate(steps, 1):
                tag = f"[smoke {i}/{len(steps)}] {step.name}"
                if failed and not step.cleanup:
                    records.append(
                        {
                            **step.to_dict(),
                            "status": "skipped",
                            "seconds": 0.0,
                            "details": {},
                            "error": "an earlier step failed",
                        }
                    )
                    continue
                self.say(
                    f"{tag}: {step.describe()[:200]}"
                    + (f"  (log: {step.params['log']})" if "log" in step.params else "")
                )
                t0 = time.perf_counter()
                status, error, details = "ok", None, {}
                try:
                    details = self.handlers[step.kind](step) or {}
                    if details.pop("_skipped", False):
                        status = "skipped"
                except (StepFailed, UserError) as exc:
                    status, error = "failed", str(exc)
                except Exception as exc:  # noqa: BLE001 - any surprise still ends in a report naming the step
                    status, error = "failed", f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"
                secs = round(time.perf_counter() - t0, 3)
                records.append(
                    {**step.to_dict(), "status": status, "seconds": secs, "details": details, "error": error}
                )
                self.say(f"{tag}: {status.upper()} in {secs:.1f}s" + (f": {error}" if error else ""))
                failed = failed or status == "failed"
        finally:
            for name in list(self.servers):  # interrupted: never leave a server behind
                self._stop_container(name)
        return build_report(
            self.cfg,
            records,
            host=self.host,
            container=self.container,
            skipped_precisions=skipped_precisions,
            started=started,
        )

    # -- handlers -------------------------------------------------------------------------------
    def _doctor(self, step: Step) -> dict[str, Any]:
        from tritonforge.builder.doctor import run_doctor
        from tritonforge.builder.spec import DeploymentSpec

        spec = DeploymentSpec.model_validate(step.params["spec"]) if step.params.get("spec") else None
        result = run_doctor(spec, step.params["image"])
        self.container = result.container
        self.host = {
            "gpus": [g.to_dict() for g in result.gpus],
            "driver": result.gpus[0].driver if result.gpus else None,
        }
        blockers = [c for c in result.checks if c.status == "fail" and c.blocker]
        if blockers:
            raise StepFailed(
                f"{blockers[0].name}: {blockers[0].message}"
                + (f"; fix: {blockers[0].fix}" if blockers[0].fix else "")
            )
        return {"checks": [c.to_dict() for c in result.checks]}

    def _write_spec(self, step: Step) -> dict[str, Any]:
        import yaml

        from tritonforge.builder.spec import DeploymentSpec

        DeploymentSpec.model_validate(step.params["spec"])  # a broken plan fails here, not in the build
        path = Path(step.params["path"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(step.params["spec"], sort_keys=False), encoding="utf-8")
        return {"path": str(path)}

    def _run(self, step: Step) -> str:
        log = Path(step.params["log"])
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w", encoding="utf-8") as fh:
            try:
                p = subprocess.run(
                    list(step.argv),
                    stdout=subprocess.PIPE,
                    stderr=fh,
                    text=True,
                    timeout=step.timeout_s,
                    stdin=subprocess.DEVNULL,
                )
            except subprocess.TimeoutExpired:
                raise StepFailed(f"did not finish within {step.timeout_s:g}s (log: {log})") from None
        if p.returncode != 0:
            raise StepFailed(f"exit code {p.returncode}: {_tail(log) or 'no output'} (log: {log})")
        return p.stdout

    def _command(self, step: Step) -> dict[str, Any]:
        out = self._run(step)
        details: dict[str, Any] = {"log": step.params["log"]}
        manifest_path = step.params.get("manifest")
        if manifest_path:
            m = read_manifest(Path(manifest_path).parent)  # schema-checked; a bad one is a UserError
            if m is None:
                raise StepFailed(f"the build wrote no manifest ({manifest_path})")
            tier = (m.get("tiers") or {}).get("main") or {}
            engine: dict[str, Any] = next((s for s in tier.get("steps", []) if s.get("name") == "engine"), {})
            if not tier.get("engine_dir"):
                raise StepFailed(
                    f"no engine was built (engine step {engine.get('status')}: {engine.get('reason')})"
                )
            details.update(
                engine_dir=tier["engine_dir"],
                tools=m.get("tools"),
                quality=tier.get("quality"),
                modelopt_version=tier.get("modelopt_version"),
                step_seconds={s["name"]: s.get("duration_s") for s in tier.get("steps", [])},
            )
        elif out.strip().startswith("{"):
            details["result"] = json.loads(out)
        return details

    def _serve(self, step: Step) -> dict[str, Any]:
        from tritonforge.ensembles.server import (
            Ports,
            docker_command,
            port_in_use,
            repository_launch,
            repository_mounts,
        )
        from tritonforge.ensembles.validate import validate_repository

        p = step.params
        repo, name, log = Path(p["repo"]), p["container"], Path(p["log"])
        problems = validate_repository(repo)
        if problems:
            raise StepFailed(
                f"{problems[0]} ({len(problems)} problem(s); `tritonforge validate {repo}` lists them)"
            )
        busy = [port for port in p["ports"] if port_in_use(port)]
        if busy:
            raise StepFailed(f"port {busy[0]} is in use on this host; stop what holds it or pass --http-port")
        cmd = docker_command(
            p["image"], repo, Ports(*p["ports"]), mounts=repository_mounts(repo), publish_host="127.0.0.1"
        )
        # Not interactive: no TTY here; a name so the container can be stopped.
        cmd = [c for c in cmd if c != "-it"]
        cmd[2:2] = ["--name", name]
        log.parent.mkdir(parents=True, exist_ok=True)
        fh = self.logs[name] = open(log, "wb")  # noqa: SIM115 - closed when the server is stopped
        try:
            self.servers[name] = subprocess.Popen(
                cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        except OSError as exc:
            self.logs.pop(name).close()
            raise StepFailed(
                f"cannot start docker: {exc.strerror or exc}; install Docker and the NVIDIA Container Toolkit"
            ) from None
        t0 = time.monotonic()
        while time.monotonic() - t0 < step.timeout_s:
            if self.servers[name].poll() is not None:
                raise StepFailed(
                    f"the container exited with code {self.servers[name].returncode}: {_tail(log)} (log: {log})"
                )
            try:
                with urllib.request.urlopen(f"{p['http_url']}/v2/health/ready", timeout=2) as r:  # noqa: S310
                    if r.status == 200:
                        launch = repository_launch(repo, p["image"])
                        return {
                            "ready_s": round(time.monotonic() - t0, 2),
                            "command": cmd,
                            "launch_mode": launch.mode,
                            "log": str(log),
                        }
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(1.0)
        raise StepFailed(f"not READY after {step.timeout_s:g}s: {_tail(log)} (log: {log})")

    def _agreement(self, step: Step) -> dict[str, Any]:
        from tritonforge.ensembles.render import resolve_builtin

        p = step.params
        result = measure_agreement(
            p["url"], p["model"], resolve_builtin(p["model_ref"]), p["prompts"], p["max_tokens"]
        )
        result["min_first_token_agreement"] = p["min_first_token_agreement"]
        if result["first_token"] < p["min_first_token_agreement"]:
            raise StepFailed(
                f"first tokens agree on {result['first_token']:.0%} of prompts, below "
                f"{p['min_first_token_agreement']:.0%} (exact {result['exact']:.0%}): the engine does not "
                f"compute what the model does; see the report's agreement.per_prompt"
            )
        return result

    def _stream_http(self, step: Step) -> dict[str, Any]:
        from tritonforge.loadtest.protocols import StdlibHttp, http_request

        p = step.params
        client = StdlibHttp(p["url"], timeout=120)
        try:
            out = http_request(
                client, p["model"], {"prompt": p["prompt"], "max_tokens": p["max_tokens"]}, stream=True
            )
        finally:
            client.close()
        return _stream_result(out)

    def _stream_grpc(self, step: Step) -> dict[str, Any]:
        from tritonforge.loadtest.protocols import GrpcMux, has_batch_dim

        p = step.params
        mux = GrpcMux(p["url"], p["model"], timeout=120, batch_dim=has_batch_dim(p["http_url"], p["model"]))
        try:
            out = mux.request({"prompt": p["prompt"], "max_tokens": p["max_tokens"]}, stream=True)
        finally:
            mux.close()
        return _stream_result(out)

    def _loadtest(self, step: Step) -> dict[str, Any]:
        self._run(step)
        report = json.loads(Path(step.params["report"]).read_text(encoding="utf-8"))
        s = report.get("summary") or {}
        if not s.get("requests") or s.get("failed") == s.get("requests"):
            raise StepFailed(
                f"the load test completed no request ({s.get('failed')} failed); see {step.params['report']}"
            )
        return {"report": step.params["report"], "summary": load_summary(report)}

    def _stop(self, step: Step) -> dict[str, Any]:
        name = step.params["container"]
        if name not in self.servers:
            return {"_skipped": True, "note": "not started"}
        return self._stop_container(name)

    def _stop_container(self, name: str) -> dict[str, Any]:
        proc = self.servers.pop(name)
        try:
            rc = subprocess.run(
                ["docker", "stop", "-t", "30", name], capture_output=True, text=True, timeout=120
            ).returncode
        except (OSError, subprocess.TimeoutExpired):
            rc = None
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        fh = self.logs.pop(name, None)
        if fh is not None:
            fh.close()
        return {"docker_stop_rc": rc}


def load_summary(report: dict[str, Any]) -> dict[str, Any]:
    """Throughput and latency of a `tritonforge loadtest` report.json at its best level (p50 / p90)."""
    s = report.get("summary") or {}
    best = next((lv for lv in report.get("levels") or [] if lv.get("label") == s.get("best_level")), None)
    m = (best or {}).get("metrics") or {}
    out: dict[str, Any] = {
        k: s.get(k)
        for k in (
            "best_level",
            "output_tokens_per_s",
            "requests_per_s",
            "requests",
            "failed",
            "cost_per_1m_output_tokens",
            "load_generator_saturated",
        )
    }
    out["error_rate"] = m.get("error_rate")
    for k in ("ttft_ms", "itl_ms", "e2e_ms"):
        if (m.get(k) or {}).get("count"):
            out[k] = {"p50": m[k].get("p50"), "p90": m[k].get("p90")}
    return out


def _stream_result(out: Any) -> dict[str, Any]:
    if not out.ok:
        raise StepFailed(f"{out.error_type}: {out.error}")
    if out.chunks < 2:
        raise StepFailed(f"expected a stream of several responses, got {out.chunks}")
    return {
        "chunks": out.chunks,
        "ttft_ms": round((out.ttft_s or 0) * 1000, 2),
        "e2e_ms": round((out.e2e_s or 0) * 1000, 2),
        "server_tokens": out.server_tokens,
        "text": out.text[:200],
    }


# ------------------------------------------------------------------------------------------- entry


def detect_gpu() -> tuple[Any, list[Any]]:
    """(first GPU, all GPUs) from nvidia-smi; a UserError naming the problem when there is none."""
    from tritonforge.builder.doctor import Host, query_gpus

    gpus, check = query_gpus(Host())
    if not gpus:
        raise UserError(
            f"no NVIDIA GPU on this host ({check.message}): `tritonforge smoke --gpu` builds and serves "
            f"real engines; run it on a GPU host (`tritonforge doctor` lists what is missing)"
        )
    if gpus[0].sm is None:
        raise UserError("nvidia-smi does not report the GPU's compute capability; update the NVIDIA driver")
    return gpus[0], gpus


def catalog_for(name: str | None, sm: int) -> str:
    """The planner catalog GPU for this GPU: by product name, else one of the same compute capability."""
    from tritonforge.builder.doctor import catalog_gpu

    hit = catalog_gpu(name) if name else None
    if hit is not None:
        return hit.name
    lower = [s for s in SM_CATALOG if s <= sm]
    if not lower:
        raise UserError(f"sm{sm} is older than any GPU tritonforge plans for (sm80+); use an A100 or newer")
    return SM_CATALOG[max(lower)]


def parse_compute_cap(text: str) -> int:
    major, _, minor = text.strip().partition(".")
    if not (major.isdigit() and (minor or "0").isdigit()):
        raise UserError(f"--compute-cap {text!r} is not like 9.0 or 10.0")
    return int(major) * 10 + int(minor or 0)


def dump_steps(steps: Sequence[Step], skipped: dict[str, str]) -> list[str]:
    lines = [f"{i:>2}. {s.name:<18} {s.describe()}" for i, s in enumerate(steps, 1)]
    lines += [f"    {p}: skipped on this GPU: {why}" for p, why in skipped.items()]
    return lines
