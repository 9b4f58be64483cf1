"""AIConfigurator as an optional backend: parsing its `cli estimate` output, and (when installed) a
real run. The fixture is a real capture of

    aiconfigurator cli estimate --model-path <dir with Llama-3.1-8B's config.json> --system h100_sxm \
        --backend trtllm --isl 128 --osl 128 --batch-size 256 --tp-size 1 \
        --gemm-quant-mode fp8 --kvcache-quant-mode fp8

with PyPI aiconfigurator 0.12.0 (stdout and stderr together, as `estimate_cli` reads them).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tritonforge.builder import predict_aic

CAPTURE = Path(__file__).parent / "fixtures" / "aiconfigurator_0.12.0_estimate_llama31_8b_h100.txt"
CONFIGS = Path(__file__).parent.parent / "builder" / "fixtures"


def test_parse_captured_estimate():
    r = predict_aic.parse_estimate_output(CAPTURE.read_text())
    assert (r["ttft_ms"], r["tpot_ms"], r["request_latency_ms"]) == (33.678, 8.420, 1102.960)
    assert (r["tokens_per_s"], r["tokens_per_s_per_gpu"], r["tokens_per_s_per_user"]) == (
        15083.96,
        15083.96,
        118.77,
    )
    assert (r["batch_size"], r["concurrency"], r["tp"], r["pp"], r["isl"], r["osl"]) == (
        256,
        256,
        1,
        1,
        128,
        128,
    )
    assert r["system"] == "h100_sxm" and r["backend"].startswith("trtllm")
    # per-user speed is 1 / TPOT (both printed, rounded)
    assert r["tokens_per_s_per_user"] == pytest.approx(1e3 / r["tpot_ms"], rel=0.01)


def test_parse_rejects_output_without_the_estimate():
    text = CAPTURE.read_text()
    cut = text[: text.index("TTFT:")]
    with pytest.raises(ValueError, match="ttft_ms"):
        predict_aic.parse_estimate_output(cut)
    with pytest.raises(ValueError):
        predict_aic.parse_estimate_output("error: unknown system\n")


def test_ctx_tokens_keep_the_batch_full():
    assert predict_aic.ctx_tokens_for(2048, 128, 128, 8192) == 2048  # batch x ISL/OSL new tokens a step
    assert predict_aic.ctx_tokens_for(920, 128, 2048, 8192) == 128  # at least one whole prompt
    assert predict_aic.ctx_tokens_for(90, 20000, 2000, 8192) == 8192  # at most max_num_tokens (a chunk)


def test_supported_cases():
    assert predict_aic.supported("H100-SXM", "fp8", "fp8") and predict_aic.supported("B200", "nvfp4", "fp8")
    assert not predict_aic.supported("A100-40GB", "fp8", "fp8")  # no database for it
    assert not predict_aic.supported("H100-SXM", "w4a8_awq", "fp8")


@pytest.mark.skipif(
    predict_aic.find_executable() is None,
    reason="aiconfigurator not installed (pip install 'tritonforge[predict]' or set "
    "TRITONFORGE_AICONFIGURATOR to its executable)",
)
def test_real_estimate_runs_and_parses():
    cfg = json.loads((CONFIGS / "llama-3.1-8b.json").read_text())
    r = predict_aic.estimate_cli(
        predict_aic.find_executable(),
        cfg,
        gpu="H100-SXM",
        fmt="fp8",
        kv="fp8",
        isl=128,
        osl=128,
        batch=64,
        ctx_tokens=128,
        tp=1,
    )
    assert r["batch_size"] == 64 and r["tokens_per_s"] > 0 and r["tpot_ms"] > 0


def _golden_8b():
    from tritonforge.builder.planner import plan_deployment
    from tritonforge.builder.spec import load_spec

    spec = Path(__file__).parent / "fixtures" / "specs" / "llama31-8b-fp8-h100.yaml"
    return plan_deployment(load_spec(spec), build_dir="out").tiers[0]


def _calib_preferring_aic() -> dict:
    from tritonforge.builder import predict

    calib = predict.load_calibration()
    return {**calib, "aiconfigurator": {"version": "0.12.0", "prefer": {"Hopper/fp8": "aiconfigurator"}}}


def test_preferred_but_absent_falls_back_and_says_so(monkeypatch, tmp_path):
    from tritonforge.builder import predict

    monkeypatch.setenv(predict_aic.ENV_EXE, str(tmp_path / "no-such-aiconfigurator"))
    tp = predict.predict_tier(_golden_8b(), predict.Workload(128, 128), calib=_calib_preferring_aic())
    assert tp.prediction.source.startswith("calibrated")
    assert any("not installed" in n for n in tp.prediction.notes)


def test_not_preferred_stays_calibrated():
    from tritonforge.builder import predict

    calib = {**predict.load_calibration(), "aiconfigurator": {"prefer": {"Hopper/fp8": "calibrated"}}}
    tp = predict.predict_tier(_golden_8b(), predict.Workload(128, 128), calib=calib)
    assert tp.prediction.source == "calibrated (Hopper/fp8)" and tp.alternatives == {}


@pytest.mark.skipif(
    predict_aic.find_executable() is None,
    reason="aiconfigurator not installed (pip install 'tritonforge[predict]' or set "
    "TRITONFORGE_AICONFIGURATOR to its executable)",
)
def test_preferred_and_installed_uses_it():
    from tritonforge.builder import predict

    tp = predict.predict_tier(_golden_8b(), predict.Workload(128, 128), calib=_calib_preferring_aic())
    assert tp.prediction.source.startswith("aiconfigurator 0.12.0")
    assert tp.alternatives["calibrated"]["source"] == "calibrated (Hopper/fp8)"
    assert tp.prediction.batch == 64 and tp.prediction.output_tokens_per_s > 0
