"""Real ModelOpt exports for the trtllm-pytorch target on the CPU: unified Hugging Face checkpoints (ModelOpt's
`export_hf_checkpoint`, https://nvidia.github.io/TensorRT-Model-Optimizer/ modelopt.torch.export) that
TensorRT-LLM's LLM API loads, through the same build steps, manifest, resume and quality gate as the engine
target. Nothing of ModelOpt is mocked; the model is the embedded (trained) `builtin:demo`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tritonforge.builder.build import build
from tritonforge.builder.spec import load_spec
from tritonforge.ensembles.render import emit_files

pytestmark = pytest.mark.slow


def write_spec(path: Path, fmt: str, kv: str = "auto") -> Path:
    data = {
        "name": f"pt-{fmt}",
        "tiers": [
            {
                "name": "main",
                "model": "builtin:demo",
                "runtime": "trtllm-pytorch",
                "dtype": "float32",
                "quantization": {
                    "format": fmt,
                    "kv_cache_dtype": kv,
                    "calibration": {"dataset": "builtin:stdlib", "size": 4, "seq_len": 64},
                    "quality_gate": {"eval_samples": 4},
                },
                "limits": {"max_batch_size": 4, "max_input_len": 128, "max_output_len": 64},
            }
        ],
        "triton": {"image": "nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3", "trtllm_version": "1.2.1"},
    }
    path.write_text(yaml.safe_dump(data))
    return path


def steps(manifest: dict) -> dict[str, dict]:
    return {s["name"]: s for s in manifest["tiers"]["main"]["steps"]}


def test_fp8_hf_checkpoint_build_resume_and_emit(tmp_path):
    from safetensors import safe_open

    spec_path = write_spec(tmp_path / "spec.yaml", "fp8", kv="fp8")
    out = tmp_path / "b"
    m = build(load_spec(spec_path), spec_path=spec_path, build_dir=out, progress=lambda s: None).manifest
    assert [(s["name"], s["status"]) for s in m["tiers"]["main"]["steps"]] == [
        ("checkpoint", "built"),
        ("tokenizer", "built"),
    ]
    assert m["complete"] is True and m["tiers"]["main"]["engine_dir"] is None
    ck = out / "main" / "checkpoint"
    hq = json.loads((ck / "hf_quant_config.json").read_text())["quantization"]
    assert hq["quant_algo"] == "FP8" and hq["kv_cache_quant_algo"] == "FP8"
    assert (ck / "config.json").is_file() and (ck / "tokenizer.json").is_file()  # LLM(model=ck) finds both
    with safe_open(str(next(ck.glob("*.safetensors"))), "pt") as f:
        names = list(f.keys())
        w = next(n for n in names if n.endswith("self_attn.q_proj.weight"))
        assert str(f.get_tensor(w).dtype) == "torch.float8_e4m3fn"
        assert w.replace(".weight", ".weight_scale") in names
    q = m["tiers"]["main"]["quality"]
    assert 0 < q["kl_divergence"] < 0.05 and q["top1_agreement"] > 0.9
    assert steps(m)["checkpoint"]["details"]["job"]["export_format"] == "hf"

    again = build(load_spec(spec_path), spec_path=spec_path, build_dir=out, progress=lambda s: None).manifest
    assert [s["status"] for s in again["tiers"]["main"]["steps"]] == ["cached", "cached"]

    files, _ = emit_files(load_spec(spec_path), spec_path.parent, out)
    cfg = files["tensorrt_llm/config.pbtxt"].decode()
    assert json.dumps(str(ck.resolve()))[1:-1] in cfg.replace('\\"', '"')
    lock = json.loads(files["tritonforge.lock.json"])
    assert lock["paths"]["main"]["checkpoint_dir"] == {"path": str(ck.resolve()), "source": "build"}


def test_int4_awq_hf_checkpoint(tmp_path):
    from tritonforge.builder.demo_model import materialize
    from tritonforge.builder.quantize import QuantizeJob, run_quantize

    gate = {
        "enabled": True,
        "max_kl_divergence": 0.05,
        "min_top1_agreement": 0.9,
        "max_perplexity_increase": 0.1,
        "eval_dataset": "builtin:stdlib-heldout",
        "eval_samples": 4,
    }
    job = QuantizeJob(
        model_dir=str(materialize("demo")),
        qformat="int4_awq",
        kv_cache_dtype=None,
        awq_block_size=128,
        calib_dataset="builtin:stdlib",
        calib_size=4,
        calib_seq_len=32,
        export_dtype="bfloat16",
        decoder_type="llama",
        gate=gate,
        export_format="hf",
    )
    res = run_quantize(job, tmp_path / "ck")
    assert res.quant_section["quant_algo"] == "W4A16_AWQ" and res.quant_section["kv_cache_quant_algo"] is None
    assert not res.gate_failures and res.quality["kl_divergence"] > 0
    assert (tmp_path / "ck" / "hf_quant_config.json").is_file() and (
        tmp_path / "ck" / "tokenizer.json"
    ).is_file()
