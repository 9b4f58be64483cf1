"""`build_manifest.json`: what a build made, from what, with which tools and commands.

Written by `tritonforge build` (atomically), read by `emit` through `read_manifest` and
`tier_artifacts`. Layout (schema `tritonforge.build_manifest/1`):

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
from dataclasses import asdict, dataclass
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


@dataclass(frozen=True)
class TierArtifacts:
    """What the emitted repository of one tier must point at and be sized for."""

    tier: str
    runtime: str
    engine_dir: str | None  # None until an engine was built
    checkpoint_dir: str | None
    tokenizer_dir: str | None
    max_batch_size: int  # engine max batch = Triton max_batch_size
    max_input_len: int
    max_seq_len: int  # the engine's (a speculative target's includes max_draft_len)
    max_num_tokens: int
    max_beam_width: int
    kv_cache_free_gpu_mem_fraction: float
    enable_kv_cache_reuse: bool
    max_tokens_in_paged_kv_cache: int | None
    gpu_device_ids: str  # "0" or "0,1": the engine's ranks (a draft shares them)
    draft_engine_dir: str | None = None
    draft_checkpoint_dir: str | None = None
    draft_kv_cache_free_gpu_mem_fraction: float | None = None
    num_draft_tokens: int | None = None
    built: bool = False  # engine really built (from a manifest), not just planned
    # Planned KV pools (tokens) of the target and its draft, and the target's --max_draft_len.
    kv_pool_tokens: int | None = None
    draft_kv_pool_tokens: int | None = None
    max_draft_len: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def tier_artifacts(tier_plan, manifest: dict | None = None) -> TierArtifacts:
    """Artifacts of one tier: from the manifest when it has the tier, else from the plan alone.

    `tier_plan` is a `planner.TierPlan` (e.g. `plan_deployment(spec).tier(name)`).
    """
    p = tier_plan
    m = ((manifest or {}).get("tiers") or {}).get(p.name) or {}
    lim = m.get("engine_limits") or {}
    e = p.engine
    draft = p.draft
    return TierArtifacts(
        tier=p.name,
        runtime=p.runtime,
        engine_dir=m.get("engine_dir"),
        checkpoint_dir=m.get("checkpoint_dir"),
        tokenizer_dir=m.get("tokenizer_dir"),
        max_batch_size=int(lim.get("max_batch_size", e.max_batch_size)),
        max_input_len=int(lim.get("max_input_len", e.max_input_len)),
        max_seq_len=int(lim.get("max_seq_len", e.engine_max_seq_len)),
        max_num_tokens=int(lim.get("max_num_tokens", e.max_num_tokens)),
        max_beam_width=int(lim.get("max_beam_width", e.max_beam_width)),
        kv_cache_free_gpu_mem_fraction=float(m.get("kv_cache_free_gpu_mem_fraction", p.memory.kv_fraction)),
        enable_kv_cache_reuse=bool(
            m.get("enable_kv_cache_reuse", (p.block_reuse or draft is not None) and e.paged_context_fmha)
        ),
        max_tokens_in_paged_kv_cache=m.get(
            "max_tokens_in_paged_kv_cache",
            p.memory.kv_pool_tokens if p.memory.kv_pool_capped_by_max_tokens else None,
        ),
        gpu_device_ids=",".join(str(i) for i in range(p.world_size)),
        draft_engine_dir=m.get("draft_engine_dir"),
        draft_checkpoint_dir=m.get("draft_checkpoint_dir"),
        draft_kv_cache_free_gpu_mem_fraction=(
            float(m.get("draft_kv_cache_free_gpu_mem_fraction", draft.memory.kv_fraction)) if draft else None
        ),
        num_draft_tokens=draft.num_draft_tokens if draft else None,
        built=bool(m.get("engine_dir")),
        kv_pool_tokens=p.memory.kv_pool_tokens,
        draft_kv_pool_tokens=draft.memory.kv_pool_tokens if draft else None,
        max_draft_len=int(lim.get("max_draft_len", e.max_draft_len)) if draft else None,
    )


def deployment_artifacts(spec, build_dir: str | Path | None = None) -> dict[str, TierArtifacts]:
    """Per tier: engine dir / tokenizer dir / limits for `emit` (manifest in build_dir when present,
    else `build/<spec name>`; the plan's figures when there is no manifest or it is for another spec)."""
    from tritonforge.builder.planner import plan_deployment

    bdir = Path(build_dir) if build_dir else Path("build") / spec.name
    manifest = read_manifest(bdir)
    if manifest and (manifest.get("spec") or {}).get("name") != spec.name:
        manifest = None
    plan = plan_deployment(spec, str(bdir))
    return {t.name: tier_artifacts(t, manifest) for t in plan.tiers}


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
