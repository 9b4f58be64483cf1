"""The load tester against a real Triton (CPU build) serving the mock LLM of tests/fixtures/mock_llm.

The mock streams pre-made tokens with a fixed per-token delay, so latencies are dominated by
sleeps and runs are comparable on a busy CI machine; `max_concurrency: 1` makes a slow config.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tritonforge.ensembles.server import TritonServer, free_port, free_ports

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parent.parent
MOCK = Path(__file__).resolve().parent / "fixtures" / "mock_llm"
# Sleep-bound latencies (20 ms per token): scheduler noise on a busy 2-core CI box stays a few percent.
NORMAL = {"first_token_delay_ms": "20", "token_delay_ms": "20"}
SLOW = {**NORMAL, "max_concurrency": "1"}
OSL = 16
CHROMIUM = Path("/usr/bin/chromium")


def mock_repo(dst: Path, **params: str) -> Path:
    """A copy of the mock repository with config `parameters` changed."""
    shutil.copytree(MOCK, dst, symlinks=True)
    for cfg in dst.glob("*/config.pbtxt"):
        text = cfg.read_text()
        for key, value in params.items():
            old = next(line for line in text.splitlines() if f'key: "{key}"' in line)
            text = text.replace(old, f'parameters {{ key: "{key}" value {{ string_value: "{value}" }} }}')
        cfg.write_text(text)
    return dst


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    d = tmp_path_factory.mktemp("mock-normal")
    with TritonServer(
        mock_repo(d / "repo", **NORMAL), free_ports(), log_path=d / "triton.log"
    ) as srv:  # stops the server whatever happens
        srv.wait_ready(120)
        yield srv


def loadtest(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """`tritonforge loadtest ARGS` (through `python -m tritonforge.loadtest`)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "tritonforge.loadtest", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def base_args(srv: TritonServer, out: Path, *extra: str) -> list[str]:
    return [
        "--url",
        srv.http_url,
        "--metrics-url",
        srv.metrics_url,
        "--tokenizer",
        "tiny",
        "--workload",
        f"isl=24,osl={OSL}",
        "--warmup",
        "4",
        "-o",
        str(out),
        *extra,
    ]


def closed_loop(srv: TritonServer, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return loadtest(*base_args(srv, out, "--users", "4", "--duration", "6s", *extra))


def read_report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def read_rows(out: Path) -> list[dict[str, str]]:
    with (out / "requests.csv").open() as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def baseline(server: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lt") / "baseline"
    r = closed_loop(server, out)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "c=4" in r.stdout and "TTFT p50" in r.stdout
    return out


def test_report_agrees_with_server_and_csv(baseline: Path) -> None:
    report = read_report(baseline)
    (level,) = report["levels"]
    m = level["metrics"]
    rows = [r for r in read_rows(baseline) if r["warmup"] == "False"]
    ok = [r for r in rows if r["ok"] == "True"]
    assert m["failed"] == 0 and m["completed"] == len(ok) == len(rows) > 40

    # output tokens: the report = what the mock was asked to send = the server's own counters
    assert m["output_tokens"] == len(ok) * OSL == sum(int(r["requested_tokens"]) for r in ok)
    server = level["server_metrics"]
    assert (
        server["available"]
        and server["tritonforge"]["tritonforge_mock_output_tokens_total{model=ensemble}"]["delta"]
        == m["output_tokens"]
    )
    assert server["triton"]["request_success"] == len(rows)
    tc = report["token_check"]
    assert (
        tc["server_total"] == tc["retokenized_total"] == m["output_tokens"] and tc["requests_differing"] == 0
    )

    # TTFT <= E2E for every request; throughput = a direct count from requests.csv
    assert all(float(r["ttft_s"]) <= float(r["e2e_s"]) for r in ok)
    span = max(float(r["end"]) for r in rows) - min(float(r["start"]) for r in rows)
    assert m["output_tokens_per_s"] == pytest.approx(
        sum(int(r["output_tokens"]) for r in ok) / span, rel=1e-3
    )
    assert m["requests_per_s"] == pytest.approx(len(ok) / span, rel=1e-3)
    assert m["ttft_ms"]["p50"] >= 20 and m["e2e_ms"]["p50"] >= 20 + 20 * (OSL - 1)  # the mock's sleeps

    # Locust saw the custom events; fingerprint and HTML are there
    stats = (baseline / "locust" / "c=4-r0_stats.csv").read_text()
    assert all(name in stats for name in ("TTFT", "ITL", "E2E"))
    env = report["environment"]
    assert (
        env["triton"]["version"]
        and env["model"]["decoupled"] is True
        and env["command_line"][:2] == ["tritonforge", "loadtest"]
    )
    assert (baseline / "report.html").read_text().count("<svg") >= 5
    assert not level["load_generator"]["saturated"], level["load_generator"]


def test_same_configuration_is_not_a_regression(server: TritonServer, baseline: Path, tmp_path: Path) -> None:
    r = closed_loop(server, tmp_path / "again", "--baseline", str(baseline / "report.json"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no regression" in r.stdout
    assert read_report(tmp_path / "again")["comparison"]["regression"] is False


def test_slow_configuration_is_a_regression(baseline: Path, tmp_path: Path) -> None:
    slow = TritonServer(mock_repo(tmp_path / "slow", **SLOW), free_ports(), log_path=tmp_path / "slow.log")
    with slow:
        slow.wait_ready(120)
        r = closed_loop(slow, tmp_path / "slow-run", "--baseline", str(baseline / "report.json"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "REGRESSION" in r.stdout
    comparison = read_report(tmp_path / "slow-run")["comparison"]
    bad = {row["metric"] for row in comparison["rows"] if row["verdict"] == "REGRESSION"}
    assert {"output_tokens_per_s", "ttft_ms.p50", "e2e_ms.p50"} <= bad
    # the standalone gate agrees, and prints each metric's ratio
    c = loadtest("compare", str(baseline / "report.json"), str(tmp_path / "slow-run" / "report.json"))
    assert c.returncode == 1 and "ratio" in c.stdout and "output_tokens_per_s" in c.stdout
    same = loadtest("compare", str(baseline / "report.json"), str(baseline / "report.json"))
    assert same.returncode == 0 and "no regression" in same.stdout


def test_grpc_open_loop_with_response_cache(server: TritonServer, tmp_path: Path) -> None:
    out = tmp_path / "grpc"
    r = loadtest(
        "--url",
        server.http_url,
        "--metrics-url",
        server.metrics_url,
        "--grpc-url",
        server.grpc_url,
        "--protocol",
        "grpc-stream",
        "--model",
        "llm",
        "--request-rate",
        "30",
        "--duration",
        "4s",
        "--tokenizer",
        "tiny",
        "--workload",
        "isl=16,osl=8,repeat=0.5,prompts=200",
        "--warmup",
        "2",
        "--slo",
        "ttft=1s,itl=200ms",
        "--gpu",
        "H100-SXM",
        "-o",
        str(out),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    m = read_report(out)["levels"][0]["metrics"]
    assert m["failed"] == 0 and m["completed"] > 30
    assert m["cache_status"].get("hit", 0) > 0 and m["cache_status"].get("miss", 0) > 0
    assert m["kinds"]["repeat"] > 0 and 15 < m["sent_per_s"] < 50  # Poisson at 30/s over 4 s
    assert m["goodput_requests_per_s"] > 0 and m["slo"] == {"ttft_ms": 1000.0, "itl_ms": 200.0}
    assert read_report(out)["levels"][0]["cost"]["cost_per_1m_output_tokens"] > 0


def test_workers_and_non_streaming(server: TritonServer, tmp_path: Path) -> None:
    out = tmp_path / "workers"
    r = loadtest(
        *base_args(server, out, "--protocol", "http", "--workers", "2", "--users", "4", "--duration", "4s")
    )
    assert r.returncode == 0, r.stdout + r.stderr
    report = read_report(out)
    level = report["levels"][0]
    procs = level["load_generator"]["runs"][0]["processes"]
    assert len(procs) == 2 and all(p["requests_started"] > 0 for p in procs)
    rows = [row for row in read_rows(out) if row["warmup"] == "False"]
    assert len({row["process"] for row in rows}) == 2
    assert level["metrics"]["ttft_ms"] == {"count": 0} and level["metrics"]["e2e_ms"]["count"] == len(rows)
    assert level["metrics"]["output_tokens"] == OSL * len(rows)
    assert any("non-streaming" in n for n in report["notes"])


def test_errors_are_counted_and_classified(server: TritonServer, tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    trace.write_text(
        "".join(
            json.dumps({"prompt": p, "max_tokens": 8}) + "\n"
            for p in ("the cat sat", "please [[mock-fail]] now", "on the mat")
        )
    )
    out = tmp_path / "errors"
    r = loadtest(
        *base_args(
            server, out, "--users", "2", "--duration", "3s", "--warmup", "0", "--workload", f"trace={trace}"
        )
    )
    assert r.returncode == 0, r.stdout + r.stderr
    m = read_report(out)["levels"][0]["metrics"]
    assert m["failed"] > 0 and m["completed"] > 0 and m["requests"] == m["failed"] + m["completed"]
    # Triton answers a stream whose first response is an error with HTTP 400 and the model's message
    assert m["errors"]["by_type"] == {"http_400": m["failed"]}
    assert "mock failure" in m["errors"]["top_messages"][0]["message"]
    failed = [row for row in read_rows(out) if row["ok"] == "False"]
    assert len(failed) == m["failed"] and all(
        row["error_type"] == "http_400" and "[[mock-fail]]" in row["error"] for row in failed
    )


def _one_line_error(r: subprocess.CompletedProcess[str], needle: str) -> None:
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_bad_inputs_give_one_line(server: TritonServer, tmp_path: Path) -> None:
    out = str(tmp_path / "x")
    _one_line_error(loadtest("--url", f"http://127.0.0.1:{free_port()}", "-o", out), "cannot reach Triton")
    _one_line_error(
        loadtest("--url", server.http_url, "--model", "nope", "-o", out), "model 'nope' is not ready"
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok", "max_tokens": 4}\n{"prompt": \n')
    _one_line_error(
        loadtest("--url", server.http_url, "--workload", f"trace={bad}", "-o", out), "malformed trace"
    )
    _one_line_error(loadtest("--url", server.http_url, "--slo", "ttft=fast", "-o", out), "invalid --slo")
    _one_line_error(
        loadtest("--url", server.http_url, "--users", "2", "--request-rate", "3", "-o", out), "exclusive"
    )
    _one_line_error(loadtest("compare", str(bad), out), "not JSON")


def test_locustfile_runs_directly(server: TritonServer, tmp_path: Path) -> None:
    from tritonforge.builder.demo_model import materialize

    tokenizer = materialize("tiny")  # made before Locust starts its clock
    records = tmp_path / "records"
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(ROOT / "loadtest" / "locustfile.py"),
        "--headless",
        "--host",
        server.http_url,
        "-u",
        "2",
        "-r",
        "2",
        "-t",
        "3s",
        "--stop-timeout",
        "10",
        "--only-summary",
        "--model",
        "ensemble",
        "--tokenizer",
        str(tokenizer),
        "--workload",
        "isl=8,osl=4,prompts=20",
        "--warmup",
        "2",
        "--records-dir",
        str(records),
        "--csv",
        str(tmp_path / "direct"),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    stats = (tmp_path / "direct_stats.csv").read_text()
    assert "http-stream,TTFT" in stats and "warmup,E2E" in stats
    lines = next(records.glob("records-*.jsonl")).read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    assert sum(rec["warmup"] for rec in recs) == 2
    assert all(rec["ok"] for rec in recs), [
        (rec["error_type"], rec["error"]) for rec in recs if not rec["ok"]
    ][:3]


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed (Debian package `chromium`)"
)
def test_html_report_renders_in_chromium(baseline: Path, tmp_path: Path) -> None:
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--dump-dom",
        (baseline / "report.html").as_uri(),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    dom = r.stdout
    assert dom.count("<svg") >= 5 and "<polyline" in dom and 'class="bar"' in dom and "Summary" in dom


def test_concurrency_sweep_with_repeats(server: TritonServer, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    r = loadtest(
        *base_args(server, out, "--concurrency", "1,4", "--repeat", "2", "--duration", "2s", "--json")
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads(r.stdout)
    assert [lv["label"] for lv in report["levels"]] == ["c=1", "c=4"]
    one, four = (lv["metrics"] for lv in report["levels"])
    assert all(len(lv["runs"]) == 2 for lv in report["levels"]) and one["repeats"] == 2
    runs = [run["output_tokens_per_s"] for run in report["levels"][1]["runs"]]
    assert min(runs) <= four["output_tokens_per_s"] <= max(runs)  # the median of two
    assert four["output_tokens_per_s"] > 2 * one["output_tokens_per_s"]  # latency is sleep-bound: ~4x
    html = (out / "report.html").read_text()
    assert "Throughput vs concurrency" in html and "Latency vs throughput" in html
