"""Conformance: `serve --docker` runs what the TensorRT-LLM backend's own launcher would run.

No GPU here, so the launcher cannot be run; the expected commands are written by hand from its source,
https://github.com/NVIDIA/TensorRT-LLM triton_backend/scripts/launch_triton_server.py (the 1.x line:
`get_cmd`, `add_port_config`, `add_multi_model_config`, `check_triton_version`, `__main__`; the same code as
https://github.com/triton-inference-server/tensorrtllm_backend v0.19.0 scripts/launch_triton_server.py,
before the backend moved into TensorRT-LLM), with its default options and its defaults
--tritonserver=/opt/tritonserver/bin/tritonserver, --grpc_port=8001, --http_port=8000, --metrics_port=8002:

- `cmd = ['mpirun', '--allow-run-as-root']`; for every rank i < world_size: `-n 1`, the binary,
  `--model-repository=R`, the port flags (grpc, http, metrics), for i != 0 `--model-control-mode=explicit`
  and `--load-model=<name>` per --tensorrt_llm_model_name entry, the multi-model options, the port flags
  again (the script calls add_port_config twice), `--disable-auto-complete-config`,
  `--backend-config=python,shm-region-prefix-name=prefix{i}_`, then `:`.
- --multi-model without --disable-spawn-processes: world size must be 1 (assert in `__main__`), env
  TRTLLM_ORCHESTRATOR=1 and TRTLLM_ORCHESTRATOR_SPAWN_PROCESSES=1, and when NVIDIA_TRITON_SERVER_VERSION
  > 24.06: `--pinned-memory-pool-byte-size=0 --enable-peer-access=false` plus
  `--cuda-memory-pool-byte-size={j}:0` for each GPU nvidia-smi lists.
- Draft + target with TP needs --multi-model: NVIDIA/TensorRT-LLM examples/draft_target_model/README.md
  ("`--multi-model` is necessary if TP mode is used"); several TensorRT-LLM models in one server are
  orchestrator mode: tensorrtllm_backend docs/llama_multi_instance.md.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXAMPLES, ROOT
from tritonforge.builder import versions
from tritonforge.builder.launch import (
    EngineModel,
    engine_models,
    launch_command,
    place_tiers,
)
from tritonforge.builder.planner import Problem, plan_deployment
from tritonforge.builder.spec import load_spec, parse_spec
from tritonforge.ensembles.render import emit_files, write_repository
from tritonforge.ensembles.server import Ports, docker_command, repository_launch
from tritonforge.ensembles.validate import load_configs
from tritonforge.errors import UserError

IMAGE = "nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3"
TS = "/opt/tritonserver/bin/tritonserver"
REPO = "--model-repository=/models"
PORTS = ["--grpc-port=8001", "--http-port=8000", "--metrics-port=8002"]
ORCHESTRATOR_ENV = {"TRTLLM_ORCHESTRATOR": "1", "TRTLLM_ORCHESTRATOR_SPAWN_PROCESSES": "1"}


def _emit(spec, spec_dir: Path, out: Path) -> Path:
    files, _ = emit_files(spec, spec_dir)
    write_repository(files, out)
    return out


def _example(name: str, tmp_path: Path) -> Path:
    return _emit(load_spec(EXAMPLES / name), EXAMPLES, tmp_path / "repo")


def _variant(name: str, tmp_path: Path, **tier: object) -> Path:
    data = yaml.safe_load((EXAMPLES / name).read_text())
    data["tiers"][0].update(copy.deepcopy(tier))
    return _emit(parse_spec(data), EXAMPLES, tmp_path / "repo")


def _container_part(cmd: list[str]) -> list[str]:
    return cmd[cmd.index(IMAGE) + 1 :]


# The launcher's command, piece by piece as its get_cmd builds it (see the module docstring).
def _rank(i: int, loads: tuple[str, ...] = (), pools: list[str] | None = None) -> list[str]:
    """One rank's block: rank i > 0 loads the named models explicitly; the port flags come twice."""
    explicit = ["--model-control-mode=explicit", *(f"--load-model={m}" for m in loads)] if i else []
    return [
        *("-n", "1", TS, REPO, *PORTS),
        *explicit,
        *(pools or []),
        *PORTS,
        "--disable-auto-complete-config",
        f"--backend-config=python,shm-region-prefix-name=prefix{i}_",
        ":",
    ]


def _pools(gpus: int) -> list[str]:
    """The multi-model options on a Triton after 24.06, for the GPUs nvidia-smi lists."""
    return [
        "--pinned-memory-pool-byte-size=0",
        "--enable-peer-access=false",
        *(f"--cuda-memory-pool-byte-size={j}:0" for j in range(gpus)),
    ]


def _mpirun(*ranks: list[str]) -> list[str]:
    return ["mpirun", "--allow-run-as-root", *(a for rank in ranks for a in rank)]


TWO_RANKS = _mpirun(_rank(0), _rank(1, ("tensorrt_llm",)))


def test_tp1_is_a_one_rank_mpi_world(tmp_path: Path) -> None:
    repo = _example("llama3.1-8b-fp8-h100.yaml", tmp_path)
    launch = repository_launch(repo, IMAGE)
    assert launch.mode == "leader" and launch.env == {} and launch.gpus == (0,)
    assert list(launch.argv) == _mpirun(_rank(0))
    cmd = docker_command(IMAGE, repo, Ports(9000, 9001, 9002))
    assert _container_part(cmd) == list(launch.argv)
    assert '--gpus="device=0"' in cmd and "-e" not in cmd
    assert ["-p", "9000:8000"] == cmd[cmd.index("9000:8000") - 1 : cmd.index("9000:8000") + 1]


def test_tp2_leader_mode_has_one_block_per_rank(tmp_path: Path) -> None:
    spec_dir = ROOT / "tests" / "fixtures" / "specs"
    repo = _emit(load_spec(spec_dir / "llama31-70b-fp8-tp2-h100.yaml"), spec_dir, tmp_path / "repo")
    launch = repository_launch(repo, IMAGE)
    assert launch.mode == "leader" and launch.world_size == 2 and launch.env == {} and launch.gpus == (0, 1)
    assert list(launch.argv) == TWO_RANKS
    cmd = docker_command(IMAGE, repo, Ports())
    assert _container_part(cmd) == list(launch.argv) and '--gpus="device=0,1"' in cmd


def test_pp2_world_is_tp_times_pp(tmp_path: Path) -> None:
    repo = _variant(
        "llama3.1-8b-fp8-h100.yaml",
        tmp_path,
        parallelism={"tp": 1, "pp": 2},
        gpu={"type": "H100-SXM", "count": 2},
    )
    launch = repository_launch(repo, IMAGE)
    assert launch.mode == "leader" and launch.world_size == 2
    assert list(launch.argv) == TWO_RANKS


def test_tp2_with_draft_is_orchestrator_mode(tmp_path: Path) -> None:
    repo = _example("llama3.1-70b-fp8-tp2-draft-h100.yaml", tmp_path)
    launch = repository_launch(repo, IMAGE)
    assert launch.mode == "orchestrator" and launch.world_size == 1 and launch.env == ORCHESTRATOR_ENV
    assert list(launch.argv) == _mpirun(_rank(0, pools=_pools(2)))
    cmd = docker_command(IMAGE, repo, Ports())
    assert _container_part(cmd) == list(launch.argv) and '--gpus="device=0,1"' in cmd
    env_flags = [cmd[i + 1] for i, a in enumerate(cmd[: cmd.index(IMAGE)]) if a == "-e"]
    assert env_flags == ["TRTLLM_ORCHESTRATOR=1", "TRTLLM_ORCHESTRATOR_SPAWN_PROCESSES=1"]


def test_triton_2406_gets_no_memory_pool_options(tmp_path: Path) -> None:
    """check_triton_version('24.06') is a strict `>`: a 24.06 container gets only the orchestrator env."""
    repo = _example("llama3.1-70b-fp8-tp2-draft-h100.yaml", tmp_path)
    launch = repository_launch(repo, "nvcr.io/nvidia/tritonserver:24.06-trtllm-python-py3")
    assert launch.env == ORCHESTRATOR_ENV
    assert list(launch.argv) == _mpirun(_rank(0))


def test_two_tier_cascade_is_orchestrator_mode_over_all_its_gpus(tmp_path: Path) -> None:
    repo = _example("cascade-h100.yaml", tmp_path)
    launch = repository_launch(repo, IMAGE)
    assert launch.mode == "orchestrator" and launch.env == ORCHESTRATOR_ENV and launch.gpus == (0, 1, 2)
    assert list(launch.argv) == _mpirun(_rank(0, pools=_pools(3)))
    engines = {e.name: e for e in engine_models(load_configs(repo)[0])}
    assert engines["small_tensorrt_llm"].instances == ((0,),)
    assert engines["large_tensorrt_llm"].instances == ((1, 2),)


def test_leader_rank_loads_every_named_engine_model() -> None:
    """Ranks > 0 load exactly the TensorRT-LLM models (--tensorrt_llm_model_name, comma-separated)."""
    launch = launch_command([EngineModel("large_tensorrt_llm", 2, ((0, 1),))])
    rank1 = list(launch.argv[launch.argv.index(":") + 1 :])
    assert rank1[rank1.index("--model-control-mode=explicit") + 1] == "--load-model=large_tensorrt_llm"
    assert sum(a.startswith("--load-model=") for a in launch.argv) == 1


def test_replicas_use_triton_load_balancing_in_orchestrator_mode(tmp_path: Path) -> None:
    """Two TP2 instances of one model: instance_group count 2 + gpu_device_ids "0,1;2,3"
    (tensorrtllm_backend docs/llama_multi_instance.md, "Using Triton Core's Load Balancing")."""
    repo = _variant(
        "llama3.1-70b-fp8-tp2-draft-h100.yaml",
        tmp_path,
        gpu={"type": "H100-SXM", "count": 4},
        serving={"instance_count": 2},
        draft=None,
    )
    launch = repository_launch(repo, IMAGE)
    assert launch.mode == "orchestrator" and launch.gpus == (0, 1, 2, 3)
    (engine,) = engine_models(load_configs(repo)[0])
    assert engine.instances == ((0, 1), (2, 3))


def test_instances_beyond_gpu_count_are_refused() -> None:
    data = yaml.safe_load((EXAMPLES / "llama3.1-70b-fp8-tp2-draft-h100.yaml").read_text())
    data["tiers"][0]["serving"] = {"instance_count": 2}
    with pytest.raises(UserError, match="need 4 GPUs but gpu.count is 2"):
        place_tiers(parse_spec(data))


def test_no_engine_model_is_a_plain_tritonserver() -> None:
    launch = launch_command([])
    assert (
        launch.mode == "plain" and list(launch.argv) == [TS, REPO, *PORTS] and launch.docker_gpus() == "all"
    )


# --- the targeted versions (Triton's trtllm-python-py3 compatibility matrix:
# https://github.com/triton-inference-server/server docs/introduction/compatibility.md) -------------------


def test_targeted_image_ships_the_targeted_trtllm_and_it_has_engines() -> None:
    assert versions.image_trtllm(versions.TRITON_IMAGE) == versions.TRTLLM_VERSION
    assert tuple(int(x) for x in versions.TRTLLM_VERSION.split(".")[:2]) == versions.MAX_ENGINE_TRTLLM
    assert versions.images_for(versions.TRTLLM_VERSION)[0] == versions.TRITON_IMAGE  # the newest such tag
    line = versions.targets_line()
    assert (
        versions.TRTLLM_VERSION in line
        and versions.TRITON_IMAGE in line
        and versions.MODELOPT_VERSION in line
    )


def _image_errors(image: str) -> list[Problem]:
    """The plan's trtllm-image errors for an engine tier that targets the default TensorRT-LLM in `image`."""
    spec = parse_spec(
        {
            "name": "v",
            "triton": {"image": image, "trtllm_version": versions.TRTLLM_VERSION},
            "tiers": [{"name": "main", "model": "fixture:llama-3.1-8b", "runtime": "trtllm-engine"}],
        }
    )
    return [p for p in plan_deployment(spec).errors if p.rule == "trtllm-image"]


def test_image_that_ships_another_trtllm_is_refused() -> None:
    errors = _image_errors("nvcr.io/nvidia/tritonserver:24.12-trtllm-python-py3")
    assert len(errors) == 1 and "ships TensorRT-LLM 0.16.0" in errors[0].message
    assert f"set triton.image: {versions.TRITON_IMAGE}" in errors[0].message
    assert _image_errors(versions.TRITON_IMAGE) == []
    # An image the matrix does not list (a custom build) is the user's call.
    assert _image_errors("registry.example/triton:custom") == []


def test_docker_passes_every_device_up_to_the_highest_id() -> None:
    """A hand-written model on GPUs 2,3: docker renumbers passed devices from 0, so it gets 0-3 and the
    launcher's nvidia-smi count (memory-pool options) covers all four."""
    launch = launch_command([EngineModel("a", 2, ((2, 3),)), EngineModel("b", 1, ((0,),))])
    assert launch.docker_gpus() == '"device=0,1,2,3"' and launch.gpus == (0, 2, 3)
    assert [a for a in launch.argv if a.startswith("--cuda-memory-pool-byte-size=")] == [
        f"--cuda-memory-pool-byte-size={j}:0" for j in range(4)
    ]
