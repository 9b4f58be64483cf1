"""Load test against the real CPU demo repository (tiny model): counts agree with the engine's own."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.server


def _engine_output_tokens(metrics_url: str) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    values = [float(m.group(1)) for m in re.finditer(r"^tf_cpu_engine_output_tokens\{[^}]*\} ([0-9.e+]+)$", text, re.M)]
    assert values, "the CPU engine exports tf_cpu_engine_output_tokens"
    return sum(values)


def test_report_matches_engine_count(tiny_demo_server, tiny_demo_repo: Path, tmp_path: Path) -> None:
    before = _engine_output_tokens(tiny_demo_server.metrics_url)
    out = tmp_path / "load"
    proc = subprocess.run(
        [sys.executable, "-m", "tritonforge", "loadtest", "--url", tiny_demo_server.http_url, "--model", "ensemble",
         "--users", "2", "--duration", "8s", "--warmup", "0", "--tokenizer", "tiny", "--workload", "isl=32,osl=24",
         "--metrics-url", tiny_demo_server.metrics_url, "--repo", str(tiny_demo_repo), "--output", str(out)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
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
