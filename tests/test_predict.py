"""Workload-aware prediction: the workload parser, KV pool at ISL/OSL, batch allowed, Little's law,
bounds against NVIDIA's published TensorRT-LLM measurements, and `plan --workload` end to end.

Hand-computed values: blocks per sequence = ceil((ISL + OSL) / tokens_per_block); sequences the
pool holds = (pool tokens // tokens_per_block) // blocks per sequence; Little's law L = lambda x W.
Published rows: builder/fixtures/published_trtllm_perf.json (TensorRT-LLM docs, perf-overview.md,
releases 0.17 and 1.0; URLs in the file).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tritonforge.builder import predict, predict_fit
from tritonforge.builder.planner import plan_deployment
from tritonforge.builder.spec import load_spec
from tritonforge.errors import UserError

SPECS = Path(__file__).parent / "fixtures" / "specs"
MIB, GIB = 1024**2, 1024**3


def tier(name: str):
    return plan_deployment(load_spec(SPECS / name), build_dir="out").tiers[0]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tritonforge", *args], capture_output=True, text=True)


# ---------------------------------------------------------------------------------- workload text


def test_parse_workload_reads_all_keys():
    w = predict.parse_workload("isl=2048, osl=256,isl_std=100,osl_std=20.5", concurrency=8)
    assert (w.isl, w.osl, w.isl_std, w.osl_std, w.concurrency, w.request_rate) == (
        2048,
        256,
        100.0,
        20.5,
        8,
        None,
    )


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("isl=2048", "osl is missing"),
        ("osl=10", "isl is missing"),
        ("isl=2048,osl=256,foo=1", "unknown key 'foo'"),
        ("isl=2048,osl=0", "between 1 and"),
        ("isl=20.5,osl=10", "whole number"),
        ("isl=2048;osl=256", "cannot read"),
        ("isl=1,isl=2,osl=3", "given twice"),
        ("", "cannot read"),
    ],
)
def test_parse_workload_rejects(text, fragment):
    with pytest.raises(UserError, match=fragment):
        predict.parse_workload(text)


def test_concurrency_and_rate_are_exclusive_and_positive():
    with pytest.raises(UserError, match="not both"):
        predict.parse_workload("isl=1,osl=1", concurrency=2, request_rate=1.0)
    with pytest.raises(UserError, match="at least 1"):
        predict.parse_workload("isl=1,osl=1", concurrency=0)
    with pytest.raises(UserError, match="positive"):
        predict.parse_workload("isl=1,osl=1", request_rate=-3.0)


@pytest.mark.parametrize(
    "args",
    [
        ["--workload", "isl=2048,osl=x"],
        ["--workload", "isl=2048"],
        ["--concurrency", "4"],
        ["--workload", "isl=128,osl=128", "--concurrency", "4", "--request-rate", "2"],
    ],
)
def test_cli_bad_workload_is_one_line_exit_2(args):
    proc = run_cli("plan", str(SPECS / "llama31-8b-fp8-h100.yaml"), *args)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert proc.stdout == ""  # nothing half-printed


# ---------------------------------------------------------------------------------- KV / batch math


def test_blocks_and_batch_allowed_by_hand():
    assert predict.blocks_per_sequence(2048, 256, 32) == 72  # ceil(2304 / 32)
    assert predict.blocks_per_sequence(128, 128, 32) == 8
    assert predict.blocks_per_sequence(100, 1, 64) == 2  # a partial block is a whole block
    # 100,000 tokens = 3,125 blocks of 32; 3,125 // 72 = 43 sequences
    assert predict.kv_sequences(100_000, 32, 2048, 256) == 43
    assert predict.batch_allowed(100_000, 32, 2048, 256, max_batch_size=64) == 43
    assert predict.batch_allowed(100_000, 32, 2048, 256, max_batch_size=16) == 16  # engine cap
    assert predict.batch_allowed(100_000, 32, 128, 128, max_batch_size=4096) == 3125 // 8


def test_kv_pool_at_workload_not_at_max_context():
    """Llama-3.1-8B FP8 on H100 (golden spec): the pool holds 396 sequences of the engine's 2,560
    tokens, but many more at ISL/OSL 128/128: pool tokens // 32 // 8."""
    t = tier("llama31-8b-fp8-h100.yaml")
    pool_tokens = t.memory.kv_pool_tokens
    assert t.memory.max_concurrent_sequences == 396
    tp = predict.predict_tier(t, predict.Workload(128, 128), use_aiconfigurator=False)
    assert tp.blocks_per_sequence == 8
    assert tp.prediction.kv_batch_limit == pool_tokens // 32 // 8 > 396 * 10
    assert tp.prediction.batch == 64  # the engine's max_batch_size caps it
    tp2 = predict.predict_tier(t, predict.Workload(2048, 512), use_aiconfigurator=False)
    assert tp2.prediction.kv_batch_limit == pool_tokens // 32 // 80 == 396  # 2,560 tokens = the engine max


def test_littles_law():
    assert predict.littles_law_concurrency(4.0, 2.5) == 10.0
    t = tier("llama31-8b-fp8-h100.yaml")
    for rate in (0.5, 5.0, 20.0):
        p = predict.predict_tier(
            t, predict.parse_workload("isl=512,osl=128", request_rate=rate), use_aiconfigurator=False
        ).prediction
        assert not p.saturated
        # the solved concurrency is the request rate times the predicted time in the system
        assert p.concurrency == pytest.approx(rate * p.request_latency_ms / 1e3, rel=1e-3)
        assert p.output_tokens_per_s == pytest.approx(rate * 128)


def test_request_rate_past_capacity_is_saturated():
    t = tier("llama31-8b-fp8-h100.yaml")
    p = predict.predict_tier(
        t, predict.parse_workload("isl=512,osl=128", request_rate=1e6), use_aiconfigurator=False
    ).prediction
    assert p.saturated and p.batch == 64 and any("without bound" in n for n in p.notes)


def test_closed_loop_concurrency():
    t = tier("llama31-8b-fp8-h100.yaml")
    w1 = predict.parse_workload("isl=1024,osl=256", concurrency=1)
    w8 = predict.parse_workload("isl=1024,osl=256", concurrency=8)
    p1 = predict.predict_tier(t, w1, use_aiconfigurator=False).prediction
    p8 = predict.predict_tier(t, w8, use_aiconfigurator=False).prediction
    assert (p1.batch, p8.batch) == (1, 8)
    # users x OSL / latency
    assert p8.output_tokens_per_s == pytest.approx(8 * 256 / (p8.request_latency_ms / 1e3))
    assert p8.itl_ms > p1.itl_ms and p8.output_tokens_per_s > p1.output_tokens_per_s
    # more users than the engine's 64 slots: the rest queue (Little's law latency)
    p100 = predict.predict_tier(
        t, predict.parse_workload("isl=1024,osl=256", concurrency=100), use_aiconfigurator=False
    ).prediction
    assert p100.saturated and p100.batch == 64
    assert p100.request_latency_ms / 1e3 == pytest.approx(100 * 256 / p100.output_tokens_per_s)


def test_cost_per_million_output_tokens():
    t = tier("llama31-70b-fp8-tp2-h100.yaml")
    p = predict.predict_tier(t, predict.Workload(2048, 256), use_aiconfigurator=False).prediction
    # $2.99/GPU-h x 2 GPUs / (tokens/s x 3600) x 1e6
    assert p.usd_per_1m_output_tokens == pytest.approx(2.99 * 2 / (p.output_tokens_per_s * 3600) * 1e6)
    assert p.output_tokens_per_s_per_gpu == pytest.approx(p.output_tokens_per_s / 2)


def test_workload_past_engine_limits_is_reported_not_predicted():
    t = tier("llama31-8b-fp8-h100.yaml")  # max_input_len 2048, max_seq_len 2560
    tp = predict.predict_tier(t, predict.Workload(4096, 128), use_aiconfigurator=False)
    assert tp.prediction is None and "past the engine's limits" in tp.error


# ------------------------------------------------------------------------------ published data


@pytest.fixture(scope="module")
def published():
    doc = predict_fit.load_published()
    return doc, predict_fit.row_cases(doc)


def test_published_file_cites_its_sources(published):
    doc, cases = published
    for src in doc["sources"].values():
        assert re.match(r"^https://github\.com/[\w-]+/TensorRT-LLM/blob/[0-9a-f]{40}/", src["url"]), src[
            "url"
        ]
        assert src["file"] in src["url"] and src["commit"] in src["url"]
    assert {r["source"] for r in doc["rows"]} <= set(doc["sources"])
    covered = {(r["model"], r["gpu"], r["format"]) for r in doc["rows"]}
    assert ("llama-3.1-8b", "H100-SXM", "fp8") in covered and ("llama-3.3-70b", "B200", "nvfp4") in covered
    assert len(cases) == len(doc["rows"])


def test_every_bound_is_at_least_the_published_measurement(published):
    _, cases = published
    below = [
        (r["model"], r["gpu"], r["tp"], r["isl"], r["osl"], r["output_tokens_per_s"], round(b))
        for r, g, w in cases
        if (b := predict.bound(g, w).output_tokens_per_s) < r["output_tokens_per_s"]
    ]
    assert not below, below


def test_bound_at_least_prediction(published):
    _, cases = published
    calib = predict.load_calibration()
    for _, g, w in cases:
        f = predict.factors_for(g.gpu, g.fmt, calib)
        assert predict.bound(g, w).output_tokens_per_s >= predict.predict_model(g, w, f).output_tokens_per_s


def test_llama31_8b_h100_128_bound_is_not_below_nvidia():
    """The old roofline (longest context) said 9,630 tok/s; NVIDIA measured 28,837 (v0.17)."""
    doc = predict_fit.load_published()
    row = next(
        r
        for r in doc["rows"]
        if (r["model"], r["gpu"], r["isl"], r["osl"], r["source"])
        == ("llama-3.1-8b", "H100-SXM", 128, 128, "v0.17")
    )
    g = predict.geometry(predict_fit.row_tier_plan(row, doc["assumptions"]))
    assert (
        predict.bound(g, predict.Workload(128, 128)).output_tokens_per_s
        >= row["output_tokens_per_s"]
        == 28836.77
    )


def test_checked_in_calibration_is_the_fit_of_the_published_rows(published):
    """The factors in predict_calibration.json are what predict_fit.fit gives on the published file."""
    _, cases = published
    stored = predict.load_calibration()
    fitted = predict_fit.fit(cases)
    for grp, v in fitted["groups"].items():
        assert stored["groups"][grp]["compute"] == pytest.approx(v["compute"], abs=2e-3)
        assert stored["groups"][grp]["bandwidth"] == pytest.approx(v["bandwidth"], abs=2e-3)
    assert stored["nvlink"] == pytest.approx(fitted["nvlink"], abs=2e-3)
    assert stored["allreduce_step_latency_s"] == pytest.approx(fitted["allreduce_step_latency_s"], rel=1e-2)


def test_uncalibrated_group_says_so():
    t = tier("llama31-70b-int4awq-h100.yaml")  # Hopper / int4_awq: no published rows
    p = predict.predict_tier(t, predict.Workload(1024, 128), use_aiconfigurator=False).prediction
    assert "uncalibrated for Hopper/int4_awq" in p.source


# ---------------------------------------------------------------------------------- CLI end to end


def test_plan_json_carries_prediction_and_bound():
    proc = run_cli(
        "plan",
        str(SPECS / "llama31-70b-fp8-tp2-h100.yaml"),
        "--json",
        "--workload",
        "isl=2048,osl=256",
        "--no-aiconfigurator",
    )
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert d["workload"]["isl"] == 2048
    t = d["tiers"][0]
    p = t["prediction"]
    for k in (
        "ttft_ms",
        "itl_ms",
        "output_tokens_per_s",
        "output_tokens_per_s_per_gpu",
        "batch",
        "usd_per_1m_output_tokens",
        "source",
    ):
        assert k in p, k
    assert p["batch"] == min(64, p["kv_batch_limit"])
    assert t["bound"]["output_tokens_per_s"] >= p["output_tokens_per_s"] > 0
    assert t["prediction_detail"]["blocks_per_sequence"] == math.ceil(2304 / 64)


def test_plan_text_has_prediction_section():
    proc = run_cli(
        "plan",
        str(SPECS / "llama31-8b-fp8-h100.yaml"),
        "--workload",
        "isl=128,osl=128",
        "--concurrency",
        "4",
        "--no-aiconfigurator",
    )
    assert proc.returncode == 0, proc.stderr
    assert "predicted  tier main  isl 128 osl 128  concurrency 4" in proc.stdout
    assert "bound " in proc.stdout and "source calibrated (Hopper/fp8)" in proc.stdout


def test_plan_without_workload_has_no_prediction():
    proc = run_cli("plan", str(SPECS / "llama31-8b-fp8-h100.yaml"), "--json")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert "prediction" not in d["tiers"][0] and "workload" not in d


def test_aic_preference_picks_the_closer_source_per_group(published):
    """A source exact on a group's rows wins it; one 50% off loses to ours (within a few % on average)."""
    doc, cases = published
    loo = [1.1] * len(cases)  # ours 10% high everywhere
    aic_rows = []
    for r, g, _ in cases:
        grp = predict.calibration_group(g.gpu, g.fmt)
        factor = 1.0 if grp == "Hopper/fp8" else 1.5
        aic_rows.append({**r, "raw": {"tokens/s": r["output_tokens_per_s"] * factor}})
    pref = predict_fit.aic_preference(cases, loo, aic_rows)
    assert pref["Hopper/fp8"]["prefer"] == pref["Hopper/fp8 tp8"]["prefer"] == "aiconfigurator"
    assert pref["Blackwell/nvfp4"]["prefer"] == pref["Blackwell/nvfp4 tp1"]["prefer"] == "calibrated"
    assert pref["Hopper/fp8 tp2"]["rows"] == sum(
        1 for r, g, _ in cases if r["tp"] == 2 and g.gpu.arch == "Hopper"
    )
    assert pref["Hopper/fp8"]["mean_abs_log_err_ours_loo"] == pytest.approx(math.log(1.1), abs=1e-4)
    # rows it could not estimate do not count
    pref2 = predict_fit.aic_preference(cases, loo, [{**a, "raw": {}} for a in aic_rows])
    assert pref2 == {}


def test_bound_follows_the_offered_load():
    t = tier("llama31-8b-fp8-h100.yaml")
    g = predict.geometry(t)
    free = predict.bound(g, predict.Workload(512, 128))
    closed = predict.bound(g, predict.Workload(512, 128, concurrency=8))
    assert (free.batch, closed.batch) == (64, 8) and closed.output_tokens_per_s < free.output_tokens_per_s
    opened = predict.bound(g, predict.Workload(512, 128, request_rate=2.0))
    assert (opened.output_tokens_per_s, opened.limited_by) == (256.0, "request rate")
    for w in (predict.Workload(512, 128, concurrency=8), predict.Workload(512, 128, request_rate=2.0)):
        p = predict.predict_tier(t, w, use_aiconfigurator=False).prediction
        assert predict.bound(g, w).output_tokens_per_s >= p.output_tokens_per_s * (1 - 1e-9)


# ------------------------------------------------------------------ regimes the model carries


def _toy(tp: int = 1):
    """A hand-sized geometry: 1 GB of weights, 1 TB/s, 1 PFLOP/s, 2 layers of hidden 1000."""
    from dataclasses import replace

    g = predict.geometry(tier("llama31-8b-fp8-h100.yaml"))
    return replace(
        g,
        gpu=replace(g.gpu, hbm_tb_s=1.0),
        world=tp,
        tp=tp,
        weights=10**9,
        kv_per_token=10**5,
        matmul_flops=2e9,
        attn_flops_per_ctx=1e3,
        layers=2,
        hidden=1000,
        peak=1e15 / tp,  # the replica's total stays 1 PFLOP/s
    )


def test_decode_step_adds_weight_streaming_and_gemm_math():
    """Near the ridge point neither the loads nor the math run alone at their peak: the two add."""
    g = _toy()
    f = predict.Factors(0.5, 1.0, 1.0, 1.0, "test", True)
    w = predict.Workload(isl=100, osl=200)  # mean context 200
    # b=250: weights 1e9 / 1e12 = 1 ms; math 250 x 2e9 / 5e14 = 1 ms (a max() would say 1 ms, not 2);
    # KV 250 x 200 x 1e5 / 1e12 = 5 ms; attention 250 x 1e3 x 200 / 5e14 = 0.1 us
    assert predict.decode_step_s(g, w, 250, f) == pytest.approx(1e-3 + 1e-3 + 5e-3 + 1e-7, rel=1e-12)


def test_nvlink_efficiency_per_architecture():
    calib = {"nvlink": {"Hopper": 0.5, "Blackwell": 0.25}, "default_group": "Hopper/fp8"}
    assert predict.nvlink_efficiency(calib, "Blackwell") == 0.25
    assert predict.nvlink_efficiency(calib, "Ampere") == 0.5  # no published TP rows: the default group's
    assert predict.nvlink_efficiency({"nvlink": 0.4, "default_group": "Hopper/fp8"}, "Blackwell") == 0.4


def test_tp_all_reduce_uses_the_architectures_link_efficiency():
    from dataclasses import replace

    g = _toy(tp=2)  # Hopper: 450 GB/s each way
    stored = predict.load_calibration()
    assert set(stored["nvlink"]) == {"Hopper", "Blackwell"}
    f = predict.factors_for(g.gpu, "fp8", stored)
    assert f.nvlink == stored["nvlink"]["Hopper"]
    step = stored["allreduce_step_latency_s"]
    assert f.allreduce_step_s == step
    # b=250: 2 all-reduces x 2 layers of 250 x 1000 x 2 B = 5e5 B each (the ring's full latency from 0.5 MB):
    # ring 2 (2-1)/2 = 1 of the payload: 2e6 B over 450e9 x eff, plus 4 x (one-shot + 2 ring steps) of latency
    lat = 4 * (predict.ALLREDUCE_ONESHOT_LATENCY_S + 2 * step)
    assert predict.comm_s(g, 250, f) == pytest.approx(lat + 2e6 / (450e9 * f.nvlink), rel=1e-12)
    b200 = replace(g, gpu=replace(g.gpu, arch="Blackwell"))
    fb = predict.factors_for(b200.gpu, "nvfp4", stored)
    assert fb.nvlink == stored["nvlink"]["Blackwell"] != f.nvlink
    assert predict.comm_s(b200, 250, fb) == pytest.approx(lat + 2e6 / (900e9 * fb.nvlink), rel=1e-12)


def test_all_reduce_latency_is_a_ring_of_2_tp_minus_1_steps_past_the_one_shot_range():
    """Hand-computed: from 0.5 MB on (250 hidden states of 1000 x 2 B) the latency of a step does not
    depend on the batch and grows as 2 (TP-1) ring steps; below it the ring part falls linearly, down to
    the one-shot kernel's latency alone."""
    one = predict.ALLREDUCE_ONESHOT_LATENCY_S
    f = predict.Factors(1.0, 1.0, 1.0, 1.0, "test", True, 10e-6)
    for tp, steps in ((2, 2), (4, 6), (8, 14)):
        g = _toy(tp=tp)  # 2 layers: 4 all-reduces a step
        full = one + steps * 10e-6
        for b in (250, 1000):
            assert predict.allreduce_latency_s(g, f, b) == pytest.approx(full, rel=1e-12)
        assert predict.allreduce_latency_s(g, f, 25) == pytest.approx(one + 0.1 * steps * 10e-6, rel=1e-12)
        assert predict.allreduce_latency_s(g, f, 0) == pytest.approx(one, rel=1e-12)
        # b=1000 adds the volume: 2 (tp-1)/tp x 4 x 1000 x 1000 x 2 B over 450 GB/s
        volume = 2 * (tp - 1) / tp * 8e6 / 450e9
        assert predict.comm_s(g, 1000, f) == pytest.approx(4 * full + volume, rel=1e-12)
    g1 = _toy(tp=1)
    assert predict.allreduce_latency_s(g1, f, 1000) == predict.comm_s(g1, 1000, f) == 0.0


def test_calibration_without_a_fitted_step_latency_uses_the_default():
    calib = {**predict.load_calibration()}
    del calib["allreduce_step_latency_s"]
    g = _toy(tp=2)
    f = predict.factors_for(g.gpu, "fp8", calib)
    assert f.allreduce_step_s == predict.ALLREDUCE_STEP_LATENCY_DEFAULT_S == 2e-6
    # the assumption before the step latency was fitted: 8 us for one all-reduce at TP2
    assert predict.allreduce_latency_s(g, f, 10**6) == pytest.approx(8e-6, rel=1e-12)
