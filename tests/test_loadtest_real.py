"""Load test against the real CPU demo repository (tiny model): counts agree with the engine's own."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.server


def _engine_metric(metrics_url: str, name: str) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    values = [float(m.group(1)) for m in re.finditer(rf"^{name}\{{[^}}]*\}} ([0-9.e+]+)$", text, re.M)]
    assert values, f"the CPU engine exports {name}"
    return sum(values)


def _engine_output_tokens(metrics_url: str) -> float:
    return _engine_metric(metrics_url, "tf_cpu_engine_output_tokens")


def _loadtest(server, out: Path, duration: str, workload: str, *extra: str) -> subprocess.CompletedProcess:
    """`tritonforge loadtest` (2 users, no warm-up, tiny tokenizer) against the server's ensemble; exit 0."""
    proc = subprocess.run(
        [
            *(
                sys.executable,
                "-m",
                "tritonforge",
                "loadtest",
                "--url",
                server.http_url,
                "--model",
                "ensemble",
            ),
            *("--users", "2", "--duration", duration, "--warmup", "0", "--tokenizer", "tiny"),
            *("--workload", workload, "--metrics-url", server.metrics_url, *extra, "--output", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_report_matches_engine_count(tiny_demo_server, tiny_demo_repo: Path, tmp_path: Path) -> None:
    before = _engine_output_tokens(tiny_demo_server.metrics_url)
    out = tmp_path / "load"
    _loadtest(tiny_demo_server, out, "8s", "isl=32,osl=24", "--repo", str(tiny_demo_repo))
    after = _engine_output_tokens(tiny_demo_server.metrics_url)
    report = json.loads((out / "report.json").read_text())
    metrics = report["levels"][0]["metrics"]
    rows = list(csv.DictReader((out / "requests.csv").open()))
    measured = [r for r in rows if r["warmup"] == "False" and r["ok"] == "True"]
    assert metrics["completed"] == len(measured) > 0 and metrics["failed"] == 0
    # Every output token the engine generated is accounted for by the report (no warm-up here).
    assert metrics["output_tokens"] == sum(int(r["output_tokens"]) for r in measured) == after - before
    assert all(float(r["ttft_s"]) <= float(r["e2e_s"]) for r in measured)
    span = max(float(r["end"]) for r in measured) - min(float(r["start"]) for r in measured)
    assert metrics["output_tokens_per_s"] == pytest.approx(metrics["output_tokens"] / span, rel=0.02)
    assert report["environment"]  # fingerprint present
    assert (out / "report.html").read_text().count("<svg") >= 2
    # repeat=0: no measured request re-sent a prompt, and the engine's prefix cache reused no block
    reuse = report["summary"]["prompt_reuse"]
    assert (
        reuse["repeated_requests"] == 0
        and reuse["distinct_prompts"] == reuse["requests"] == metrics["requests"]
    )
    assert reuse["kv_metric"] == "tf_cpu_engine_reused_blocks" and reuse["kv_reused_blocks"] == 0


def test_reported_kv_reuse_is_the_engines(tiny_demo_server, tmp_path: Path) -> None:
    """Deliberate repeats: the report counts them and the KV blocks the engine reused for them."""
    url = tiny_demo_server.metrics_url
    before = _engine_metric(url, "tf_cpu_engine_reused_blocks")
    out = tmp_path / "repeats"
    proc = _loadtest(tiny_demo_server, out, "6s", "isl=80,osl=4,repeat=0.5,prompts=3000")
    time.sleep(0.5)
    after = _engine_metric(url, "tf_cpu_engine_reused_blocks")
    report = json.loads((out / "report.json").read_text())
    reuse = report["summary"]["prompt_reuse"]
    kinds = report["levels"][0]["metrics"]["kinds"]
    assert (
        reuse["requests"] < 3000
    )  # the run did not wrap around the items: only `repeat` items re-send a prompt
    assert (
        reuse["repeated_requests"] == kinds["repeat"] > 0
        and reuse["distinct_prompts"] == reuse["requests"] - kinds["repeat"]
    )
    assert reuse["kv_reused_blocks"] == after - before > 0  # 80-token prompts: up to 2 blocks of 32 each
    assert "prompt reuse:" in proc.stdout
