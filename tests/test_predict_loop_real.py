"""Predicted vs measured through `tritonforge loadtest` on the real tiny CPU demo server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.server

METRICS = {"ttft_ms", "itl_ms", "e2e_ms", "output_tokens_per_s", "output_tokens_per_s_per_user"}


def test_report_carries_prediction_and_ratio_per_level(
    tiny_demo_server, tiny_demo_repo: Path, tmp_path: Path
) -> None:
    out = tmp_path / "load"
    # own seed and prompt length: no prompt another test on this server sends (its prefix cache stays cold for them)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tritonforge",
            "loadtest",
            "--url",
            tiny_demo_server.http_url,
            "--model",
            "ensemble",
            "--concurrency",
            "1,2",
            "--duration",
            "4s",
            "--warmup",
            "2",
            "--tokenizer",
            "tiny",
            "--workload",
            "isl=40,osl=16",
            "--seed",
            "101",
            "--metrics-url",
            tiny_demo_server.metrics_url,
            "--repo",
            str(tiny_demo_repo),
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert [lv["label"] for lv in report["levels"]] == ["c=1", "c=2"]
    for lv in report["levels"]:
        p = lv["prediction"]
        assert p["source"].startswith("cpu-reference system measured")  # the repository's tier runs on CPU
        assert (
            p["workload"]["isl"] == 40
            and p["workload"]["osl"] == 16
            and p["workload"]["concurrency"] == lv["value"]
        )
        assert p["predicted"]["concurrency"] == lv["value"]
        rows = {r["metric"]: r for r in p["rows"]}
        assert set(rows) == METRICS
        for name, r in rows.items():
            assert r["predicted"] > 0 and r["measured"] is not None and r["measured"] > 0, name
            assert r["ratio"] == pytest.approx(r["measured"] / r["predicted"], rel=1e-3, abs=1e-4)
        assert rows["output_tokens_per_s"]["measured"] == lv["metrics"]["output_tokens_per_s"]
        assert rows["ttft_ms"]["measured"] == lv["metrics"]["ttft_ms"]["avg"]
    assert "predicted vs measured" in proc.stdout
    assert "Predicted vs measured" in (out / "report.html").read_text()
    # the gate reads the same report: shares chosen from its own figures pass, then fail on every metric
    shares = [r["of_prediction"] for lv in report["levels"] for r in lv["prediction"]["rows"]]

    def check(share: float) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "tritonforge",
                "loadtest",
                "check",
                str(out / "report.json"),
                "--min-of-prediction",
                f"{100 * share:.4f}%",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )

    ok = check(min(shares) / 2)
    assert ok.returncode == 0 and "prediction check: all 10 metrics" in ok.stdout, ok.stdout + ok.stderr
    values = sorted(set(shares))
    assert len(values) > 1
    k = max(1, min(len(values) // 2, sum(v <= 10 for v in values) - 1))
    share = (values[k - 1] + values[k]) / 2  # between two of the report's own figures
    bad = check(share)
    assert bad.returncode == 1
    below = [ln for ln in bad.stdout.splitlines() if ln.startswith("BELOW PREDICTION:")]
    assert len(below) == sum(v < share for v in shares) > 0
