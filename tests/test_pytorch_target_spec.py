"""The trtllm-pytorch target end to end without a GPU: spec fields, rules, the emitted repository (same client
contract as the engine target's), build steps, launch, and conformance of every LLM API argument tritonforge
writes with TensorRT-LLM's LLM API reference (https://nvidia.github.io/TensorRT-LLM/llm-api/reference.html;
classes in https://github.com/NVIDIA/TensorRT-LLM tensorrt_llm/llmapi/llm_args.py)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tritonforge.builder import llmapi
from tritonforge.builder.build import Executor, plan_commands
from tritonforge.builder.launch import engine_models, launch_command, llmapi_models
from tritonforge.builder.planner import plan_deployment
from tritonforge.builder.spec import parse_spec
from tritonforge.ensembles.render import emit_files
from tritonforge.ensembles.validate import load_configs
from tritonforge.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
STANDIN = ROOT / "tests" / "fixtures" / "llmapi_standin"
PT_EXAMPLES = (
    "llama3.1-8b-fp8-h100-pytorch.yaml",
    "llama3.3-70b-nvfp4-b200-pytorch.yaml",
    "cascade-h100-two-targets.yaml",
)
V121 = {"image": "nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3", "trtllm_version": "1.2.1"}


def example(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / name).read_text())


def tier(**over) -> dict:
    t = {
        "name": "main",
        "model": "/models/Meta-Llama-3.1-8B-Instruct",
        "runtime": "trtllm-pytorch",
        "quantization": {"format": "fp8", "kv_cache_dtype": "fp8"},
    }
    t.update(over)
    return t


# ------------------------------------------------------------------------------------------- spec


@pytest.mark.parametrize(
    "over, needle",
    [
        ({"engine_dir": "/engines/x"}, "engine_dir"),
        ({"kv_cache": {"paged": False}}, "kv_cache.paged"),
        ({"serving": {"cpu_threads": 2}}, "cpu_threads"),
        ({"quantization": {"format": "fp8", "kv_cache_dtype": "int8"}}, "kv_cache_dtype int8"),
        ({"runtime": "trtllm-engine", "pytorch": {"attn_backend": "TRTLLM"}}, "pytorch"),
        ({"pytorch": {"cuda_graph_batch_sizes": [1]}}, "unknown field"),
        ({"pytorch": {"attn_backend": "FLASH"}}, "attn_backend"),
    ],
)
def test_fields_without_meaning_on_the_target_are_refused_in_one_line(over, needle):
    with pytest.raises(UserError) as exc:
        parse_spec({"name": "x", "tiers": [tier(**over)], "triton": V121})
    msg = str(exc.value)
    assert needle in msg and "\n" not in msg


def test_spec_check_cli_exit_2_one_line(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({"name": "x", "tiers": [tier(engine_dir="/e")], "triton": V121}))
    cli = Path(sys.executable).parent / "tritonforge"
    r = subprocess.run([str(cli), "spec", "check", str(p)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "engine_dir" in r.stderr


def test_pytorch_options_are_written_under_their_llm_api_names():
    spec = parse_spec(
        {
            "name": "x",
            "tiers": [
                tier(
                    pytorch={
                        "cuda_graph_config": None,
                        "disable_overlap_scheduler": True,
                        "attn_backend": "FLASHINFER",
                    },
                    serving={"batch_scheduler_policy": "max_utilization", "enable_chunked_context": True},
                )
            ],
            "triton": V121,
        }
    )
    kw = llmapi.llm_kwargs(
        spec.tiers[0],
        "/ckpt",
        trtllm_version="1.2.1",
        limits={"max_batch_size": 8, "max_num_tokens": 2048, "max_seq_len": 1280},
    )
    assert kw["cuda_graph_config"] is None and kw["disable_overlap_scheduler"] is True
    assert kw["attn_backend"] == "FLASHINFER" and kw["enable_chunked_prefill"] is True
    assert kw["scheduler_config"] == {"capacity_scheduler_policy": "MAX_UTILIZATION"}
    assert kw["kv_cache_config"] == {
        "enable_block_reuse": True,
        "free_gpu_memory_fraction": 0.9,
        "dtype": "fp8",
    }


@pytest.mark.parametrize(
    "version, field",
    [
        ("0.21.0", "pytorch_weights_path"),
        ("1.0.0", "speculative_model_dir"),
        ("1.2.1", "speculative_model_dir"),
        ("1.3.0", "speculative_model"),
        ("1.4.0rc1", "speculative_model"),
    ],
)
def test_draft_path_field_per_release(version, field):
    assert llmapi.draft_path_field(version) == field


# ------------------------------------------------------------------------------------------ rules


def _errors(data: dict) -> list[str]:
    spec = parse_spec(data)
    plan = plan_deployment(spec)
    return [p.message for p in plan.errors]


def test_rules_version_and_nvfp4_per_release():
    base = {"name": "x", "tiers": [tier()]}
    assert any(
        "needs TensorRT-LLM 1.0 or newer" in m
        for m in _errors(
            {
                **base,
                "triton": {
                    "image": "nvcr.io/nvidia/tritonserver:24.12-trtllm-python-py3",
                    "trtllm_version": "0.16.0",
                },
            }
        )
    )
    assert _errors({**base, "triton": V121}) == []
    wrong_image = {**base, "triton": {**V121, "image": "nvcr.io/nvidia/tritonserver:24.12-trtllm-python-py3"}}
    assert any("ships TensorRT-LLM 0.16.0" in m for m in _errors(wrong_image))
    nvfp4_h100 = {"name": "x", "tiers": [tier(quantization={"format": "nvfp4"})], "triton": V121}
    assert any("nvfp4" in m for m in _errors(nvfp4_h100))
    on_b200 = {
        "name": "x",
        "tiers": [tier(quantization={"format": "nvfp4"}, gpu={"type": "B200"})],
        "triton": V121,
    }
    assert _errors(on_b200) == []
    later = {
        "name": "x",
        "tiers": [tier(quantization={"format": "nvfp4"})],
        "triton": {"image": "my.registry/trtllm:1.3", "trtllm_version": "1.3.0"},
    }
    assert not any("nvfp4" in m for m in _errors(later))  # Hopper NVFP4 through Marlin from 1.3


def test_gpu_rules_apply_to_the_pytorch_target():
    fp8_a100 = {"name": "x", "tiers": [tier(gpu={"type": "A100-80GB"})], "triton": V121}
    assert any("sm89" in m for m in _errors(fp8_a100))
    tp3 = {"name": "x", "tiers": [tier(parallelism={"tp": 3}, gpu={"count": 3})], "triton": V121}
    assert any("must divide" in m for m in _errors(tp3))


@pytest.mark.parametrize("name", PT_EXAMPLES)
def test_examples_check_plan_emit_validate(name, tmp_path):
    from tritonforge.ensembles.render import write_repository
    from tritonforge.ensembles.validate import validate_repository

    data = example(name)
    assert _errors(data) == []
    files, plan = emit_files(parse_spec(data), EXAMPLES)
    out = tmp_path / "repo"
    write_repository(files, out)
    assert validate_repository(out) == []


# ------------------------------------------------------------------------------- repository contract


def _switch(data: dict, runtime: str, tokenizer: bool = True) -> dict:
    d = copy.deepcopy(data)
    for t in d["tiers"]:
        t["runtime"] = runtime
        t.pop("pytorch", None)
        if tokenizer:
            t.setdefault("tokenizer", f"/models/{t['name']}-tokenizer")  # the same tokenizer on both targets
    return d


def _io(cfg) -> tuple:
    return (
        tuple((t.name, t.data_type, tuple(t.dims), t.optional) for t in cfg.input),
        tuple((t.name, t.data_type, tuple(t.dims)) for t in cfg.output),
    )


def _emit(data: dict, tmp: Path) -> tuple[dict[str, bytes], dict]:
    files, _ = emit_files(parse_spec(data), EXAMPLES)
    for rel, blob in files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(blob)
    return files, load_configs(tmp)[0]


def test_switching_runtime_changes_only_the_engine_model_and_keeps_the_client_contract(tmp_path):
    data = {**example("cascade-h100.yaml"), "triton": V121}
    engine_files, engine_cfgs = _emit(_switch(data, "trtllm-engine"), tmp_path / "e")
    pt_files, pt_cfgs = _emit(_switch(data, "trtllm-pytorch"), tmp_path / "p")
    changed = {p for p in set(engine_files) | set(pt_files) if engine_files.get(p) != pt_files.get(p)}
    engines = {t["name"] + "_tensorrt_llm" for t in data["tiers"]}
    assert changed, "the two targets must differ somewhere"
    assert all(
        p.split("/")[0] in engines or p in ("tritonforge.lock.json", "llm/config.pbtxt") for p in changed
    ), sorted(changed)
    # The entry model's configuration differs only in each tier's version (part of the cache key: a tier
    # moved to another target never serves answers cached from the old one).
    entry = [json.loads(c["llm"].parameters["entry_config"].string_value) for c in (engine_cfgs, pt_cfgs)]
    for t in entry:
        for x in t["tiers"]:
            x.pop("version")
    assert entry[0] == entry[1]
    # The client contract: the entry model and every ensemble, tensor for tensor.
    for name in ["llm", *(t["name"] + "_ensemble" for t in data["tiers"])]:
        assert _io(engine_cfgs[name]) == _io(pt_cfgs[name]), name
        if name != "llm":
            assert engine_cfgs[name].ensemble_scheduling == pt_cfgs[name].ensemble_scheduling
    for e in engines:
        assert engine_cfgs[e].backend == "tensorrtllm" and pt_cfgs[e].backend == "python"
        assert [t.name for t in engine_cfgs[e].input] == [t.name for t in pt_cfgs[e].input]


def test_cpu_reference_stands_in_with_the_same_client_contract(tmp_path):
    data = {
        "name": "x",
        "tiers": [
            tier(
                model="builtin:tiny",
                dtype="float32",
                limits={"max_batch_size": 4, "max_input_len": 64, "max_output_len": 32},
            )
        ],
        "triton": V121,
    }
    cfgs = {
        rt: _emit(_switch(data, rt, tokenizer=False), tmp_path / rt)[1]
        for rt in ("cpu-reference", "trtllm-pytorch", "trtllm-engine")
    }
    for name in ("ensemble", "preprocessing", "postprocessing"):
        assert (
            _io(cfgs["cpu-reference"][name])
            == _io(cfgs["trtllm-pytorch"][name])
            == _io(cfgs["trtllm-engine"][name])
        )
    assert _io(cfgs["cpu-reference"]["tensorrt_llm"]) == _io(cfgs["trtllm-pytorch"]["tensorrt_llm"])


def test_draft_tier_speculates_inside_the_llm_api(tmp_path):
    files, cfgs = _emit(example("llama3.3-70b-nvfp4-b200-pytorch.yaml"), tmp_path)
    assert "tensorrt_llm_draft" not in cfgs and "tensorrt_llm_bls" not in cfgs
    kw = json.loads(cfgs["tensorrt_llm"].parameters["llmapi_kwargs"].string_value)
    assert kw["speculative_config"] == {
        "max_draft_len": 4,
        "speculative_model_dir": "/checkpoints/main/draft_checkpoint",
    }


# ------------------------------------------------------------------------------------ build, launch


def test_build_steps_have_no_engine_on_the_pytorch_target(tmp_path):
    data = {**example("cascade-h100.yaml"), "triton": V121}
    steps = {}
    for rt in ("trtllm-engine", "trtllm-pytorch"):
        spec = parse_spec(_switch(data, rt))
        cmds = plan_commands(plan_deployment(spec, str(tmp_path)), spec, tmp_path, Executor())
        steps[rt] = [(c["tier"], c["step"], c.get("job", {}).get("export_format")) for c in cmds]
    assert ("small", "engine", None) in steps["trtllm-engine"]
    assert [s for s in steps["trtllm-pytorch"] if "engine" in s[1]] == []
    assert ("large", "checkpoint", "hf") in steps["trtllm-pytorch"]
    assert ("large", "checkpoint", "trtllm") in steps["trtllm-engine"]


def test_launch_for_the_pytorch_target(tmp_path):
    data = example("cascade-h100-two-targets.yaml")
    _, cfgs = _emit(data, tmp_path)
    llm_models = llmapi_models(cfgs)
    assert [(m.name, m.world_size, m.instances) for m in llm_models] == [("large_tensorrt_llm", 2, ((1, 2),))]
    launch = launch_command(engine_models(cfgs), llmapi=llm_models)
    assert launch.gpus == (0, 1, 2) and launch.docker_gpus() == '"device=0,1,2"'
    only = launch_command([], llmapi=llm_models)
    assert (
        only.mode == "llmapi"
        and only.world_size == 1
        and only.argv[:4] == ("mpirun", "--allow-run-as-root", "-n", "1")
    )
    assert only.argv.count("-n") == 1 and only.gpus == (1, 2)


# ------------------------------------------------------------------------------------- conformance


def _all_kwargs() -> list[dict]:
    out = []
    for name in PT_EXAMPLES:
        spec = parse_spec(example(name))
        for t in spec.tiers:
            if t.runtime.value == "trtllm-pytorch":
                for version in ("1.0.0", "1.2.1", "1.3.0"):
                    out.append(
                        llmapi.llm_kwargs(
                            t,
                            "/ckpt",
                            trtllm_version=version,
                            draft_dir="/draft",
                            limits={"max_batch_size": 8, "max_num_tokens": 256, "max_seq_len": 99},
                        )
                    )
    return out


def test_every_llm_argument_written_is_documented():
    """Names: https://nvidia.github.io/TensorRT-LLM/llm-api/reference.html (TorchLlmArgs, KvCacheConfig,
    CudaGraphConfig, SchedulerConfig, DraftTargetDecodingConfig)."""
    seen = set()
    for kw in _all_kwargs():
        assert set(kw) <= set(llmapi.DOCUMENTED["LLM"]), set(kw) - set(llmapi.DOCUMENTED["LLM"])
        for key, cls in llmapi.CONFIG_CLASSES.items():
            if kw.get(key) is None:
                continue
            fields = set(llmapi.DOCUMENTED[cls]) | {"speculative_model_dir", "pytorch_weights_path"}
            assert set(kw[key]) <= fields, (cls, set(kw[key]) - fields)
            seen.add(key)
    assert seen >= {"kv_cache_config", "cuda_graph_config", "speculative_config"}


def test_documented_defaults_match_the_standin():
    """Defaults from llm_args.py / sampling_params.py as published (the reference pages render them)."""
    sys.path.insert(0, str(STANDIN))
    try:
        from tensorrt_llm import _standin as s
    finally:
        sys.path.remove(str(STANDIN))
    for cls_name in ("KvCacheConfig", "CudaGraphConfig", "SamplingParams"):
        fields = getattr(s, cls_name).FIELDS
        for name, default in llmapi.DOCUMENTED[cls_name].items():
            assert fields[name] == default, (cls_name, name)
    assert (
        s.SchedulerConfig.FIELDS["capacity_scheduler_policy"].value
        == llmapi.DOCUMENTED["SchedulerConfig"]["capacity_scheduler_policy"]
    )


def test_model_sampling_params_names_are_documented():
    """Every SamplingParams keyword the engine model can write (from its source) is a documented field."""
    text = (ROOT / "model_repo_templates" / "models" / "tensorrt_llm_pytorch.py").read_text()
    import re

    written = set(re.findall(r'kw\["(\w+)"\]', text)) | set(re.findall(r'kw = \{"(\w+)"', text))
    assert written and written <= set(llmapi.DOCUMENTED["SamplingParams"]), written - set(
        llmapi.DOCUMENTED["SamplingParams"]
    )


def test_serve_checks_and_mounts_the_llm_api_checkpoints(tmp_path):
    from tritonforge.ensembles.render import write_repository
    from tritonforge.ensembles.server import check_servable, repository_paths

    files, _ = emit_files(parse_spec(example("llama3.3-70b-nvfp4-b200-pytorch.yaml")), EXAMPLES)
    write_repository(files, tmp_path / "r")
    found = {(p.param, p.value) for p in repository_paths(tmp_path / "r") if p.model == "tensorrt_llm"}
    assert found == {
        ("llmapi_kwargs.model", "/checkpoints/main/checkpoint"),
        ("llmapi_kwargs.speculative_config", "/checkpoints/main/draft_checkpoint"),
    }
    with pytest.raises(UserError, match="checkpoint dir '/checkpoints/main/checkpoint' was never built"):
        check_servable(tmp_path / "r")
