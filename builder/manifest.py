"""`build_manifest.json`: what a build made, from what, with which tools and commands.

Written by `tritonforge build` (atomically), read by `emit` through `read_manifest` and
`builder.engine_facts`. Layout (schema `tritonforge.build_manifest/1`):

    {"schema", "tritonforge_version", "created", "spec": {"name", "path", "hash"},
     "target": {"trtllm_version", "executor", "docker_image"}, "tools": {...},
     "complete": false when the build was interrupted or a step failed,
     "tiers": {NAME: {"runtime", "model": {"ref", "path", "sha256"}, "checkpoint_dir", "engine_dir",
                      "tokenizer_dir", "draft_checkpoint_dir", "draft_engine_dir", "engine_limits",
                      "kv_cache_free_gpu_mem_fraction", "draft_kv_cache_free_gpu_mem_fraction",
                      "num_draft_tokens", "enable_kv_cache_reuse", "calibration", "modelopt_version",
                      "quality", "draft_quality", "steps": [StepResult...]}}}

`engine_dir` / `draft_engine_dir` are null until an engine was really built (never faked);
`engine_limits` are the limits the engine is built with (engine max batch = Triton max batch).
`calibration` says where the calibration text came from: {"requested", "kind": reference | file |
builtin, "used", "fallback" (why the reference set was not loadable), "eval"}; `modelopt_version` is
the ModelOpt that quantized the checkpoint (inside the container with --docker; `tools.modelopt` is
this host's). A checkpoint step's details add the calibration windows, their sha256 and the placement
(device map) of the model during quantization.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from tritonforge.errors import UserError

MANIFEST = "build_manifest.json"
SCHEMA = "tritonforge.build_manifest/1"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def trtllm_installed_version() -> str | None:
    """The installed TensorRT-LLM's version (package metadata; nothing heavy is imported)."""
    return _version("tensorrt_llm") or _version("tensorrt-llm")


def gpu_info() -> dict[str, Any]:
    """GPU names and driver from nvidia-smi, when there is one."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return {"gpus": [], "driver": None}
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return {"gpus": [], "driver": None}
    rows = [[c.strip() for c in line.split(",")] for line in out.strip().splitlines() if line.strip()]
    return {
        "gpus": [{"name": r[0], "memory": r[2] if len(r) > 2 else None} for r in rows],
        "driver": rows[0][1] if rows else None,
    }


def tool_versions(with_torch: bool = True) -> dict[str, Any]:
    """TensorRT-LLM, ModelOpt, torch, transformers, CUDA, driver and GPUs (None where absent)."""
    tools: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "tensorrt_llm": trtllm_installed_version(),
        "trtllm_build": shutil.which("trtllm-build"),
        "modelopt": _version("nvidia-modelopt"),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "cuda": None,
    }
    if with_torch and tools["torch"]:
        import torch

        tools["cuda"] = torch.version.cuda
        tools["cuda_available"] = bool(torch.cuda.is_available())
    tools.update(gpu_info())
    return tools


def write_manifest(build_dir: Path, manifest: dict) -> Path:
    """Write atomically (temp file + rename)."""
    build_dir.mkdir(parents=True, exist_ok=True)
    path = build_dir / MANIFEST
    tmp = path.with_name(f".{MANIFEST}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_manifest(build_dir: str | Path) -> dict | None:
    """The build manifest in `build_dir`, or None when there is none."""
    path = Path(build_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg}); rerun `tritonforge build`") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise UserError(f"{path}: not a tritonforge build manifest ({SCHEMA}); rerun `tritonforge build`")
    return data


def manifest_skeleton(
    spec, spec_path: str | None, executor: str, docker_image: str | None, tools: dict
) -> dict:
    import tritonforge

    return {
        "schema": SCHEMA,
        "tritonforge_version": tritonforge.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "spec": {"name": spec.name, "path": spec_path, "hash": spec.spec_hash()},
        "target": {
            "trtllm_version": spec.triton.trtllm_version,
            "executor": executor,
            "docker_image": docker_image,
        },
        "tools": tools,
        "tiers": {},
    }
