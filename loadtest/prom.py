"""Triton's Prometheus `/metrics`: scrape before and after a run, report what changed."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from typing import Any

Sample = tuple[str, tuple[tuple[str, str], ...]]  # (metric name, sorted labels)
CUSTOM_PREFIXES = ("tritonforge_", "tf_", "nv_trt_llm_")
_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> tuple[dict[Sample, float], dict[str, str]]:
    """Prometheus text format -> ({(name, labels): value}, {family: type})."""
    samples: dict[Sample, float] = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split()
            if len(parts) >= 4 and parts[1] == "TYPE":
                types[parts[2]] = parts[3]
            continue
        m = _LINE.match(line)
        if not m:
            continue
        labels = tuple(sorted(_LABEL.findall(m.group(3) or "")))
        try:
            samples[(m.group(1), labels)] = float(m.group(4))
        except ValueError:
            continue
    return samples, types


def scrape(url: str | None, timeout: float = 5.0) -> tuple[dict[Sample, float], dict[str, str]] | None:
    """The server's metrics, or None when they cannot be read (metrics off, another port)."""
    if not url:
        return None
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (user-given URL)
            return parse(r.read().decode("utf-8", errors="replace"))
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _family(name: str, types: dict[str, str]) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in types:
            return name[: -len(suffix)]
    return name


def _label_str(labels: tuple[tuple[str, str], ...]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels)


def diff(before: tuple[dict, dict] | None, after: tuple[dict, dict] | None, model: str) -> dict[str, Any]:
    """Per-request averages and counter deltas for `model`; delta and value after of every custom metric."""
    if before is None or after is None:
        return {"available": False}
    b, _ = before
    a, types = after

    def delta(name: str, **want: str) -> float:
        total = 0.0
        for (n, labels), v in a.items():
            if n == name and all(dict(labels).get(k) == x for k, x in want.items()):
                total += v - b.get((n, labels), 0.0)
        return total

    success = delta("nv_inference_request_success", model=model)
    out: dict[str, Any] = {"available": True, "model": model}
    per_model: dict[str, float | None] = {
        "request_success": success,
        "request_failure": delta("nv_inference_request_failure", model=model),
        "inference_count": delta("nv_inference_count", model=model),
        "exec_count": delta("nv_inference_exec_count", model=model),
        "cache_hits": delta("nv_cache_num_hits_per_model", model=model),
        "cache_misses": delta("nv_cache_num_misses_per_model", model=model),
    }
    for key, name in (
        ("request_us", "nv_inference_request_duration_us"),
        ("queue_us", "nv_inference_queue_duration_us"),
        ("compute_input_us", "nv_inference_compute_input_duration_us"),
        ("compute_infer_us", "nv_inference_compute_infer_duration_us"),
        ("compute_output_us", "nv_inference_compute_output_duration_us"),
    ):
        total = delta(name, model=model)
        per_model[f"avg_{key}"] = round(total / success, 1) if success else None
    out["triton"] = per_model
    # every model that served requests during the run (an ensemble's steps show where time goes)
    models: dict[str, Any] = {}
    names = sorted({dict(lb).get("model", "") for (n, lb) in a if n == "nv_inference_request_success"} - {""})
    for name in names:
        n = delta("nv_inference_request_success", model=name)
        if n <= 0:
            continue
        models[name] = {
            "requests": n,
            "exec_count": delta("nv_inference_exec_count", model=name),
            "avg_queue_us": round(delta("nv_inference_queue_duration_us", model=name) / n, 1),
            "avg_compute_infer_us": round(delta("nv_inference_compute_infer_duration_us", model=name) / n, 1),
            "avg_request_us": round(delta("nv_inference_request_duration_us", model=name) / n, 1),
        }
    out["models"] = models
    # every tritonforge family (tritonforge_*, tf_* of the CPU engine) and TensorRT-LLM's nv_trt_llm_*
    custom: dict[str, Any] = {}
    for (name, labels), v in sorted(a.items()):
        if not name.startswith(CUSTOM_PREFIXES):
            continue
        fam = _family(name, types)
        kind = types.get(fam, "untyped")
        key = f"{name}{{{_label_str(labels)}}}" if labels else name
        custom[key] = {"kind": kind, "delta": round(v - b.get((name, labels), 0.0), 6), "after": v}
    out["tritonforge"] = custom
    return out


# KV-cache blocks served from the prefix cache, as running totals (a run's reuse is the change):
# - the CPU engine's `tf_cpu_engine_reused_blocks` (model_repo_templates/models/tensorrt_llm_cpu.py);
# - TensorRT-LLM's Triton backend: gauge family `nv_trt_llm_kv_cache_block_metrics`, label
#   kv_cache_block_type="reused" (backends that report it; older ones export only max/free/used/tokens_per),
#   https://github.com/triton-inference-server/tensorrtllm_backend/blob/main/inflight_batcher_llm/src/custom_metrics_reporter/custom_metrics_reporter.cc
KV_REUSE_METRICS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("tf_cpu_engine_reused_blocks", ()),
    ("nv_trt_llm_kv_cache_block_metrics", (("kv_cache_block_type", "reused"),)),
)


def kv_reused_blocks(
    before: tuple[dict, dict] | None, after: tuple[dict, dict] | None
) -> tuple[float | None, str | None]:
    """(KV blocks reused between the two scrapes, metric name), or (None, None) where none is exported."""
    if before is None or after is None:
        return None, None
    b, a = before[0], after[0]
    for name, want in KV_REUSE_METRICS:
        keys = [(n, lb) for (n, lb) in a if n == name and all(dict(lb).get(k) == v for k, v in want)]
        if keys:
            label = ",".join(f"{k}={v}" for k, v in want)
            return sum(a[k] - b.get(k, 0.0) for k in keys), f"{name}{{{label}}}" if label else name
    return None, None
