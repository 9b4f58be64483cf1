"""Conformance of the quantize step with what runs on users' GPU hosts (checked here on the CPU).

- ModelOpt config forms: TensorRT-LLM 1.2's requirements pin `nvidia-modelopt[torch]~=0.37.0`
  (https://github.com/NVIDIA/TensorRT-LLM/blob/main/requirements.txt, the torch-2.9 / 1.2 line),
  whose preset configs are dict-form; the ModelOpt installed here (0.47) has list-form presets.
- Loading for quantization: TensorRT-LLM's reference quantize path loads the checkpoint with
  `device_map="auto"` (get_model in tensorrt_llm/quantization/quantize_by_modelopt.py,
  https://github.com/NVIDIA/TensorRT-LLM/blob/main/tensorrt_llm/quantization/quantize_by_modelopt.py).
- Calibration: that path defaults to cnn_dailymail, 512 samples x 512 tokens (examples/quantization/
  quantize.py argparse defaults) and cuts AWQ formats to 32 samples (quantize_and_export).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tritonforge.errors import UserError

# ModelOpt 0.37's presets, written out exactly as modelopt/torch/quantization/config.py defines them at
# https://github.com/NVIDIA/TensorRT-Model-Optimizer/blob/0.37.0/modelopt/torch/quantization/config.py
# (`_default_disabled_quantizer_cfg`, FP8_DEFAULT_CFG, INT4_AWQ_CFG, W4A8_AWQ_BETA_CFG,
# INT8_SMOOTHQUANT_CFG, NVFP4_DEFAULT_CFG, FP8_KV_CFG, NVFP4_KV_CFG).
_DEFAULT_DISABLED_037 = {
    "nn.BatchNorm1d": {"*": {"enable": False}},
    "nn.BatchNorm2d": {"*": {"enable": False}},
    "nn.BatchNorm3d": {"*": {"enable": False}},
    "nn.LeakyReLU": {"*": {"enable": False}},
    "*lm_head*": {"enable": False},
    "*proj_out.*": {"enable": False},
    "*block_sparse_moe.gate*": {"enable": False},
    "*router*": {"enable": False},
    "*mlp.gate.*": {"enable": False},
    "*mlp.shared_expert_gate.*": {"enable": False},
    "*output_layer*": {"enable": False},
    "output.*": {"enable": False},
    "default": {"enable": False},
}
_NVFP4_037 = {
    "num_bits": (2, 1),
    "block_sizes": {-1: 16, "type": "dynamic", "scale_bits": (4, 3)},
    "axis": None,
    "enable": True,
}
MODELOPT_037_PRESETS = {
    "FP8_DEFAULT_CFG": {
        "quant_cfg": {
            "*weight_quantizer": {"num_bits": (4, 3), "axis": None},
            "*input_quantizer": {"num_bits": (4, 3), "axis": None},
            **_DEFAULT_DISABLED_037,
        },
        "algorithm": "max",
    },
    "INT8_SMOOTHQUANT_CFG": {
        "quant_cfg": {
            "*weight_quantizer": {"num_bits": 8, "axis": 0},
            "*input_quantizer": {"num_bits": 8, "axis": None},
            **_DEFAULT_DISABLED_037,
        },
        "algorithm": "smoothquant",
    },
    "INT4_AWQ_CFG": {
        "quant_cfg": {
            "*weight_quantizer": {"num_bits": 4, "block_sizes": {-1: 128, "type": "static"}, "enable": True},
            "*input_quantizer": {"enable": False},
            **_DEFAULT_DISABLED_037,
        },
        "algorithm": {"method": "awq_lite", "alpha_step": 0.1},
    },
    "W4A8_AWQ_BETA_CFG": {
        "quant_cfg": {
            "*weight_quantizer": [
                {"num_bits": 4, "block_sizes": {-1: 128, "type": "static"}, "enable": True},
                {"num_bits": (4, 3), "axis": None, "enable": True},
            ],
            "*input_quantizer": {"num_bits": (4, 3), "axis": None, "enable": True},
            **_DEFAULT_DISABLED_037,
        },
        "algorithm": "awq_lite",
    },
    "NVFP4_DEFAULT_CFG": {
        "quant_cfg": {
            "*weight_quantizer": dict(_NVFP4_037),
            "*input_quantizer": dict(_NVFP4_037),
            **_DEFAULT_DISABLED_037,
        },
        "algorithm": "max",
    },
    "FP8_KV_CFG": {
        "quant_cfg": {
            "*[kv]_bmm_quantizer": {"num_bits": (4, 3), "axis": None, "enable": True},
            "default": {"enable": False},
        },
        "algorithm": "max",
    },
    "NVFP4_KV_CFG": {
        "quant_cfg": {"*[kv]_bmm_quantizer": dict(_NVFP4_037), "default": {"enable": False}},
        "algorithm": "max",
    },
}

GIB = 1024**3
H100 = 81559 * 1024**2  # nvidia-smi memory.total of an H100 80GB
SPECS = Path(__file__).parent / "fixtures" / "specs"
_SKIP_DIFF = "embed_tokens"  # see test_both_config_forms_set_the_same_quantizers


def _quantizer_settings(model) -> dict:
    """name -> (enabled, num_bits, axis, block_sizes) of every quantizer; sequential ones as a list."""
    from modelopt.torch.quantization.nn import SequentialQuantizer, TensorQuantizer

    out: dict = {}
    for name, m in model.named_modules():
        if isinstance(m, SequentialQuantizer):
            out[name] = [(q.is_enabled, q.num_bits, q.axis, dict(q.block_sizes or {})) for q in m]
        elif isinstance(m, TensorQuantizer) and not any(name.startswith(k + ".") for k in out):
            out[name] = (True, m.num_bits, m.axis, dict(m.block_sizes or {})) if m.is_enabled else (False,)
    return out


def _quantize_tiny(cfg: dict) -> dict:
    import modelopt.torch.quantization as mtq
    import torch
    from transformers import AutoModelForCausalLM

    from tritonforge.builder import demo_model

    model = AutoModelForCausalLM.from_pretrained(demo_model.materialize("tiny")).eval()
    x = torch.randint(3, 1000, (1, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        mtq.quantize(model, cfg, lambda m: m(x))
    return _quantizer_settings(model)


# ----------------------------------------------------------------------------- ModelOpt config forms


def test_dict_form_presets_give_a_dict_form_config_for_modelopt_037():
    """The config handed to ModelOpt 0.37 (dict form): the KV entry merged without its "default" catch-all
    (TensorRT-LLM merges FP8_KV_CFG with dict.update in quantize_and_export), the AWQ block size set."""
    from tritonforge.builder.quantize import modelopt_config

    cfg = modelopt_config("fp8", "fp8", presets=MODELOPT_037_PRESETS)
    qc = cfg["quant_cfg"]
    assert isinstance(qc, dict) and cfg["algorithm"] == "max"
    assert next(iter(qc)) == "default" and qc["default"] == {"enable": False}
    assert list(qc).count("default") == 1 and list(qc)[-1] == "*[kv]_bmm_quantizer"
    assert qc["*[kv]_bmm_quantizer"] == {"num_bits": (4, 3), "axis": None, "enable": True}
    assert qc["*weight_quantizer"] == {"num_bits": (4, 3), "axis": None, "enable": True}
    assert qc["nn.BatchNorm1d"] == {"*": {"enable": False}} and qc["*lm_head*"] == {"enable": False}

    w4a8 = modelopt_config("w4a8_awq", "fp8", awq_block_size=64, presets=MODELOPT_037_PRESETS)["quant_cfg"]
    assert w4a8["*weight_quantizer"][0]["block_sizes"] == {-1: 64, "type": "static"}
    assert w4a8["*weight_quantizer"][1] == {"num_bits": (4, 3), "axis": None, "enable": True}
    assert (
        MODELOPT_037_PRESETS["W4A8_AWQ_BETA_CFG"]["quant_cfg"]["*weight_quantizer"][0]["block_sizes"][-1]
        == 128
    )
    int8 = modelopt_config("int8_sq", "int8", presets=MODELOPT_037_PRESETS)
    assert int8["algorithm"] == "smoothquant" and int8["quant_cfg"]["*[kv]_bmm_quantizer"]["num_bits"] == 8

    # The installed ModelOpt's presets are list-form; the config keeps their form.
    native = modelopt_config("fp8", "fp8")
    assert isinstance(native["quant_cfg"], list)
    assert native["quant_cfg"][-1]["quantizer_name"] == "*[kv]_bmm_quantizer"


def test_modelopt_047_reads_037_dict_form_with_default_last():
    """Why "default" must become the first entry: ModelOpt 0.37 applies it before every other key, while
    the installed ModelOpt's own legacy-dict reader keeps it where it stands (last in 0.37's presets),
    which would switch every quantizer off again."""
    from modelopt.torch.quantization.config import normalize_quant_cfg_list

    from tritonforge.builder.quantize import quant_cfg_entries

    raw = normalize_quant_cfg_list(MODELOPT_037_PRESETS["FP8_DEFAULT_CFG"]["quant_cfg"])
    assert raw[-1]["quantizer_name"] == "*" and raw[-1]["enable"] is False
    ours = quant_cfg_entries(MODELOPT_037_PRESETS["FP8_DEFAULT_CFG"]["quant_cfg"])
    assert ours[0] == {"quantizer_name": "*", "enable": False}
    assert [e["quantizer_name"] for e in ours].count("*") == 1 + 4  # the catch-all + 4 nn.* class scopes


@pytest.mark.slow
@pytest.mark.parametrize("fmt,kv,block", [("fp8", "fp8", 128), ("w4a8_awq", "fp8", 64)])
def test_both_config_forms_set_the_same_quantizers(fmt, kv, block):
    """Real ModelOpt quantize on the tiny model: the config built from ModelOpt 0.37's dict-form presets
    (converted to entries by our code) and the one built from the installed list-form presets set every
    quantizer alike. The one exception is the embedding's weight quantizer: the installed ModelOpt
    quantizes nn.Embedding and its presets disable it; 0.37 has no quantized Embedding at all
    (modelopt/torch/quantization/nn/modules/ at the 0.37.0 tag holds no quant_embedding), so its presets
    never mention it."""
    from tritonforge.builder.quantize import modelopt_config, quant_cfg_entries

    native = _quantize_tiny(modelopt_config(fmt, kv, block))
    legacy_cfg = modelopt_config(fmt, kv, block, presets=MODELOPT_037_PRESETS)
    legacy = _quantize_tiny({**legacy_cfg, "quant_cfg": quant_cfg_entries(legacy_cfg["quant_cfg"])})
    assert native.keys() == legacy.keys()
    emb = [k for k in native if _SKIP_DIFF in k]
    assert emb and all(native[k] == (False,) or native[k][0][0] is False for k in emb)
    same = {k: native[k] for k in native if _SKIP_DIFF not in k}
    assert same == {k: legacy[k] for k in same}
    enabled = [k for k, v in same.items() if (v[0] is True if isinstance(v, tuple) else v[0][0])]
    assert any(k.endswith("k_bmm_quantizer") for k in enabled) and any(
        k.endswith("v_bmm_quantizer") for k in enabled
    )
    assert any("q_proj.weight_quantizer" in k for k in enabled) and not any("lm_head" in k for k in enabled)
    if fmt == "w4a8_awq":
        w = same["model.layers.0.mlp.down_proj.weight_quantizer"]
        assert (
            w[0][:2] == (True, 4) and w[0][3] == {-1: block, "type": "static"} and w[1][:2] == (True, (4, 3))
        )


# ------------------------------------------------------------------------------ quantization memory


def _plan(name: str):
    from tritonforge.builder.planner import plan_deployment
    from tritonforge.builder.spec import load_spec

    spec = load_spec(SPECS / name)
    return spec, plan_deployment(spec, "out")


def test_device_map_kwargs_spread_over_gpus_and_offload_to_host():
    from tritonforge.builder.build import quantize_memory_of
    from tritonforge.builder.quantize import GPU_USABLE, HOST_USABLE, load_plan

    _, plan = _plan("llama31-70b-fp8-tp2-h100.yaml")
    mem = quantize_memory_of(plan.tiers[0].shape, 512)
    assert 130 * GIB < mem.weights < 132 * GIB  # 70.6B parameters in bf16
    assert 0.5 * GIB < mem.activations < 4 * GIB

    assert (
        load_plan(quantize_memory_of(plan.tiers[0].shape, 512, 4), [], 512 * GIB) == {}
    )  # CPU: fp32, no map
    one = load_plan(mem, [H100], 512 * GIB)
    assert one["device_map"] == "auto"
    assert one["max_memory"] == {
        0: int(H100 * GPU_USABLE) - mem.activations,
        "cpu": int(512 * GIB * HOST_USABLE),
    }
    assert one["max_memory"][0] < mem.weights  # the rest is offloaded to host RAM
    two = load_plan(mem, [H100, H100], 512 * GIB)
    assert set(two["max_memory"]) == {0, 1, "cpu"} and two["max_memory"][1] == two["max_memory"][0]
    # an 8B model fits on the one GPU: the map still spreads, ModelOpt calibrates on GPU
    _, p8 = _plan("llama31-8b-fp8-h100.yaml")
    m8 = quantize_memory_of(p8.tiers[0].shape, 512)
    assert m8.total < load_plan(m8, [H100], 64 * GIB)["max_memory"][0]


def test_quantization_that_cannot_fit_the_host_is_refused_in_one_line():
    from tritonforge.builder.build import check_quantize_memory
    from tritonforge.builder.quantize import load_plan, quantize_memory

    spec, plan = _plan("llama31-70b-fp8-tp2-h100.yaml")
    with pytest.raises(UserError) as exc:
        check_quantize_memory(spec, plan, ([H100], 32 * GIB))
    msg = str(exc.value)
    assert (
        "\n" not in msg
        and "131.4 GiB of 16-bit weights" in msg
        and "38 GiB more" in msg
        and "more GPU memory or RAM" in msg
    )
    ok = check_quantize_memory(spec, plan, ([H100, H100], 256 * GIB))
    assert ok["main/checkpoint"]["placement"] == "device_map=auto" and ok["main/checkpoint"]["gpus"] == 2
    # the boundary: exactly the usable room fits, one byte more does not
    mem = quantize_memory(1000, 16, 32, 64, 8)
    room = int(mem.total / 0.8) + 2
    assert load_plan(mem, [], room) == {}
    with pytest.raises(UserError):
        load_plan(mem, [], int((mem.total - 1) / 0.8))


# ------------------------------------------------------------------------------------ calibration


def test_calibration_defaults_follow_the_reference():
    """Spec defaults: cnn_dailymail when loadable ("auto"), 512 samples x 512 tokens, AWQ cut to 32 unless
    the size is set (examples/quantization/quantize.py defaults --calib_size 512 --calib_max_seq_length 512,
    quantize_and_export: `if "awq" in qformat: if calib_size > 32: calib_size = 32`)."""
    from tritonforge.builder.build import calib_size
    from tritonforge.builder.planner import plan_deployment
    from tritonforge.builder.spec import parse_spec

    def tier(fmt: str, **cal):
        spec = parse_spec(
            {
                "name": "t",
                "tiers": [
                    {
                        "name": "main",
                        "model": "fixture:llama-3.1-8b",
                        "quantization": {"format": fmt, "calibration": cal},
                    }
                ],
            }
        )
        return plan_deployment(spec, "out").tiers[0].quantize, spec.tiers[0].quantization

    qp, q = tier("fp8")
    assert (q.calibration.dataset, q.calibration.size, q.calibration.seq_len) == ("auto", 512, 512)
    assert q.quality_gate.eval_dataset == "auto" and calib_size(qp, q) == 512
    assert calib_size(*tier("int4_awq")) == 32 and calib_size(*tier("w4a8_awq")) == 32
    assert calib_size(*tier("int4_awq", size=100)) == 100  # an explicit size is kept


def test_reference_set_when_loadable_else_builtin_with_the_reason():
    from tritonforge.builder import quality

    # `datasets` cannot reach the hub from this machine: the loader below stands in for
    # load_reference (same signature: calib_size, eval_samples -> train and validation TextSets).
    def hub(n: int, m: int):
        mk = quality.TextSet
        return mk("cnn_dailymail 3.0.0 train[:2]", ["a", "b"], "1" * 64, 1), mk(
            "cnn_dailymail 3.0.0 validation[:1]", ["c"], "2" * 64, 1
        )

    got = quality.resolve_text_sources("auto", "auto", 512, 16, reference=hub)
    assert got.info["kind"] == "reference" and got.eval.texts == ["c"] and "fallback" not in got.info
    offline = quality.resolve_text_sources("auto", "auto", 4, 2)  # the real loader, on this offline host
    assert offline.info["kind"] == "builtin" and offline.info["used"] == "builtin:stdlib"
    assert offline.info["fallback"].startswith("cnn_dailymail not loadable: ")
    assert offline.eval.name == "builtin:stdlib-heldout"
    with pytest.raises(UserError, match="cannot be loaded here .*--calib-data"):
        quality.resolve_text_sources("cnn_dailymail", None, 4, 0)


def _spec(tmp_path: Path) -> Path:
    import yaml

    p = tmp_path / "spec.yaml"
    p.write_text(
        yaml.safe_dump(
            {
                "name": "calib",
                "tiers": [
                    {
                        "name": "main",
                        "model": "builtin:tiny",
                        "runtime": "cpu-reference",
                        "dtype": "float32",
                        "quantization": {
                            "format": "fp8",
                            "calibration": {"size": 8, "seq_len": 64},
                            # a random-weight model: the gate measures, these limits do not fail it
                            "quality_gate": {
                                "eval_samples": 2,
                                "max_kl_divergence": 100,
                                "min_top1_agreement": 0,
                                "max_perplexity_increase": 100,
                            },
                        },
                        "limits": {"max_batch_size": 2, "max_input_len": 128, "max_output_len": 32},
                    }
                ],
            }
        )
    )
    return p


def _traffic(path: Path, n: int = 40) -> list[str]:
    texts = [
        f"user {i}: please summarize the quarterly report for region {i % 7}, list the three largest "
        f"cost items, compare them with last year and suggest two savings with their expected impact"
        for i in range(n)
    ]
    path.write_text(
        "".join(json.dumps({"prompt" if i % 2 else "text": t}) + "\n" for i, t in enumerate(texts))
    )
    return texts


@pytest.mark.slow
def test_build_calibrates_on_a_traffic_jsonl_and_records_the_source(tmp_path, monkeypatch):
    from importlib import metadata

    from click.testing import CliRunner

    from tritonforge.builder.build_cli import build_command
    from tritonforge.builder.manifest import read_manifest

    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no trtllm-build
    spec, traffic = _spec(tmp_path), tmp_path / "traffic.jsonl"
    texts = _traffic(traffic)
    r = CliRunner().invoke(
        build_command, [str(spec), "-o", str(tmp_path / "b1"), "--calib-data", str(traffic)]
    )
    assert r.exit_code == 0, r.output
    m = read_manifest(tmp_path / "b1")
    tier = m["tiers"]["main"]
    assert tier["modelopt_version"] == metadata.version("nvidia-modelopt") == m["tools"]["modelopt"]
    src = tier["calibration"]
    assert src["kind"] == "file" and src["used"] == str(traffic) and src["records"] == 40
    step = next(s for s in tier["steps"] if s["name"] == "checkpoint")
    cal = step["details"]["calibration"]
    assert cal["windows"] == 8 and cal["seq_len"] == 64
    # the calibration records are the file's, minus every 10th, which the quality gate evaluates on
    used = [json.loads(line)["text"] for line in Path(cal["dataset"]).read_text().splitlines()]
    held = [
        json.loads(line)["text"] for line in Path(tier["quality"]["eval_dataset"]).read_text().splitlines()
    ]
    assert used == [t for i, t in enumerate(texts) if i % 10 != 9] and held == texts[9::10]
    assert tier["quality"]["windows"] >= 1 and tier["quality"]["tokens"] > 0
    assert "calib 8 x 64 of file" in r.stdout

    # No --calib-data on this offline host: the reference set cannot load; the build says so and records it.
    r = CliRunner().invoke(build_command, [str(spec), "-o", str(tmp_path / "b2")])
    assert r.exit_code == 0, r.output
    src = read_manifest(tmp_path / "b2")["tiers"]["main"]["calibration"]
    assert (
        src["kind"] == "builtin"
        and src["requested"] == "auto"
        and "cnn_dailymail not loadable" in src["fallback"]
    )
    assert "fit only for offline hosts" in r.stderr and "(offline fallback)" in r.stdout


def _run_cli(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """`tritonforge ARGS` through the console entry point in this process: exit code, stderr."""
    import sys

    from tritonforge.cli import main

    monkeypatch.setattr(sys, "argv", ["tritonforge", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "content,expect",
    [
        (
            '{"text": "fine"}\n{"message": "no text"}\n',
            r'traffic.jsonl:2: no "text" or "prompt" string field',
        ),
        ('{"text": "fine"}\nnot json\n', "traffic.jsonl:2: not valid JSON"),
        ('{"text": "only one"}\n', "1 record"),
        ("", "no text found"),
    ],
)
def test_bad_calib_data_is_one_line_and_exit_2(tmp_path, content, expect, monkeypatch, capsys):
    import re

    spec, traffic = _spec(tmp_path), tmp_path / "traffic.jsonl"
    traffic.write_text(content)
    code, err = _run_cli(
        ["build", str(spec), "-o", str(tmp_path / "b"), "--calib-data", str(traffic)], monkeypatch, capsys
    )
    assert code == 2 and re.search(expect, err), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "b").exists()
    code, err = _run_cli(
        ["build", str(spec), "-o", str(tmp_path / "b"), "--calib-data", str(tmp_path / "missing.jsonl")],
        monkeypatch,
        capsys,
    )
    assert code == 2 and "file not found" in err and not (tmp_path / "b").exists()
