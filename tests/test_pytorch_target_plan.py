"""The trtllm-pytorch target in the planner, `plan`'s text, doctor, predict and the k8s placeholders.

The PyTorch backend has no engine build: the LLM API loads a ModelOpt unified HF checkpoint and sizes the KV
pool as KvCacheConfig.free_gpu_memory_fraction x memory free after the model loads
(https://nvidia.github.io/TensorRT-LLM/examples/kvcacheconfig.html).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from tritonforge.builder import planner, versions
from tritonforge.builder.build_cli import format_plan
from tritonforge.builder.spec import DeploymentSpec, load_spec

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PT = EXAMPLES / "llama3.1-8b-fp8-h100-pytorch.yaml"


def _as(path: Path, runtime: str, tmp_path: Path, **pytorch) -> DeploymentSpec:
    d = yaml.safe_load(path.read_text())
    for t in d["tiers"]:
        t["runtime"] = runtime
        t.pop("engine_dir", None)
        if runtime == "trtllm-engine":
            t.pop("pytorch", None)
        elif pytorch:
            t["pytorch"] = pytorch
    out = tmp_path / f"{runtime}.yaml"
    out.write_text(yaml.safe_dump(d))
    return load_spec(out)


def test_runtime_is_gpu_covers_both_targets() -> None:
    spec = load_spec(PT)
    assert all(planner.runtime_is_gpu(t) for t in spec.tiers)


def test_memory_has_runtime_buffers_not_engine_activations(tmp_path: Path) -> None:
    eng = planner.plan_deployment(_as(PT, "trtllm-engine", tmp_path)).tiers[0]
    pt_on = planner.plan_deployment(_as(PT, "trtllm-pytorch", tmp_path)).tiers[0]
    pt_off = planner.plan_deployment(_as(PT, "trtllm-pytorch", tmp_path, cuda_graph_config=None)).tiers[0]
    # the same forward-pass estimate, + the stated CUDA-graph allowance only when graphs are on
    assert pt_on.memory.activations - eng.memory.activations == planner.PYTORCH_CUDA_GRAPH_BYTES
    assert pt_off.memory.activations == eng.memory.activations
    m = pt_on.memory
    assert m.free_after_load == m.gpu_memory - m.weights - m.activations - m.other_engine
    assert m.kv_pool_bytes <= m.kv_fraction * m.free_after_load


def test_plan_text_per_target(tmp_path: Path) -> None:
    spec = load_spec(EXAMPLES / "cascade-h100-two-targets.yaml")
    plan = planner.plan_deployment(spec)
    text = format_plan(plan, spec.triton.image)
    blocks = text.split("\ntier ")
    eng = next(b for b in blocks if "[trtllm-engine]" in b)
    pt = next(b for b in blocks if "[trtllm-pytorch]" in b)
    assert "trtllm-build" in eng and "activations~" in eng
    assert "trtllm-build" not in pt and "activations~" not in pt and "runtime buffers~" in pt
    assert "unified HF checkpoint (ModelOpt export_hf_checkpoint), no engine build" in pt
    head = text.split("\ntier ")[0]
    v = spec.triton.trtllm_version
    assert f"targets TensorRT-LLM {v} (engines), Triton container {spec.triton.image}" in head
    assert f"targets TensorRT-LLM {v} (PyTorch backend, LLM API)" in head


def test_targets_line_per_runtime() -> None:
    assert versions.targets_line().startswith(f"targets TensorRT-LLM {versions.TRTLLM_VERSION} (engines)")
    line = versions.targets_line("trtllm-pytorch", "1.3.0", "img:1")
    assert line.startswith("targets TensorRT-LLM 1.3.0 (PyTorch backend, LLM API), Triton container img:1")
    assert "engines" not in line


def test_predict_covers_pytorch_tiers() -> None:
    from tritonforge.builder.predict import parse_workload, predict_plan

    plan = planner.plan_deployment(load_spec(PT))
    pred = predict_plan(plan, parse_workload("isl=512,osl=128", 8, None), use_aiconfigurator=False)
    p = next(iter(pred.values()))
    assert p.error is None and p.prediction is not None and p.prediction.output_tokens_per_s > 0
    assert any("calibrated on TensorRT engines" in n for n in p.prediction.notes)


def test_doctor_and_k8s_placeholders() -> None:
    from tritonforge.builder import doctor
    from tritonforge.ensembles import k8s

    spec = load_spec(PT)
    assert "LLM API spawns" in doctor.mpi_needed(spec)
    paths = k8s._placeholder_paths(spec)
    t = spec.tiers[0]
    assert paths[t.name].model_dir == f"/checkpoints/{t.name}/checkpoint"
    assert not any("/engines/" in (p.model_dir or "") for p in paths.values())
