"""The HPA's custom metric is read from series a real Triton 2.51 exports for the entry model."""

from __future__ import annotations

import re
import urllib.request

import pytest

from tritonforge.builder.spec import load_spec
from tritonforge.ensembles.k8s import adapter_rule, repository_plan

from .conftest import tiny_variant

METRICS = ("inflight_requests", "queue_time", "pending_requests")


@pytest.mark.server
def test_adapter_rules_read_series_triton_exports(
    tiny_demo_server: object, tmp_path_factory: pytest.TempPathFactory
) -> None:
    spec = load_spec(tiny_variant("cpu-demo.yaml", tmp_path_factory.mktemp("spec")))
    entry = repository_plan(spec).entry_model
    with urllib.request.urlopen(tiny_demo_server.metrics_url, timeout=10) as r:  # type: ignore[attr-defined]
        text = r.read().decode()
    exported = {
        (m.group(1), m.group(2)) for m in re.finditer(r'^(\w+)\{[^}]*model="([^"]+)"', text, re.MULTILINE)
    }
    for metric in METRICS:
        name, rule = adapter_rule("cpu-demo", entry, metric)
        series = rule["name"]["matches"].strip("^$")
        assert rule["seriesQuery"].startswith(series + "{")
        assert (series, entry) in exported, f"{series} for model {entry} not in Triton's /metrics ({metric})"
        assert f'model="{entry}"' in rule["metricsQuery"] and name.startswith("tritonforge_cpu_demo_")
