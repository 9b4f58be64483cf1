"""Real builds on the CPU: ModelOpt quantization, TRT-LLM checkpoint export, quality gate, manifest, resume.

A small Llama (hidden 128, MLP 256, 2 layers, GQA 4/2, BPE vocab 512) is trained for a few seconds on
Python standard-library sources so its quality figures mean something. Nothing of ModelOpt is mocked;
the one stand-in is a `trtllm-build` script on PATH that records its argv, to check that the engine step
runs exactly the planned command (TensorRT-LLM itself cannot be installed here).
"""

from __future__ import annotations

import json
import os
import stat
import sysconfig
from pathlib import Path

import pytest
import yaml

from tritonforge.builder.build import build
from tritonforge.builder.engine_facts import engine_facts
from tritonforge.builder.manifest import read_manifest
from tritonforge.builder.spec import load_spec
from tritonforge.builder.steps import sha256_file
from tritonforge.errors import UserError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    """A small trained LlamaForCausalLM + fast BPE tokenizer (hidden/MLP sizes multiples of 128)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny-llama")
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:40]
    texts = [f.read_text(encoding="utf-8", errors="replace") for f in files]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=512,
            special_tokens=["<pad>", "<s>", "</s>"],
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(out)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg)
    ids: list[int] = []
    for t in texts:
        ids += fast(t)["input_ids"] + [2]
    data = torch.tensor(ids)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        idx = torch.randint(0, len(data) - 65, (16,), generator=g)
        x = torch.stack([data[i : i + 64] for i in idx])
        loss = model(x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(out)
    return out


def write_spec(path: Path, model: Path, fmt: str, kv: str = "auto", calib_size: int = 6, **gate) -> Path:
    data = {
        "name": f"cpu-{fmt}",
        "tiers": [
            {
                "name": "main",
                "model": str(model),
                "runtime": "cpu-reference",
                "dtype": "float32",
                "quantization": {
                    "format": fmt,
                    "kv_cache_dtype": kv,
                    "calibration": {"dataset": "builtin:stdlib", "size": calib_size, "seq_len": 64},
                    "quality_gate": {"eval_samples": 6, **gate},
                },
                "limits": {"max_batch_size": 4, "max_input_len": 256, "max_output_len": 64},
            }
        ],
    }
    path.write_text(yaml.safe_dump(data))
    return path


def steps_of(manifest: dict, tier: str = "main") -> dict[str, dict]:
    return {s["name"]: s for s in manifest["tiers"][tier]["steps"]}


def test_fp8_build_export_manifest_resume_and_engine_command(tiny_llama, tmp_path, monkeypatch):
    from safetensors import safe_open

    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no trtllm-build
    spec_path = write_spec(tmp_path / "spec.yaml", tiny_llama, "fp8", kv="fp8")
    spec = load_spec(spec_path)
    out = tmp_path / "build"
    lines: list[str] = []
    report = build(spec, spec_path=spec_path, build_dir=out, progress=lines.append)
    m = read_manifest(out)
    assert m is not None and m == json.loads(json.dumps(report.manifest, default=str)) and m["complete"]
    st = steps_of(m)
    assert [s["status"] for s in m["tiers"]["main"]["steps"]] == ["built", "skipped", "built"]

    # Checkpoint: config.json quantization section, FP8 weights in the safetensors, hashes in the manifest.
    ck = out / "main" / "checkpoint"
    cfg = json.loads((ck / "config.json").read_text())
    assert cfg["quantization"] == {
        "quant_algo": "FP8",
        "kv_cache_quant_algo": "FP8",
        "exclude_modules": ["lm_head"],
    }
    assert cfg["mapping"] == {"world_size": 1, "tp_size": 1, "pp_size": 1} and cfg["dtype"] == "float16"
    with safe_open(str(ck / "rank0.safetensors"), "pt") as f:
        assert str(f.get_tensor("transformer.layers.0.attention.qkv.weight").dtype) == "torch.float8_e4m3fn"
        assert str(f.get_tensor("lm_head.weight").dtype) == "torch.float16"
        assert "transformer.layers.0.attention.kv_cache_scaling_factor" in f.keys()
    assert st["checkpoint"]["outputs"]["rank0.safetensors"] == sha256_file(ck / "rank0.safetensors")

    # Engine: skipped for want of TensorRT-LLM, never faked; the planned command is recorded.
    assert st["engine"]["status"] == "skipped" and "TensorRT-LLM not installed" in st["engine"]["reason"]
    assert st["engine"]["command"][:3] == ["trtllm-build", "--checkpoint_dir", str(ck)]
    assert m["tiers"]["main"]["engine_dir"] is None and not (out / "main" / "engine").exists()

    # Manifest: hashes of spec, source and calibration set; tool versions; quality figures.
    assert m["spec"]["hash"] == spec.spec_hash()
    assert len(m["tiers"]["main"]["model"]["sha256"]) == 64
    assert len(st["checkpoint"]["details"]["calibration"]["sha256"]) == 64
    assert m["tools"]["modelopt"] and m["tools"]["torch"] and m["tools"]["tensorrt_llm"] is None
    q = m["tiers"]["main"]["quality"]
    assert q["method"] == "modelopt-fake-quant" and q["windows"] == 6
    assert 0 < q["kl_divergence"] < 0.05 and q["top1_agreement"] > 0.9 and abs(q["ppl_increase"]) < 0.1
    assert any("calibrating" in line for line in lines)  # progress reported
    assert (out / "main" / "tokenizer" / "tokenizer.json").is_file()
    art = engine_facts(spec.tiers[0], report.plan.tiers[0], m)
    assert art.tokenizer_dir == str(out / "main" / "tokenizer") and art.engine_dir is None
    assert art.max_batch_size == 4 and not art.built

    # Second run: everything skipped (content-addressed), outputs untouched, same figures.
    mtime = (ck / "rank0.safetensors").stat().st_mtime_ns
    m2 = build(spec, spec_path=spec_path, build_dir=out, progress=lambda s: None).manifest
    assert [s["status"] for s in m2["tiers"]["main"]["steps"]] == ["cached", "skipped", "cached"]
    assert (ck / "rank0.safetensors").stat().st_mtime_ns == mtime
    assert m2["tiers"]["main"]["quality"] == q

    # With trtllm-build on PATH the engine step runs exactly the planned command (output to a temp dir
    # renamed into place), and only that step runs.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "trtllm-build"
    fake.write_text(
        "#!/usr/bin/env python3\nimport json, sys, pathlib\nargv = sys.argv[1:]\n"
        "out = pathlib.Path(argv[argv.index('--output_dir') + 1]); out.mkdir(parents=True, exist_ok=True)\n"
        "(out / 'config.json').write_text(json.dumps({'build_config': {'argv': argv}}))\n"
        "(out / 'rank0.engine').write_bytes(b'test stand-in')\n"
        f"pathlib.Path({str(tmp_path / 'argv.json')!r}).write_text(json.dumps(argv))\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}/usr/bin:/bin")
    m3 = build(spec, spec_path=spec_path, build_dir=out, progress=lambda s: None).manifest
    s3 = steps_of(m3)
    assert [s["status"] for s in m3["tiers"]["main"]["steps"]] == ["cached", "built", "cached"]
    ran = json.loads((tmp_path / "argv.json").read_text())
    planned = s3["engine"]["command"][1:]
    out_i = planned.index("--output_dir") + 1
    assert ran[:out_i] == planned[:out_i] and ran[out_i + 1 :] == planned[out_i + 1 :]
    assert Path(ran[out_i]).name.startswith(".tmp-engine-")
    assert m3["tiers"]["main"]["engine_dir"] == str(out / "main" / "engine")
    assert (out / "main" / "engine" / "rank0.engine").is_file()

    # A changed input (calibration size) re-runs the quantize step, and the engine after it.
    spec_path = write_spec(tmp_path / "spec.yaml", tiny_llama, "fp8", kv="fp8", calib_size=4)
    m4 = build(load_spec(spec_path), spec_path=spec_path, build_dir=out, progress=lambda s: None).manifest
    assert [s["status"] for s in m4["tiers"]["main"]["steps"]] == ["built", "built", "cached"]
    assert steps_of(m4)["checkpoint"]["details"]["calibration"]["windows"] == 4


def test_int4_awq_build(tiny_llama, tmp_path, monkeypatch):
    from safetensors import safe_open

    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    spec_path = write_spec(tmp_path / "spec.yaml", tiny_llama, "int4_awq", calib_size=4)
    m = build(
        load_spec(spec_path), spec_path=spec_path, build_dir=tmp_path / "b", progress=lambda s: None
    ).manifest
    assert [s["status"] for s in m["tiers"]["main"]["steps"]] == ["built", "skipped", "built"]
    ck = tmp_path / "b" / "main" / "checkpoint"
    qsec = json.loads((ck / "config.json").read_text())["quantization"]
    assert qsec["quant_algo"] == "W4A16_AWQ" and qsec["group_size"] == 128
    assert (
        qsec["has_zero_point"] is False
        and qsec["pre_quant_scale"] is True
        and qsec["kv_cache_quant_algo"] is None
    )
    with safe_open(str(ck / "rank0.safetensors"), "pt") as f:
        w = f.get_tensor("transformer.layers.0.attention.dense.weight")
        assert str(w.dtype) == "torch.int8" and tuple(w.shape) == (64, 128)  # two int4 per byte
        assert "transformer.layers.0.attention.dense.prequant_scaling_factor" in f.keys()
    q = m["tiers"]["main"]["quality"]
    assert 0 < q["kl_divergence"] < 0.05 and q["top1_agreement"] > 0.9
    m2 = build(
        load_spec(spec_path), spec_path=spec_path, build_dir=tmp_path / "b", progress=lambda s: None
    ).manifest
    assert [s["status"] for s in m2["tiers"]["main"]["steps"]] == ["cached", "skipped", "cached"]


def test_quality_gate_failure_fails_the_build_and_writes_nothing(tiny_llama, tmp_path):
    spec_path = write_spec(tmp_path / "spec.yaml", tiny_llama, "fp8", max_kl_divergence=0.0)
    with pytest.raises(UserError, match="quality gate: KL divergence .* > max_kl_divergence 0.0"):
        build(load_spec(spec_path), spec_path=spec_path, build_dir=tmp_path / "b", progress=lambda s: None)
    assert not (tmp_path / "b" / "main" / "checkpoint").exists()
    assert not [p for p in (tmp_path / "b" / "main").iterdir() if p.name.startswith(".tmp-")]
    m = read_manifest(tmp_path / "b")
    assert m["complete"] is False
    st = steps_of(m)
    assert (
        st["checkpoint"]["status"] == "failed" and st["checkpoint"]["details"]["quality"]["kl_divergence"] > 0
    )
    assert st["engine"]["status"] == "skipped"


@pytest.mark.parametrize(
    "fmt,algo", [("int8_sq", "W8A8_SQ_PER_CHANNEL"), ("w4a8_awq", "W4A8_AWQ"), ("nvfp4", "NVFP4")]
)
def test_other_formats_quantize_and_measure_on_cpu(tiny_llama, tmp_path, fmt, algo):
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
        model_dir=str(tiny_llama),
        qformat=fmt,
        kv_cache_dtype=None,
        awq_block_size=128,
        calib_dataset="builtin:stdlib",
        calib_size=4,
        calib_seq_len=32,
        export_dtype="bfloat16",
        decoder_type="llama",
        gate=gate,
    )
    res = run_quantize(job, tmp_path / "ck")
    assert res.quant_section["quant_algo"] == algo and not res.gate_failures
    q = res.quality
    assert q["kl_divergence"] > 0 and q["top1_agreement"] > 0.9
    if fmt == "nvfp4":  # fake-quant needs CUDA; measured through the CPU emulation instead
        assert q["method"] == "modelopt-fake-quant+nvfp4-cpu-emulation" and "emulated" in res.note
        assert res.quant_section["group_size"] == 16


def test_nvfp4_emulation_matches_the_format():
    """Every value is (an E2M1 value) x (an E4M3 block scale) x (the per-tensor scale)."""
    import torch

    from tritonforge.builder.quality import nvfp4_fake_quant

    torch.manual_seed(0)
    x = torch.randn(8, 64) * torch.logspace(-2, 1, 64)
    amax = x.abs().max()
    y = nvfp4_fake_quant(x, amax, 16)
    s2 = amax / (6 * 448)
    grid = torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6])
    for blk_x, blk_y in zip(x.reshape(-1, 16), y.reshape(-1, 16), strict=True):
        scale = (blk_x.abs().max() / (6 * s2)).clamp(2**-9, 448).to(torch.float8_e4m3fn).float()
        q = blk_y / (scale * s2)
        assert torch.allclose(q.abs()[:, None].sub(grid).abs().min(-1).values, torch.zeros(16), atol=1e-4)
        # rounded to the nearest grid value (a tie is the same distance either way), sign kept
        ref = (blk_x / (scale * s2)).abs().clamp(max=6)
        nearest = (ref[:, None] - grid).abs().min(-1).values
        assert torch.allclose((q.abs() - ref).abs(), nearest, atol=1e-3)
        assert ((q == 0) | (q.sign() == blk_x.sign())).all()
    assert not torch.equal(x, y)
    rel = ((x - y).norm() / x.norm()).item()
    assert 0.01 < rel < 0.2  # 4-bit: a few percent error, not zero, not garbage
