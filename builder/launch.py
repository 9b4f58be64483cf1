"""How Triton is launched over a repository with TensorRT-LLM models: pure facts in, argv/env out.

The command is the one the backend's own launcher builds, argument for argument. Source:
https://github.com/NVIDIA/TensorRT-LLM triton_backend/scripts/launch_triton_server.py (the 1.2 line; the
same `get_cmd` as tensorrtllm_backend v0.19+ scripts/launch_triton_server.py), with its defaults: no
--log, no --oversubscribe, no --no-mpi, no --exit_timeout, no --trtllm_llmapi_launch, spawning enabled.

- Leader mode (one TensorRT-LLM model, `--world_size N` = TP x PP): `mpirun --allow-run-as-root`, then
  per rank `-n 1 tritonserver --model-repository=R <ports> [rank > 0: --model-control-mode=explicit
  --load-model=<each TensorRT-LLM model>] <ports> --disable-auto-complete-config
  --backend-config=python,shm-region-prefix-name=prefix<rank>_ :` (`get_cmd` adds the port flags twice).
- Orchestrator mode (`--multi-model`, several TensorRT-LLM models or instances): world size 1 for Triton,
  env TRTLLM_ORCHESTRATOR=1 and TRTLLM_ORCHESTRATOR_SPAWN_PROCESSES=1; the backend spawns each model's
  workers on its `gpu_device_ids`. On Triton newer than 24.06 (`check_triton_version('24.06')` is a
  strict >) the rank also gets --pinned-memory-pool-byte-size=0 --enable-peer-access=false and
  --cuda-memory-pool-byte-size=<j>:0 for every visible GPU j (`number_of_gpus()`, nvidia-smi).
  `participant_ids` are needed only with --disable-spawn-processes, which tritonforge does not use.
- A repository whose only TensorRT-LLM models are PyTorch-backend (LLM API) Python models: the script's
  default world size 1 (`launch_triton_server.py --model_repo=...`, as tensorrtllm_backend docs/llmapi.md
  launches the llmapi model), i.e. `mpirun -n 1 tritonserver ...`; the LLM API spawns its own MPI workers
  for TP x PP, so the GPUs it needs are those of its `gpu_device_ids` (TP x PP per instance).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tritonforge.builder import versions
from tritonforge.builder.spec import DeploymentSpec, Runtime
from tritonforge.errors import UserError

ENGINE_BACKEND = "tensorrtllm"
TRITONSERVER = "/opt/tritonserver/bin/tritonserver"  # the script's --tritonserver default
CONTAINER_REPO = "/models"
# The container side of `docker run -p`: the script's --grpc_port/--http_port/--metrics_port defaults.
CONTAINER_PORTS = {"grpc": 8001, "http": 8000, "metrics": 8002}


class _Parameter(Protocol):
    @property
    def string_value(self) -> str: ...


class _InstanceGroup(Protocol):
    @property
    def count(self) -> int: ...


class ModelConfigView(Protocol):
    """The fields read here of Triton's ModelConfig message: protobuf/model_config.proto in
    https://github.com/triton-inference-server/common."""

    @property
    def backend(self) -> str: ...
    @property
    def parameters(self) -> Mapping[str, _Parameter]: ...
    @property
    def instance_group(self) -> Sequence[_InstanceGroup]: ...


@dataclass(frozen=True)
class EngineModel:
    """One TensorRT-LLM (C++ backend) model of a repository: its name, ranks and GPUs per instance."""

    name: str
    world_size: int  # TP x PP of its engine
    instances: tuple[tuple[int, ...], ...] = ((0,),)  # gpu_device_ids per instance ("0,1;2,3")

    @property
    def gpus(self) -> set[int]:
        return {g for inst in self.instances for g in inst}


@dataclass(frozen=True)
class Launch:
    """What to run inside the container (or on the host): argv, extra environment, GPUs it needs."""

    mode: str  # "plain" (no TensorRT-LLM model) | "leader" | "orchestrator" | "llmapi" (PyTorch backend only)
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    gpus: tuple[int, ...] = ()
    world_size: int = 1

    def docker_gpus(self) -> str:
        """`docker run --gpus` value: devices 0..max(id). Docker renumbers the devices it passes from 0, so
        passing only "2,3" would make gpu_device_ids "2,3" name GPUs the container does not have."""
        if not self.gpus:
            return "all"
        return '"device=' + ",".join(str(g) for g in range(max(self.gpus) + 1)) + '"'

    def docker_env(self) -> list[str]:
        out: list[str] = []
        for k in sorted(self.env):
            out += ["-e", f"{k}={self.env[k]}"]
        return out


def place_tiers(spec: DeploymentSpec) -> dict[str, str]:
    """`gpu_device_ids` per GPU tier, deterministic: tiers take disjoint blocks of `gpu.count` GPUs in spec
    order; instance i of a tier gets TP x PP consecutive ids of its block ("0,1;2,3" for two TP2 instances).

    Format per tensorrtllm_backend docs/model_config.md (`gpu_device_ids`: comma-separated GPU ids,
    semicolons between instances). A draft engine is built with its target's TP and gets the same ids.
    """
    out: dict[str, str] = {}
    next_id = 0
    for t in spec.tiers:
        if t.runtime not in (Runtime.trtllm_engine, Runtime.trtllm_pytorch):
            continue
        world, n = t.parallelism.tp * t.parallelism.pp, t.serving.instance_count
        if world * n > t.gpu.count:
            raise UserError(
                f"tier {t.name}: {n} instance(s) x tp x pp {world} need {world * n} GPUs but gpu.count "
                f"is {t.gpu.count}; set gpu.count: {world * n} or lower serving.instance_count"
            )
        out[t.name] = ";".join(",".join(str(next_id + i * world + r) for r in range(world)) for i in range(n))
        next_id += t.gpu.count
    return out


def parse_gpu_device_ids(value: str) -> tuple[tuple[int, ...], ...]:
    """`gpu_device_ids` as documented in tensorrtllm_backend docs/model_config.md: comma-separated GPU ids,
    semicolons between instances ("0,1;2,3")."""
    try:
        out = tuple(tuple(int(g) for g in inst.split(",")) for inst in value.split(";") if inst.strip())
    except ValueError:
        raise UserError(
            f'gpu_device_ids {value!r} is not like "0", "0,1" or "0,1;2,3"; fix the config'
        ) from None
    return out


def _int(value: object, default: int = 1) -> int:
    """A JSON value as an int; `default` when it is not a number or numeric text."""
    if not isinstance(value, (str, int, float)):
        return default
    try:
        return int(value)
    except ValueError:
        return default


def engine_world_size(engine_dir: str) -> int | None:
    """TP x PP from a built engine's config.json (pretrained_config.mapping), None when not readable here."""
    try:
        cfg = json.loads((Path(engine_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    mapping = (cfg.get("pretrained_config") or {}).get("mapping") or {}
    if "world_size" in mapping:
        return _int(mapping["world_size"])
    if "tp_size" in mapping or "pp_size" in mapping:
        return _int(mapping.get("tp_size", 1)) * _int(mapping.get("pp_size", 1))
    return None


def engine_models(configs: Mapping[str, ModelConfigView]) -> list[EngineModel]:
    """The TensorRT-LLM models of a repository from its parsed configs (name -> ModelConfig protobuf).

    World size: the engine's config.json when it is readable here, else the size of one
    `gpu_device_ids` set, else 1.
    """
    out = []
    for name in sorted(configs):
        cfg = configs[name]
        if getattr(cfg, "backend", "") != ENGINE_BACKEND:
            continue
        params = {k: v.string_value for k, v in cfg.parameters.items()}
        ids = parse_gpu_device_ids(params["gpu_device_ids"]) if params.get("gpu_device_ids") else ()
        world = engine_world_size(params.get("gpt_model_path", "")) or (len(ids[0]) if ids else 1)
        if ids and any(len(inst) != world for inst in ids):
            raise UserError(
                f"{name}: gpu_device_ids {params['gpu_device_ids']!r} must name {world} GPU(s) per "
                f"instance (the engine's TP x PP); fix gpu_device_ids or rebuild the engine"
            )
        out.append(EngineModel(name, world, ids or _default_ids(cfg, world)))
    return out


def _default_ids(cfg: ModelConfigView, world: int) -> tuple[tuple[int, ...], ...]:
    """Consecutive GPU blocks of `world` GPUs, one per instance, for a model without gpu_device_ids."""
    count = sum(g.count for g in cfg.instance_group) or 1
    return tuple(tuple(range(i * world, (i + 1) * world)) for i in range(count))


def llmapi_models(configs: Mapping[str, ModelConfigView]) -> list[EngineModel]:
    """The PyTorch-backend (LLM API) `tensorrt_llm` models of a repository: Python models carrying the
    `llmapi_kwargs` parameter; world size = tensor_parallel_size x pipeline_parallel_size of those kwargs."""
    out = []
    for name in sorted(configs):
        cfg = configs[name]
        if getattr(cfg, "backend", "") != "python":
            continue
        params = {k: v.string_value for k, v in cfg.parameters.items()}
        if "llmapi_kwargs" not in params:
            continue
        try:
            kw = json.loads(params["llmapi_kwargs"])
        except ValueError:
            raise UserError(f"{name}: parameter llmapi_kwargs is not JSON; re-emit the repository") from None
        world = _int(kw.get("tensor_parallel_size", 1)) * _int(kw.get("pipeline_parallel_size", 1))
        ids = parse_gpu_device_ids(params["gpu_device_ids"]) if params.get("gpu_device_ids") else ()
        out.append(EngineModel(name, world, ids or _default_ids(cfg, world)))
    return out


def _ports(ports: Mapping[str, int]) -> list[str]:
    # add_port_config: grpc, http, metrics in this order.
    return [
        f"--grpc-port={ports['grpc']}",
        f"--http-port={ports['http']}",
        f"--metrics-port={ports['metrics']}",
    ]


def launch_command(
    engines: Sequence[EngineModel],
    *,
    model_repo: str = CONTAINER_REPO,
    ports: Mapping[str, int] = CONTAINER_PORTS,
    tritonserver: str = TRITONSERVER,
    triton_release: str = versions.TRITON_CONTAINER,
    llmapi: Sequence[EngineModel] = (),
) -> Launch:
    """The launcher script's command for a repository holding `engines` and LLM API models `llmapi` (pure)."""
    if not engines and not llmapi:
        return Launch("plain", (tritonserver, f"--model-repository={model_repo}", *_ports(ports)))
    gpus = tuple(sorted(set().union(*(e.gpus for e in (*engines, *llmapi)))))
    multi = len(engines) > 1 or any(len(e.instances) > 1 for e in engines)
    if not engines:
        multi, world, env, mode = False, 1, {}, "llmapi"
    elif multi:
        # --multi-model: the script asserts world_size == 1 when spawning (its __main__).
        world, env = 1, {"TRTLLM_ORCHESTRATOR": "1", "TRTLLM_ORCHESTRATOR_SPAWN_PROCESSES": "1"}
        mode = "orchestrator"
    else:
        world, env, mode = engines[0].world_size, {}, "leader"
    names = [e.name for e in engines]
    new_triton = versions.release_tuple(triton_release) > (24, 6)
    visible = (max(gpus) + 1) if gpus else 1  # docker --gpus device=0..N-1: nvidia-smi lists N GPUs
    argv: list[str] = ["mpirun", "--allow-run-as-root"]
    for rank in range(world):
        argv += ["-n", "1", tritonserver, f"--model-repository={model_repo}", *_ports(ports)]
        if rank != 0:
            argv += ["--model-control-mode=explicit", *(f"--load-model={n}" for n in names)]
        if multi and new_triton:
            argv += ["--pinned-memory-pool-byte-size=0", "--enable-peer-access=false"]
            argv += [f"--cuda-memory-pool-byte-size={j}:0" for j in range(visible)]
        argv += [
            *_ports(ports),
            "--disable-auto-complete-config",
            f"--backend-config=python,shm-region-prefix-name=prefix{rank}_",
            ":",
        ]
    return Launch(mode, tuple(argv), env, gpus, world)
