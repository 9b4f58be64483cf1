"""Conformance: every emitted TensorRT-LLM model is placed by `gpu_device_ids`, never by instance_group.

Sources (no GPU here, so these are checked against the documented interface):
- https://github.com/triton-inference-server/tensorrtllm_backend docs/llama_multi_instance.md: "the
  TensorRT-LLM backend does not support using `instance_group` setting for determining the placement of
  model instances on different GPUs"; its examples use `instance_group [{kind: KIND_CPU, count: N}]` with
  `gpu_device_ids` "0,1;2,3" (one set per instance).
- same repository, docs/model_config.md: `gpu_device_ids` is a comma-separated list of GPU ids, semicolons
  between instances; `participant_ids` is needed only with --disable-spawn-processes (not used here).
- https://github.com/NVIDIA/TensorRT-LLM examples/draft_target_model/README.md: draft and target may share
  GPUs (DRAFT_GPU_DEVICE_IDS may equal TARGET_GPU_DEVICE_IDS), each model names its own ids.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES
from tritonforge.builder.launch import parse_gpu_device_ids
from tritonforge.ensembles.triton_schema import model_config_pb2 as mc
from tritonforge.ensembles.validate import load_configs

# example -> {TensorRT-LLM model: gpu_device_ids}: tiers take disjoint GPU blocks in spec order; a draft
# engine is built with its target's TP and shares its GPUs (the plan splits the memory fractions).
EXPECTED = {
    "llama3.1-8b-fp8-h100.yaml": {"tensorrt_llm": "0"},
    "llama3.1-70b-fp8-tp2-draft-h100.yaml": {"tensorrt_llm": "0,1", "tensorrt_llm_draft": "0,1"},
    "cascade-h100.yaml": {"small_tensorrt_llm": "0", "large_tensorrt_llm": "1,2"},
}


@pytest.fixture(scope="module")
def emitted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The GPU examples emitted through the CLI, as a user would (`tritonforge emit EX -o DIR`)."""
    out = {}
    for name in EXPECTED:
        repo = tmp_path_factory.mktemp("gpu-emit") / "repo"
        proc = subprocess.run(
            [sys.executable, "-m", "tritonforge", "emit", str(EXAMPLES / name), "-o", str(repo)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        out[name] = repo
    return out


@pytest.mark.parametrize("example", sorted(EXPECTED))
def test_engine_models_are_kind_cpu_count_1_with_gpu_device_ids(
    emitted: dict[str, Path], example: str
) -> None:
    configs, problems = load_configs(emitted[example])
    assert not problems
    engines = {n: c for n, c in configs.items() if c.backend == "tensorrtllm"}
    assert set(engines) == set(EXPECTED[example])
    for name, cfg in engines.items():
        groups = [(g.kind, g.count) for g in cfg.instance_group]
        assert groups == [(mc.ModelInstanceGroup.KIND_CPU, 1)], f"{name}: {groups}"
        assert cfg.parameters["gpu_device_ids"].string_value == EXPECTED[example][name]


def test_cascade_tiers_are_on_disjoint_gpus(emitted: dict[str, Path]) -> None:
    configs, _ = load_configs(emitted["cascade-h100.yaml"])
    sets = {
        n: set(parse_gpu_device_ids(c.parameters["gpu_device_ids"].string_value)[0])
        for n, c in configs.items()
        if c.backend == "tensorrtllm"
    }
    assert sets["small_tensorrt_llm"].isdisjoint(sets["large_tensorrt_llm"])
    assert len(sets["large_tensorrt_llm"]) == 2  # tp 2


def test_no_kind_gpu_anywhere(emitted: dict[str, Path]) -> None:
    """KIND_GPU would make Triton create one executor per visible GPU, all on the device the backend picks."""
    for repo in emitted.values():
        for path in repo.glob("*/config.pbtxt"):
            assert "KIND_GPU" not in path.read_text(), path


def test_gpu_device_ids_format() -> None:
    assert parse_gpu_device_ids("0") == ((0,),)
    assert parse_gpu_device_ids("0,1;2,3") == ((0, 1), (2, 3))
