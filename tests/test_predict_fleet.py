"""Speculative decoding, the cascade's blended cost and fleet capacity in `plan --workload`.

Hand-computed values:
- tokens per round E = (1 - a^(K+1)) / (1 - a): a=0.5, K=2 -> 1 + 0.5 + 0.25 = 1.75; a=0.8, K=4 ->
  (1 - 0.32768) / 0.2 = 3.3616; Leviathan et al. 2023 speed-up E / (K c + 1) at c=0.1 -> 3.3616 / 1.4.
- the demo's measured 2.05 tokens per round at K=2: 1 + a + a^2 = 2.05 -> a = (-1 + sqrt(5.2)) / 2.
- blended $/1M: (1 - 0.4) (0.7 x 0.10 + 0.3 x 0.50) = 0.132.
- capacity: 10 and 2 req/s per replica, R=20, h=0.4, shares 0.7/0.3 -> demands 8.4 and 3.6 req/s ->
  1 and 2 replicas; 3 replicas x $8.97/h = $26.91/h; 26.91 / (20 x 256 x 3600) x 1e6 $/1M output tokens.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from tritonforge.builder import predict, predict_fleet
from tritonforge.builder.planner import plan_deployment
from tritonforge.builder.spec import load_spec
from tritonforge.errors import UserError

ROOT = Path(__file__).parent.parent
SPECS = Path(__file__).parent / "fixtures" / "specs"
CASCADE = ROOT / "examples" / "cascade-h100.yaml"
DRAFT = SPECS / "llama31-70b-fp8-draft-h100.yaml"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tritonforge", *args], capture_output=True, text=True)


# ------------------------------------------------------------------------------------ speculation


def test_expected_tokens_per_round_by_hand():
    assert predict_fleet.expected_tokens_per_round(0.5, 2) == pytest.approx(1.75)
    assert predict_fleet.expected_tokens_per_round(0.8, 4) == pytest.approx(3.3616)
    assert predict_fleet.expected_tokens_per_round(0.0, 4) == pytest.approx(1.0)
    assert predict_fleet.expected_tokens_per_round(1.0, 4) == 5.0
    with pytest.raises(ValueError):
        predict_fleet.expected_tokens_per_round(1.2, 4)


def test_leviathan_speedup_by_hand():
    assert predict_fleet.leviathan_speedup(0.8, 4, 0.1) == pytest.approx(3.3616 / 1.4)
    assert predict_fleet.leviathan_speedup(0.0, 2, 0.05) == pytest.approx(1 / 1.1)  # nothing accepted: slower


def test_alpha_from_measured_tokens_per_round():
    assert predict_fleet.alpha_from_tokens_per_round(1.75, 2) == pytest.approx(0.5, abs=1e-9)
    assert predict_fleet.alpha_from_tokens_per_round(2.05, 2) == pytest.approx(
        (-1 + math.sqrt(5.2)) / 2, abs=1e-9
    )
    alpha, src = predict_fleet.acceptance_for(2, None)
    assert alpha == pytest.approx((-1 + math.sqrt(5.2)) / 2, abs=1e-9) and "CPU reference runtime" in src
    assert predict_fleet.acceptance_for(3, None)[1].endswith(
        "at K=4; set draft.acceptance_rate for your models"
    )
    assert predict_fleet.acceptance_for(4, 0.9) == (0.9, "spec (draft.acceptance_rate)")


def test_verify_step_by_hand():
    t = plan_deployment(load_spec(SPECS / "llama31-8b-fp8-h100.yaml"), build_dir="out").tiers[0]
    g = predict.geometry(t)
    g = replace(
        g,
        gpu=replace(g.gpu, hbm_tb_s=1.0),
        world=1,
        tp=1,
        weights=10**9,
        kv_per_token=10**5,
        matmul_flops=2e9,
        attn_flops_per_ctx=1e3,
        peak=1e15,
    )
    f = predict.Factors(1.0, 1.0, 1.0, 1.0, "test", True)
    w = predict.Workload(isl=100, osl=200)
    # b=4, K=3: 16 positions; weights 1e9 B / 1e12 B/s = 1 ms plus GEMM math 16 x 2e9 / 1e15 = 32 us;
    # KV 4 x 200 x 1e5 B / 1e12 = 80 us; attention 16 x 1e3 x 200 / 1e15 = 3.2 ns
    assert predict_fleet.verify_step_s(g, w, 4, 3, f) == pytest.approx(
        1e-3 + 3.2e-5 + 8e-5 + 3.2e-9, rel=1e-12
    )
    # 4000 positions x 2e9 / 1e15 = 8 ms of GEMM math, on top of the 1 ms of weights
    assert predict_fleet.verify_step_s(g, w, 1000, 3, f) == pytest.approx(
        1e-3 + 8e-3 + 1000 * 200 * 1e5 / 1e12 + 4000 * 2e5 / 1e15
    )


def _draft_tier(tmp_path: Path, alpha: float | None):
    data = yaml.safe_load(DRAFT.read_text())
    if alpha is not None:
        data["tiers"][0]["draft"]["acceptance_rate"] = alpha
    p = tmp_path / "draft.yaml"
    p.write_text(yaml.safe_dump(data))
    return p, plan_deployment(load_spec(p), build_dir="out").tiers[0]


def test_speculation_uses_the_spec_acceptance_and_can_slow_down(tmp_path):
    w = predict.Workload(isl=512, osl=256, concurrency=1)
    _, t = _draft_tier(tmp_path, 0.0)
    tp = predict.predict_tier(t, w, use_aiconfigurator=False)
    sp = tp.speculation
    assert sp.acceptance_source == "spec (draft.acceptance_rate)" and sp.expected_tokens_per_round == 1.0
    assert (
        sp.speedup < 1 and not sp.helps and sp.itl_ms > tp.prediction.itl_ms
    )  # every round yields one token
    _, t = _draft_tier(tmp_path, 0.9)
    tp = predict.predict_tier(t, w, use_aiconfigurator=False)
    sp = tp.speculation
    assert sp.helps and sp.output_tokens_per_s > tp.prediction.output_tokens_per_s
    assert (
        sp.speedup <= sp.speedup_leviathan * 1.001
    )  # verification is never cheaper than the paper's one step
    assert sp.usd_per_1m_output_tokens < tp.prediction.usd_per_1m_output_tokens
    assert sp.speedup_by_draft_tokens[sp.num_draft_tokens] == pytest.approx(sp.speedup)
    assert sp.speedup_by_draft_tokens[sp.best_num_draft_tokens] == max(sp.speedup_by_draft_tokens.values())


def test_a_small_draft_pool_caps_the_batch(tmp_path):
    data = yaml.safe_load(DRAFT.read_text())
    data["tiers"][0]["draft"]["kv_cache_free_gpu_mem_fraction"] = 0.01
    p = tmp_path / "small-draft-pool.yaml"
    p.write_text(yaml.safe_dump(data))
    t = plan_deployment(load_spec(p), build_dir="out").tiers[0]
    w = predict.Workload(isl=512, osl=256)
    tp = predict.predict_tier(t, w, use_aiconfigurator=False)
    # draft sequences = (pool tokens // 32) // ceil((512 + 256 + 4) / 32)
    seqs = (t.draft.memory.kv_pool_tokens // 32) // math.ceil(772 / 32)
    assert 1 <= seqs < tp.prediction.batch
    sp = tp.speculation
    assert sp.batch == seqs and any("draft's KV pool holds" in n for n in sp.notes)
    assert sp.output_tokens_per_s == pytest.approx(
        tp.prediction.output_tokens_per_s * seqs / tp.prediction.batch * sp.speedup, rel=1e-3
    )


def test_acceptance_rate_is_a_planning_figure_not_in_the_hash(tmp_path):
    p, _ = _draft_tier(tmp_path, 0.7)
    assert load_spec(p).spec_hash() == load_spec(DRAFT).spec_hash()
    bad = yaml.safe_load(DRAFT.read_text())
    bad["tiers"][0]["draft"]["acceptance_rate"] = 1.5
    q = tmp_path / "bad.yaml"
    q.write_text(yaml.safe_dump(bad))
    proc = run_cli("plan", str(q))
    assert (
        proc.returncode == 2
        and "acceptance_rate" in proc.stderr
        and len(proc.stderr.strip().splitlines()) == 1
    )


# ---------------------------------------------------------------------------------------- cascade


def test_blended_cost_by_hand():
    shares = {"small": 0.7, "large": 0.3}
    assert predict_fleet.blended_cost({"small": 0.10, "large": 0.50}, shares, 0.4) == pytest.approx(0.132)
    assert predict_fleet.blended_cost({"small": 0.10, "large": None}, shares, 0.0) is None
    assert predict_fleet.blended_cost(
        {"small": 0.10, "large": None}, {"small": 1.0, "large": 0.0}, 0.5
    ) == pytest.approx(0.05)
    assert predict_fleet.tier_request_rates(20, shares, 0.4) == pytest.approx({"small": 8.4, "large": 3.6})


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("small=0.7,large=0.2", "sum to 0.9"),
        ("small=0.7,medium=0.3", "'medium' is not a tier"),
        ("small=0.5,small=0.5", "given twice"),
        ("small", "cannot read"),
    ],
)
def test_parse_traffic_share_rejects(text, fragment):
    with pytest.raises(UserError, match=fragment):
        predict_fleet.parse_traffic_share(text, ["small", "large"])


def test_cascade_json_blends_per_tier_costs():
    proc = run_cli(
        "plan",
        str(CASCADE),
        "--json",
        "--workload",
        "isl=2048,osl=256",
        "--no-aiconfigurator",
        "--traffic-share",
        "small=0.7,large=0.3",
        "--cache-hit-rate",
        "0.4",
    )
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    c = d["cascade"]
    costs = {t["name"]: t["prediction"]["usd_per_1m_output_tokens"] for t in d["tiers"]}
    assert c["tier_usd_per_1m_output_tokens"] == costs
    assert c["usd_per_1m_output_tokens"] == pytest.approx(
        0.6 * (0.7 * costs["small"] + 0.3 * costs["large"]), abs=1e-3
    )
    assert all(t["speculation"] is None for t in d["tiers"])


def test_draft_tier_json_carries_speculation():
    proc = run_cli(
        "plan",
        str(DRAFT),
        "--json",
        "--workload",
        "isl=512,osl=256",
        "--concurrency",
        "1",
        "--no-aiconfigurator",
    )
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    sp = d["tiers"][0]["speculation"]
    k = sp["num_draft_tokens"]
    assert sp["expected_tokens_per_round"] == pytest.approx(
        predict_fleet.expected_tokens_per_round(sp["acceptance_rate"], k), abs=1e-3
    )
    assert sp["itl_ms"] == pytest.approx(d["tiers"][0]["prediction"]["itl_ms"] / sp["speedup"], rel=1e-3)
    assert d["cascade"]["usd_per_1m_output_tokens"] == sp["usd_per_1m_output_tokens"]  # one tier, no cache


# --------------------------------------------------------------------------------------- capacity


def _cap(rate: float | None, replicas: int = 3, deploy_range=None):
    return predict_fleet.fleet_capacity(
        {"small": 10.0, "large": 2.0},
        {"small": 2.99, "large": 5.98},
        {"small": 1, "large": 2},
        {"small": 0.7, "large": 0.3},
        replicas=replicas,
        isl=2048,
        osl=256,
        request_rate=rate,
        hit_rate=0.4,
        deploy_range=deploy_range,
    )


def test_fleet_capacity_by_hand():
    c = _cap(20.0)
    by = {t.name: t for t in c.tiers}
    assert by["small"].replicas_needed == 1 and by["large"].replicas_needed == 2
    assert c.replicas_needed == 2 and c.enough is True
    assert by["large"].utilization == pytest.approx(3.6 / 6)
    assert c.usd_per_hour == pytest.approx(26.91)
    assert c.max_request_rate == pytest.approx(min(30 / 0.42, 6 / 0.18))
    assert c.usd_per_1m_output_tokens == pytest.approx(26.91 / (20 * 256 * 3600) * 1e6)
    assert c.usd_per_1m_tokens == pytest.approx(26.91 / (20 * 2304 * 3600) * 1e6)
    assert c.usd_per_1m_output_tokens_right_sized == pytest.approx(2 * 8.97 / (20 * 256 * 3600) * 1e6)


def test_fleet_capacity_over_capacity_and_deploy_range():
    c = _cap(40.0, deploy_range=(1, 3))
    assert c.replicas_needed == 4 and c.enough is False  # large: 40 x 0.6 x 0.3 = 7.2 req/s / 2 -> 4
    assert c.usd_per_1m_output_tokens == pytest.approx(
        26.91 / ((6 / 0.18) * 256 * 3600) * 1e6
    )  # served = capacity
    assert any("raise it to 4" in n for n in c.notes)
    c = _cap(None)
    assert c.replicas_needed is None and c.usd_per_1m_output_tokens == pytest.approx(
        26.91 / ((6 / 0.18) * 256 * 3600) * 1e6
    )


def test_plan_replicas_json_consistent_with_its_predictions():
    proc = run_cli(
        "plan",
        str(CASCADE),
        "--json",
        "--workload",
        "isl=2048,osl=256",
        "--no-aiconfigurator",
        "--traffic-share",
        "small=0.7,large=0.3",
        "--cache-hit-rate",
        "0.4",
        "--replicas",
        "3",
        "--request-rate",
        "20",
    )
    assert proc.returncode == 0, proc.stderr
    cap = json.loads(proc.stdout)["capacity"]
    for t in cap["tiers"]:
        assert t["replicas_needed"] == math.ceil(t["demand_requests_per_s"] / t["requests_per_s_per_replica"])
    assert cap["replicas_needed"] == max(t["replicas_needed"] for t in cap["tiers"])
    assert cap["usd_per_hour"] == pytest.approx(3 * (2.99 + 2 * 2.99))
    assert cap["tiers"][0]["demand_requests_per_s"] == pytest.approx(20 * 0.6 * 0.7)
    tiers = {t["name"]: t for t in json.loads(proc.stdout)["tiers"]}
    # below capacity the blend of per-tier costs at their load is the fleet's $/hour over the tokens it emits
    assert json.loads(proc.stdout)["cascade"]["usd_per_1m_output_tokens"] == pytest.approx(
        cap["usd_per_1m_output_tokens"], rel=1e-3
    )
    assert tiers["small"]["workload"]["request_rate"] == pytest.approx(
        20 * 0.6 * 0.7 / 3
    )  # one replica's share
    text = run_cli(
        "plan",
        str(CASCADE),
        "--workload",
        "isl=2048,osl=256",
        "--no-aiconfigurator",
        "--traffic-share",
        "small=0.7,large=0.3",
        "--replicas",
        "3",
        "--request-rate",
        "20",
    )
    assert (
        text.returncode == 0
        and "capacity   3 replicas" in text.stdout
        and "fleet      $26.91/hour" in text.stdout
    )


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--replicas", "2"], "--replicas needs --workload"),
        (["--workload", "isl=128,osl=128", "--replicas", "0"], "--replicas must be between 1 and 1000"),
        (["--workload", "isl=128,osl=128", "--cache-hit-rate", "1.0"], "--cache-hit-rate must be a fraction"),
        (["--workload", "isl=128,osl=128", "--traffic-share", "small=0.5,large=0.4"], "sum to 0.9"),
        (["--workload", "isl=128,osl=128", "--replicas", "2"], "needs --traffic-share"),
    ],
)
def test_bad_fleet_options_one_line_exit_2(args, fragment):
    proc = run_cli("plan", str(CASCADE), *args)
    assert proc.returncode == 2, proc.stdout
    assert (
        fragment in proc.stderr
        and len(proc.stderr.strip().splitlines()) == 1
        and "Traceback" not in proc.stderr
    )


def test_cache_hit_rate_needs_the_cache():
    proc = run_cli(
        "plan",
        str(SPECS / "llama31-8b-fp8-h100.yaml"),
        "--workload",
        "isl=128,osl=128",
        "--cache-hit-rate",
        "0.3",
    )
    assert (
        proc.returncode == 2 and "cache is off" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    )


def test_plan_without_workload_does_not_load_the_models():
    code = (
        "import sys\nfrom tritonforge.cli import cli\n"
        f"try:\n    cli.main(['plan', {str(SPECS / 'llama31-8b-fp8-h100.yaml')!r}], standalone_mode=False)\n"
        "except SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('tritonforge.builder.predict')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_cpu_tiers_use_the_measured_cpu_system_for_capacity():
    from tritonforge.builder import cpu_system

    plan = plan_deployment(load_spec(ROOT / "examples" / "cascade-cpu.yaml"), build_dir="out")
    w = predict.Workload(isl=64, osl=64)
    preds = predict.predict_plan(plan, w)
    sysm = cpu_system.load_system()
    for t in plan.tiers:
        s = t.shape
        cost = cpu_system.ModelCost(
            2.0 * (s.num_layers * s.layer_linear_params + s.vocab_size * s.hidden_size),
            4.0 * s.num_layers * s.q_dim,
            t.model,
        )
        direct = cpu_system.predict_cpu(sysm, w, t.engine.max_batch_size, cost)
        assert preds[t.name].prediction.output_tokens_per_s == pytest.approx(direct.output_tokens_per_s)
        assert preds[t.name].bound is None and preds[t.name].speculation is None
    cap = predict_fleet.capacity_for_plan(
        plan,
        preds,
        {"small": 0.5, "large": 0.5},
        replicas=2,
        isl=64,
        osl=64,
        request_rate=30.0,
        hit_rate=0.3,
        deploy_range=(1, 4),
    )
    for tc in cap.tiers:
        per = preds[tc.name].prediction.output_tokens_per_s / 64
        assert tc.requests_per_s_per_replica == pytest.approx(per)
        assert tc.replicas_needed == math.ceil(30 * 0.7 * 0.5 / per)
    assert cap.usd_per_hour == 0 and cap.usd_per_1m_output_tokens is None  # CPU replicas carry no GPU price


def _cascade_spec(tmp_path: Path, share: dict, hit: float | None) -> Path:
    data = yaml.safe_load(CASCADE.read_text())
    data["router"]["traffic_share"] = share
    if hit is not None:
        data["cache"]["expected_hit_rate"] = hit
    p = tmp_path / "cascade.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_spec_traffic_share_and_hit_rate_feed_the_blend(tmp_path):
    p = _cascade_spec(tmp_path, {"small": 0.8, "large": 0.2}, 0.25)
    assert (
        load_spec(p).spec_hash() == load_spec(CASCADE).spec_hash()
    )  # planning figures, not the repository's
    proc = run_cli("plan", str(p), "--json", "--workload", "isl=1024,osl=128", "--no-aiconfigurator")
    assert proc.returncode == 0, proc.stderr
    c = json.loads(proc.stdout)["cascade"]
    cost = c["tier_usd_per_1m_output_tokens"]
    assert c["traffic_share"] == {"small": 0.8, "large": 0.2} and c["cache_hit_rate"] == 0.25
    assert c["usd_per_1m_output_tokens"] == pytest.approx(
        0.75 * (0.8 * cost["small"] + 0.2 * cost["large"]), abs=1e-3
    )
    # the command line wins over the spec
    proc = run_cli(
        "plan",
        str(p),
        "--json",
        "--workload",
        "isl=1024,osl=128",
        "--no-aiconfigurator",
        "--traffic-share",
        "small=1,large=0",
        "--cache-hit-rate",
        "0",
    )
    c = json.loads(proc.stdout)["cascade"]
    assert c["usd_per_1m_output_tokens"] == pytest.approx(
        c["tier_usd_per_1m_output_tokens"]["small"], abs=1e-4
    )


@pytest.mark.parametrize(
    "share, fragment",
    [
        ({"small": 0.5, "large": 0.2}, "summing to 1"),
        ({"small": 0.5, "huge": 0.5}, "'huge' is not a tier"),
    ],
)
def test_bad_spec_traffic_share_is_one_line(tmp_path, share, fragment):
    proc = run_cli("plan", str(_cascade_spec(tmp_path, share, None)))
    assert proc.returncode == 2 and fragment in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
