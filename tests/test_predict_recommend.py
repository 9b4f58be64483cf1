"""`plan --recommend`: SLO parsing, the search's invariants, and the written spec through `plan` and `emit`."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tritonforge.builder import predict
from tritonforge.builder.predict_recommend import parse_prices, parse_slo, recommend
from tritonforge.errors import UserError


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tritonforge", *args], capture_output=True, text=True, cwd=cwd
    )


def test_parse_slo():
    s = parse_slo("ttft=500ms,itl=30ms")
    assert (s.ttft_ms, s.itl_ms) == (500.0, 30.0)
    s = parse_slo("ttft=1s, tpot=0.05s")
    assert (s.ttft_ms, s.itl_ms) == (1000.0, 50.0)
    assert parse_slo("itl=20").ttft_ms is None
    for bad in ("ttft", "ttft=fast", "latency=3ms", "itl=0ms"):
        with pytest.raises(UserError, match="--slo"):
            parse_slo(bad)


def test_parse_prices():
    assert parse_prices("h100=2.5, B200=6") == {"H100-SXM": 2.5, "B200": 6.0}
    with pytest.raises(UserError, match="--price"):
        parse_prices("H100-SXM:2.5")
    with pytest.raises(UserError, match="unknown GPU"):
        parse_prices("V100=1")


@pytest.fixture(scope="module")
def cands():
    w = predict.Workload(2048, 256)
    return recommend("llama-3.1-70b", w, parse_slo("ttft=1s,itl=50ms"), gpus=["H100-SXM", "H200", "B200"])


def test_every_candidate_meets_the_slo_and_is_ranked_by_cost(cands):
    assert cands
    costs = [c.cost for c in cands]
    assert costs == sorted(costs)
    for c in cands:
        assert c.prediction.ttft_ms <= 1000 and c.prediction.itl_ms <= 50
        assert c.gpu_count <= 8 and c.gpu_count % c.tp == 0
        # no NVFP4 off Blackwell, no FP8 before sm89: the rules dropped them
        assert c.fmt != "nvfp4" or c.gpu == "B200"


def test_batch_is_the_largest_meeting_the_slo(cands):
    from tritonforge.builder.gpus import get_gpu
    from tritonforge.builder.modelref import resolve_model
    from tritonforge.builder.planner import plan_tier
    from tritonforge.builder.spec import parse_spec

    cfg = resolve_model("fixture:llama-3.1-70b").config
    for c in cands[:3]:
        spec = dict(c.spec)
        spec["tiers"] = [
            dict(c.spec["tiers"][0], limits=dict(c.spec["tiers"][0]["limits"], max_batch_size=2048))
        ]
        t = plan_tier(parse_spec(spec).tiers[0], cfg, get_gpu(c.gpu))
        g = predict.geometry(t)
        f = predict.factors_for(g.gpu, g.fmt)
        nxt = predict.predict_model(g, predict.Workload(2048, 256, concurrency=c.batch + 1), f)
        assert (
            c.batch == predict.kv_batch(g, predict.Workload(2048, 256))
            or nxt.itl_ms > 50
            or nxt.ttft_ms > 1000
        )


def test_tighter_slo_costs_more():
    w = predict.Workload(2048, 256)
    loose = recommend("llama-3.1-70b", w, parse_slo("itl=50ms"), gpus=["H100-SXM"])
    tight = recommend("llama-3.1-70b", w, parse_slo("itl=20ms"), gpus=["H100-SXM"])
    assert tight and loose and tight[0].cost > loose[0].cost


def test_cli_recommend_writes_a_spec_plan_and_emit_accept(tmp_path):
    out = tmp_path / "spec.yaml"
    proc = run_cli(
        "plan",
        "--recommend",
        "--model",
        "llama-3.1-70b",
        "--workload",
        "isl=2048,osl=256",
        "--slo",
        "ttft=1s,itl=50ms",
        "--gpus",
        "H100-SXM,H200,B200",
        "--max-gpus",
        "8",
        "-o",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    assert " 1  " in proc.stdout and "$/1M out" in proc.stdout
    spec = yaml.safe_load(out.read_text())
    assert spec["tiers"][0]["runtime"] == "trtllm-engine"
    plan = run_cli("plan", str(out))
    assert plan.returncode == 0, plan.stderr
    emit = run_cli("emit", str(out), "-o", str(tmp_path / "repo"))
    assert emit.returncode == 0, emit.stderr
    assert (tmp_path / "repo").is_dir()


def test_cli_recommend_refuses_to_overwrite_a_foreign_file(tmp_path):
    mine = tmp_path / "notes.yaml"
    mine.write_text("my notes\n")
    proc = run_cli(
        "plan",
        "--recommend",
        "--model",
        "llama-3.1-8b",
        "--workload",
        "isl=128,osl=128",
        "--slo",
        "itl=50ms",
        "-o",
        str(mine),
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert mine.read_text() == "my notes\n"


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--recommend", "--workload", "isl=1,osl=1", "--slo", "itl=5ms"], "needs --model"),
        (
            ["--recommend", "--model", "llama-3.1-8b", "--workload", "isl=1,osl=1", "--slo", "itl=0.001ms"],
            "no deployment",
        ),
        (
            [
                "--recommend",
                "--model",
                "llama-3.1-8b",
                "--workload",
                "isl=1,osl=1",
                "--slo",
                "itl=5ms",
                "--max-gpus",
                "0",
            ],
            "--max-gpus",
        ),
        ([], "needs a SPEC"),
    ],
)
def test_cli_recommend_bad_input_one_line(args, fragment):
    proc = run_cli("plan", *args)
    assert proc.returncode == 2, proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1 and fragment in proc.stderr
