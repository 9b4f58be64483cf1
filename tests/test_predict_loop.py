"""Predicted vs measured in load-test reports: the join, the CPU system's arithmetic, the gate (fast)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tritonforge.builder import cpu_system
from tritonforge.builder.predict import Workload
from tritonforge.builder.spec import load_spec
from tritonforge.errors import UserError
from tritonforge.loadtest import predicted
from tritonforge.loadtest.models import LevelMetrics, PredictionCheck, Report
from tritonforge.loadtest.report import render_html, summary_table
from tritonforge.loadtest.workload import WorkloadSpec

ROOT = Path(__file__).resolve().parents[1]

SYSTEM = cpu_system.CpuSystem(
    step_overhead_s=0.010,
    per_sequence_s=0.002,
    per_sequence_per_ctx_token_s=0.0,
    prefill_fixed_s=0.005,
    prefill_per_token_s=0.0001,
    prefill_per_token_squared_s=0.0,
    matmul_flops_per_token=1e6,
    attn_flops_per_ctx_token=1e3,
    measured="2026-01-01",
    machine="test",
    model="demo",
)


def test_cpu_prediction_single_user_by_hand() -> None:
    p = cpu_system.predict_cpu(SYSTEM, Workload(100, 11, concurrency=1), 8)
    # prefill 0.005 + 100 x 0.0001 = 15 ms; one sequence decodes at 10 + 2 = 12 ms a step
    assert p.ttft_ms == pytest.approx(15.0)
    assert p.itl_ms == pytest.approx(12.0)
    assert p.request_latency_ms == pytest.approx(15 + 10 * 12)
    assert p.output_tokens_per_s == pytest.approx(11 / 0.135)
    assert p.batch == 1 and not p.saturated


def test_cpu_prediction_shared_steps_by_hand() -> None:
    p = cpu_system.predict_cpu(SYSTEM, Workload(100, 11, concurrency=3), 8)
    itl = 0.016 + 2 / 11 * 0.015  # decode of 3, plus the other two users' prefills once per 11 steps each
    ttft = 0.015 + 0.014 + itl / 2  # its prefill, after the running step and the decode of the other two
    assert p.itl_ms == pytest.approx(itl * 1e3)
    assert p.ttft_ms == pytest.approx(ttft * 1e3)
    assert p.output_tokens_per_s == pytest.approx(3 * 11 / (ttft + 10 * itl))


def test_cpu_prediction_queues_beyond_max_batch() -> None:
    full = cpu_system.predict_cpu(SYSTEM, Workload(100, 11, concurrency=8), 8)
    over = cpu_system.predict_cpu(SYSTEM, Workload(100, 11, concurrency=16), 8)
    assert over.saturated and over.batch == 8
    assert over.output_tokens_per_s == pytest.approx(full.output_tokens_per_s)
    assert over.request_latency_ms == pytest.approx(2 * full.request_latency_ms)  # Little's law
    assert over.itl_ms == pytest.approx(full.itl_ms)


def test_cpu_prediction_lockstep_by_hand() -> None:
    p = cpu_system.predict_cpu(SYSTEM, Workload(100, 11, concurrency=3), 8, lockstep=True)
    ttft = 0.005 + 3 * 0.01  # the three prompts prefilled in one step
    assert p.itl_ms == pytest.approx(16.0)  # decode of 3, no prefill between (all finish together)
    assert p.ttft_ms == pytest.approx(ttft * 1e3)
    assert p.output_tokens_per_s == pytest.approx(3 * 11 / (ttft + 10 * 0.016))
    assert any("lockstep" in n for n in p.notes)
    rate = cpu_system.predict_cpu(SYSTEM, Workload(100, 11, request_rate=2.0), 8, lockstep=True)
    assert not any("lockstep" in n for n in rate.notes)  # an open loop never is


def test_lockstep_only_for_fixed_lengths_all_at_once() -> None:
    assert predicted.lockstep(WorkloadSpec(isl=64, osl=32), "concurrency")
    assert not predicted.lockstep(WorkloadSpec(isl=64, osl=32), "rate")
    assert not predicted.lockstep(WorkloadSpec(isl=64, osl=32), "concurrency", spawn_rate=1.0)
    assert not predicted.lockstep(WorkloadSpec(isl=64, osl=32, osl_std=8), "concurrency")
    assert not predicted.lockstep(WorkloadSpec(isl=64, osl=32, fixed_output=False), "concurrency")


def test_cpu_prediction_request_rate_is_littles_law() -> None:
    p = cpu_system.predict_cpu(SYSTEM, Workload(100, 11, request_rate=2.0), 8)
    assert p.output_tokens_per_s == pytest.approx(22.0)
    assert p.concurrency == pytest.approx(2.0 * p.request_latency_ms / 1e3, rel=1e-3)


def test_cpu_prediction_scales_per_token_costs_for_another_model() -> None:
    big = cpu_system.ModelCost(2e6, 1e3, "x")  # twice the matmul FLOPs per token
    p = cpu_system.predict_cpu(SYSTEM, Workload(100, 11, concurrency=1), 8, big)
    assert p.itl_ms == pytest.approx(10 + 2 * 2)  # the fixed step cost is not scaled
    assert p.ttft_ms == pytest.approx(5 + 2 * 10)
    assert any("scaled" in n for n in p.notes)


def test_checked_in_system_loads_and_names_machine() -> None:
    s = cpu_system.load_system()
    assert s.per_sequence_s > 0 and s.prefill_per_token_s > 0
    assert "cores" in s.machine and s.measured[:4].isdigit()


def test_bad_system_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "s.json"
    bad.write_text("{}")
    with pytest.raises(UserError, match="not a fitted system"):
        cpu_system.load_system(bad)
    with pytest.raises(UserError, match="not found"):
        cpu_system.load_system(tmp_path / "missing.json")


METRICS = LevelMetrics.from_dict(
    {
        "requests": 10,
        "completed": 10,
        "output_tokens_per_s": 90.0,
        "ttft_ms": {"count": 10, "avg": 30.0},
        "itl_ms": {"count": 10, "avg": 10.0},
        "e2e_ms": {"count": 10, "avg": 200.0},
        "output_tokens_per_s_per_user": {"count": 10, "avg": 100.0},
    }
)
PRED = {
    "ttft_ms": 20.0,
    "itl_ms": 10.0,
    "request_latency_ms": 250.0,
    "output_tokens_per_s": 100.0,
    "output_tokens_per_s_per_user": 100.0,
}


def test_join_ratios_and_fraction_of_prediction() -> None:
    rows = {r.metric: r for r in predicted.join(PRED, METRICS)}
    assert set(rows) == {"ttft_ms", "itl_ms", "e2e_ms", "output_tokens_per_s", "output_tokens_per_s_per_user"}
    assert rows["ttft_ms"].ratio == 1.5 and rows["ttft_ms"].of_prediction == pytest.approx(20 / 30, abs=1e-4)
    assert rows["e2e_ms"].ratio == 0.8 and rows["e2e_ms"].of_prediction == 1.25  # faster than predicted
    assert rows["output_tokens_per_s"].ratio == 0.9 and rows["output_tokens_per_s"].of_prediction == 0.9
    assert rows["e2e_ms"].measured_stat == "e2e_ms.avg"


def test_join_without_a_measurement_has_no_ratio() -> None:
    m = LevelMetrics.from_dict({"requests": 3, "output_tokens_per_s": 50.0, "ttft_ms": {"count": 0}})
    rows = {r.metric: r for r in predicted.join(PRED, m)}
    assert (
        rows["ttft_ms"].measured is None
        and rows["ttft_ms"].ratio is None
        and rows["ttft_ms"].of_prediction is None
    )
    assert rows["output_tokens_per_s"].ratio == 0.5


def _report(pred: dict = PRED) -> Report:
    rows = [r.to_dict() for r in predicted.join(pred, METRICS)]
    return Report.from_dict(
        {
            "schema": "tritonforge.loadtest/1",
            "config": {"model": "ensemble", "protocol": "http-stream"},
            "levels": [
                {
                    "label": "c=4",
                    "mode": "concurrency",
                    "value": 4,
                    "metrics": METRICS.to_dict(),
                    "prediction": {"source": "test", "predicted": pred, "rows": rows},
                }
            ],
        }
    )


def test_gate_one_line_per_failing_metric() -> None:
    gate = predicted.check(_report(), 0.75)
    assert gate["checked"] == 5 and gate["failed"]
    assert len(gate["failures"]) == 1 and gate["failures"][0].startswith(
        "c=4 ttft_ms: measured 30.00 ms is 67%"
    )
    assert not predicted.check(_report(), 0.6)["failed"]
    assert len(predicted.check(_report(), 0.95)["failures"]) == 2  # TTFT and throughput (90%)


@pytest.mark.parametrize("text,value", [("75%", 0.75), ("0.75", 0.75), (" 90 % ", 0.9), ("100%", 1.0)])
def test_min_of_prediction_parses(text: str, value: float) -> None:
    assert predicted.parse_min_of_prediction(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "abc", "-5%", "0", "0%", "2000%", "75%%", "75 percent"])
def test_min_of_prediction_rejects(text: str) -> None:
    with pytest.raises(UserError, match="--min-of-prediction"):
        predicted.parse_min_of_prediction(text)


def test_summary_and_html_show_predicted_vs_measured() -> None:
    rep = _report()
    rep.prediction_check = PredictionCheck.from_dict(predicted.check(rep, 0.75))
    text = summary_table(rep)
    assert "predicted vs measured" in text
    assert re.search(r"^c=4 +ttft_ms +20\.00 +30\.00 +1\.50 +67%$", text, re.M)
    html = render_html(rep, [])
    assert "Predicted vs measured" in html and "below 75% of the prediction" in html


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tritonforge", "loadtest", *args], capture_output=True, text=True, timeout=120
    )


def test_check_command_exit_codes(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text(_report().to_json())
    bad = _cli("check", str(path), "--min-of-prediction", "75%")
    assert bad.returncode == 1, bad.stderr
    assert [ln for ln in bad.stdout.splitlines() if ln.startswith("BELOW PREDICTION:")] == [
        "BELOW PREDICTION: " + predicted.check(_report(), 0.75)["failures"][0]
    ]
    ok = _cli("check", str(path), "--min-of-prediction", "60%")
    assert ok.returncode == 0 and "all 5 metrics at or above 60%" in ok.stdout
    wrong = _cli("check", str(path), "--min-of-prediction", "lots")
    assert (
        wrong.returncode == 2
        and len(wrong.stderr.strip().splitlines()) == 1
        and "--min-of-prediction" in wrong.stderr
    )
    bare = tmp_path / "bare.json"
    data = json.loads(path.read_text())
    del data["levels"][0]["prediction"]
    bare.write_text(json.dumps(data))
    none = _cli("check", str(bare), "--min-of-prediction", "75%")
    assert none.returncode == 2 and "no predicted-vs-measured rows" in none.stderr
    cmp = _cli("compare", str(path), str(path), "--min-of-prediction", "75%")
    assert (
        cmp.returncode == 1
        and "no regression" in cmp.stdout
        and "BELOW PREDICTION: c=4 ttft_ms" in cmp.stdout
    )


def test_level_workload_uses_workload_lengths_and_level_load() -> None:
    w = predicted.level_workload(WorkloadSpec(isl=64, osl=32), "concurrency", 4, METRICS)
    assert (w.isl, w.osl, w.concurrency, w.request_rate) == (64, 32, 4, None)
    traced = LevelMetrics.from_dict(
        {
            "input_tokens_per_request": {"count": 2, "avg": 99.6},
            "output_tokens_per_request": {"count": 2, "avg": 20.2},
        }
    )
    w = predicted.level_workload(WorkloadSpec(trace="t.jsonl"), "rate", 2.5, traced)
    assert (w.isl, w.osl, w.concurrency, w.request_rate) == (100, 20, None, 2.5)


def test_predictor_for_cpu_and_gpu_specs() -> None:
    cpu, _ = predicted.make_predictor(load_spec(ROOT / "examples" / "cpu-demo.yaml"), None, None)
    p, system = cpu(Workload(64, 32, concurrency=4), False)
    assert system.startswith("cpu-reference system") and p.batch == 4 and p.output_tokens_per_s > 0
    gpu, _ = predicted.make_predictor(load_spec(ROOT / "examples" / "llama3.1-8b-fp8-h100.yaml"), None, None)
    p, system = gpu(Workload(128, 128, concurrency=8), False)
    assert "H100" in system and p.ttft_ms > 0 and p.output_tokens_per_s > 0
    lp = predicted.level_prediction(gpu, "", Workload(128, 128, concurrency=8), METRICS)
    assert lp.source and len(lp.rows) == 5
    none, why = predicted.make_predictor(None, None, None)
    assert none is None and "--spec" in why
    assert predicted.level_prediction(None, why, Workload(1, 1), METRICS).note == why


def test_cpu_prediction_scales_with_the_engines_share_of_a_core() -> None:
    shared = cpu_system.CpuSystem(**{**SYSTEM.__dict__, "cpu_share": 0.5})
    base = cpu_system.predict_cpu(shared, Workload(100, 11, concurrency=1), 8)
    same = cpu_system.predict_cpu(shared, Workload(100, 11, concurrency=1), 8, cpu_share=0.5)
    slower = cpu_system.predict_cpu(shared, Workload(100, 11, concurrency=1), 8, cpu_share=0.25)
    assert same.itl_ms == pytest.approx(base.itl_ms) == pytest.approx(12.0)
    assert slower.itl_ms == pytest.approx(24.0) and slower.ttft_ms == pytest.approx(30.0)
    assert any("x2.00" in n for n in slower.notes)
    unknown = cpu_system.predict_cpu(SYSTEM, Workload(100, 11, concurrency=1), 8, cpu_share=0.25)
    assert unknown.itl_ms == pytest.approx(12.0)  # the system did not record its share: no scaling


def _fake_proc(root: Path, pid: int, argv: list[str], threads: dict[int, tuple[int, int]]) -> None:
    d = root / str(pid)
    (d / "task").mkdir(parents=True)
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    for tid, (ut, st) in threads.items():
        (d / "task" / str(tid)).mkdir()
        rest = ["S"] + ["0"] * 10 + [str(ut), str(st)] + ["0"] * 20  # fields 3.. of proc(5) stat
        (d / "task" / str(tid) / "stat").write_text(f"{tid} (triton_python_b) " + " ".join(rest) + "\n")


def test_engine_threads_found_and_read_from_proc(tmp_path: Path) -> None:
    from tritonforge.loadtest import cpushare

    repo = tmp_path / "repo"
    stub = "/x/triton_python_backend_stub"
    _fake_proc(
        tmp_path, 10, [stub, f"{repo.resolve()}/tensorrt_llm/1/model.py", "shm"], {10: (5, 1), 11: (300, 20)}
    )
    _fake_proc(tmp_path, 20, [stub, f"{repo.resolve()}/preprocessing/1/model.py", "shm"], {20: (900, 0)})
    _fake_proc(tmp_path, 30, ["/usr/bin/python", f"{repo.resolve()}/tensorrt_llm/1/model.py"], {30: (1, 1)})
    (tmp_path / "self").mkdir()
    assert cpushare.engine_pids("http://127.0.0.1:8000", str(repo), tmp_path) == [10]
    assert cpushare.engine_pids("http://10.1.2.3:8000", str(repo), tmp_path) == []  # a remote server
    assert cpushare.thread_ticks([10], tmp_path) == {(10, 10): 6, (10, 11): 320}


def test_run_options_checked_before_any_request(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9"  # nothing listens: an error about the options must come first
    bad = _cli("--url", url, "--min-of-prediction", "x", "-o", str(tmp_path / "o"))
    assert (
        bad.returncode == 2
        and "--min-of-prediction" in bad.stderr
        and len(bad.stderr.strip().splitlines()) == 1
    )
    missing = _cli("--url", url, "--cpu-system", str(tmp_path / "none.json"), "-o", str(tmp_path / "o"))
    assert (
        missing.returncode == 2
        and "CPU system file" in missing.stderr
        and len(missing.stderr.strip().splitlines()) == 1
    )
    assert not (tmp_path / "o").exists()


def test_busy_share_undoes_the_load_generators_start_and_stop() -> None:
    """The meter's window is the run's wall time; the engine only works while requests run."""
    m = LevelMetrics.from_dict(
        {"requests": 3, "completed": 3, "failed": 0, "duration_s": 8.0, "wall_s": 12.0}
    )
    assert predicted.busy_share(0.4, m) == pytest.approx(0.6)  # 0.4 x 12 / 8
    assert predicted.busy_share(0.9, m) == 1.0  # never more than a core
    assert predicted.busy_share(None, m) is None
    no_wall = LevelMetrics.from_dict({"requests": 3, "completed": 3, "failed": 0, "duration_s": 8.0})
    assert predicted.busy_share(0.4, no_wall) == 0.4
    # the prediction of the level uses it: a system measured at share 0.3 runs 2x faster at 0.6
    shared = cpu_system.CpuSystem(**{**SYSTEM.__dict__, "cpu_share": 0.3})

    def pred(w, lock, share):
        return cpu_system.predict_cpu(shared, w, 8, None, lock, share), "test"

    lp = predicted.level_prediction(pred, "", Workload(100, 11, concurrency=1), m, False, 0.4)
    assert lp.predicted is not None and lp.predicted["itl_ms"] == pytest.approx(6.0)  # 12 ms x 0.3 / 0.6


def test_serving_stack_overhead_is_on_the_first_tokens_path_only() -> None:
    stack = cpu_system.CpuSystem(**{**SYSTEM.__dict__, "request_overhead_s": 0.004, "cpu_share": 0.5})
    one = cpu_system.predict_cpu(stack, Workload(100, 11, concurrency=1), 8)
    # prefill 5 ms + 100 x 0.1 ms = 15 ms, plus 4 ms of pre/postprocessing; ITL untouched: 10 + 2 ms
    assert one.ttft_ms == pytest.approx(19.0) and one.itl_ms == pytest.approx(12.0)
    assert one.request_latency_ms == pytest.approx(19.0 + 10 * 12.0)
    # (a closed loop with fixed lengths: tests/test_predict_cpu_lockstep.py)
    # the stack shares the host: half the share, twice the time
    slow = cpu_system.predict_cpu(stack, Workload(100, 11, concurrency=1), 8, cpu_share=0.25)
    assert slow.ttft_ms == pytest.approx(38.0)


def test_system_file_reads_the_serving_section(tmp_path: Path) -> None:
    d = json.loads(cpu_system.SYSTEM_FILE.read_text())
    assert cpu_system.CpuSystem.from_dict(d).request_overhead_s == d["serving"]["request_overhead_s"] > 0
    per_user = cpu_system.CpuSystem.from_dict(d).request_overhead_per_user_s
    assert per_user == d["serving"]["request_overhead_per_user_s"] > 0
    d.pop("serving")
    assert cpu_system.CpuSystem.from_dict(d).request_overhead_s == 0.0  # a file measured before: none


def test_served_engine_pays_per_sequence_per_step() -> None:
    served = cpu_system.CpuSystem(**{**SYSTEM.__dict__, "per_sequence_step_s": 0.001})
    # lockstep, 4 users: decode 10 ms + 4 x 2 ms + 4 x 1 ms of sends = 22 ms; TTFT (one prefill of 4) unchanged
    four = cpu_system.predict_cpu(served, Workload(100, 11, concurrency=4), 8, lockstep=True)
    assert four.itl_ms == pytest.approx(22.0) and four.ttft_ms == pytest.approx(45.0)
    d = json.loads(cpu_system.SYSTEM_FILE.read_text())
    assert cpu_system.CpuSystem.from_dict(d).per_sequence_step_s == d["serving"]["per_sequence_step_s"]


def _stack_level(users: int, ms_each: float) -> dict:
    """A closed-loop level whose three stack models each took `ms_each` per request (Triton's metrics)."""
    models = {
        m: {"avg_request_us": ms_each * 1e3} for m in ("preprocessing", "tensorrt_llm", "postprocessing")
    }
    return {
        "label": f"c={users}",
        "mode": "concurrency",
        "value": users,
        "server_metrics": {"models": models},
    }


def test_serving_report_fits_the_stack_time_per_other_user(tmp_path: Path) -> None:
    system = json.loads(cpu_system.SYSTEM_FILE.read_text())
    system.pop("serving")
    out = tmp_path / "system.json"
    out.write_text(json.dumps(system))
    # report a: 3 ms at c=1, 6 at c=4, 10 at c=8: +1 ms per other user at both; report b: 4 ms, 10 at c=4: +2
    a = {"levels": [_stack_level(1, 1.0), _stack_level(4, 2.0), _stack_level(8, 10 / 3)]}
    b = {"levels": [_stack_level(1, 4 / 3), _stack_level(4, 10 / 3)]}
    paths = []
    for name, report in (("a", a), ("b", b)):
        (tmp_path / name).mkdir()
        paths.append(tmp_path / name / "report.json")
        paths[-1].write_text(json.dumps(report))
    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_cpu_system.py"
    run = subprocess.run(
        [sys.executable, str(bench), "--serving-report", *map(str, paths), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    serving = json.loads(out.read_text())["serving"]
    assert serving["request_overhead_s"] == pytest.approx(0.0035)  # median of 3 and 4 ms
    assert serving["request_overhead_per_user_points_s"] == pytest.approx([0.001, 0.001, 0.002], abs=1e-6)
    assert serving["request_overhead_per_user_s"] == pytest.approx(0.001)
    sysm = cpu_system.CpuSystem.from_dict(json.loads(out.read_text()))
    assert cpu_system._Costs(sysm, None, Workload(100, 11, concurrency=8)).stack(8) == pytest.approx(0.0105)
