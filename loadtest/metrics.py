"""LLM serving metrics from per-request records, as genai-perf / vLLM / llmperf define them.

- TTFT = first non-empty response - request sent; E2E = last response - request sent;
- ITL = (E2E - TTFT) / (output tokens - 1), per request;
- output token throughput = output tokens of successful requests / (last response - first request);
- request throughput = successful requests / the same duration;
- goodput = successful requests meeting every SLO / the same duration.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from tritonforge.loadtest.records import RequestRecord

PERCENTILES = (50, 90, 99)
DEFINITIONS = (
    "genai-perf/vLLM definitions: TTFT = first non-empty response - request sent; E2E = last response - "
    "request sent; ITL = (E2E - TTFT)/(output tokens - 1) per request; throughput = successful requests' "
    "output tokens (server-reported num_output_tokens, else re-tokenised) / (last response - first request); "
    "goodput = requests meeting every SLO / same duration; warm-up requests excluded; percentiles by linear "
    "interpolation over exact per-request values."
)


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (numpy's default method); `values` need not be sorted."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} outside [0, 100]")
    xs = sorted(values)
    pos = (len(xs) - 1) * p / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def stats(values: Iterable[float | None], scale: float = 1.0, digits: int = 3) -> dict[str, Any]:
    """count, avg, min, max, p50, p90, p99 (and std) of the non-None values, times `scale`."""
    xs = [v * scale for v in values if v is not None]
    if not xs:
        return {"count": 0}
    out: dict[str, Any] = {
        "count": len(xs),
        "avg": round(statistics.fmean(xs), digits),
        "min": round(min(xs), digits),
        "max": round(max(xs), digits),
    }
    for p in PERCENTILES:
        out[f"p{p}"] = round(percentile(xs, p), digits)
    out["std"] = round(statistics.pstdev(xs), digits) if len(xs) > 1 else 0.0
    return out


def meets_slo(r: RequestRecord, slo: dict[str, float]) -> bool:
    """Does a successful request meet every SLO (ms)? A latency that was not measured fails its SLO."""
    if not r.ok:
        return False
    values = {"ttft_ms": r.ttft_s, "itl_ms": r.itl_s, "e2e_ms": r.e2e_s}
    for key, limit in slo.items():
        v = values.get(key)
        if key == "itl_ms" and v is None and (r.output_tokens or 0) < 2:
            continue  # one-token answers have no inter-token latency
        if v is None or v * 1000.0 > limit:
            return False
    return True


def error_summary(records: Sequence[RequestRecord]) -> dict[str, Any]:
    """Errors by class, with the most common messages (never dropped)."""
    failed = [r for r in records if not r.ok]
    by_type = Counter(r.error_type for r in failed)
    messages = Counter((r.error_type, r.error[:160]) for r in failed)
    return {
        "count": len(failed),
        "by_type": dict(by_type.most_common()),
        "top_messages": [{"type": t, "message": m, "count": c} for (t, m), c in messages.most_common(5)],
    }


def level_metrics(records: Sequence[RequestRecord], slo: dict[str, float] | None = None) -> dict[str, Any]:
    """All metrics of one run (one level, one repeat) from its measured (non-warm-up) records."""
    slo = slo or {}
    # requests cut off by a forced stop (Locust without --stop-timeout) are neither successes nor failures
    interrupted = sum(1 for r in records if not r.warmup and r.error_type == "interrupted")
    measured = [r for r in records if not r.warmup and r.error_type != "interrupted"]
    ok = [r for r in measured if r.ok]
    out: dict[str, Any] = {"requests": len(measured), "completed": len(ok), "failed": len(measured) - len(ok)}
    if interrupted:
        out["interrupted"] = interrupted
    if not measured:
        out.update(duration_s=0.0, error_rate=None)
        return out
    t0 = min(r.start for r in measured)
    t1 = max(r.end for r in measured)
    duration = max(t1 - t0, 1e-9)
    tokens = sum(r.output_tokens or 0 for r in ok)
    good = sum(1 for r in ok if meets_slo(r, slo)) if slo else len(ok)
    streamed = any(r.ttft_s is not None for r in ok)
    out.update(
        duration_s=round(duration, 4),
        error_rate=round((len(measured) - len(ok)) / len(measured), 5),
        output_tokens=tokens,
        input_tokens=sum(r.input_tokens or 0 for r in ok),
        output_tokens_per_s=round(tokens / duration, 3),
        requests_per_s=round(len(ok) / duration, 4),
        goodput_requests_per_s=round(good / duration, 4),
        goodput_fraction=round(good / len(measured), 5),
        ttft_ms=stats((r.ttft_s for r in ok), 1000.0) if streamed else {"count": 0},
        itl_ms=stats((r.itl_s for r in ok), 1000.0) if streamed else {"count": 0},
        e2e_ms=stats((r.e2e_s for r in ok), 1000.0),
        output_tokens_per_request=stats((r.output_tokens for r in ok), digits=2),
        input_tokens_per_request=stats((r.input_tokens for r in ok), digits=2),
        # per-user decode speed: tokens after the first over the time after the first token
        output_tokens_per_s_per_user=stats((1.0 / r.itl_s for r in ok if r.itl_s), digits=2)
        if streamed
        else {"count": 0},
        errors=error_summary(measured),
        cache_status=dict(Counter(r.cache_status for r in ok if r.cache_status)),
        tiers=dict(Counter(r.tier for r in ok if r.tier)),
        kinds=dict(Counter(r.kind for r in measured if r.kind)),
    )
    if slo:
        out["slo"] = dict(slo)
    sched = [(r.start, r.scheduled) for r in measured if r.scheduled is not None]
    if sched:
        lag = [max(0.0, start - due) for start, due in sched]
        span = max(due for _, due in sched) - min(due for _, due in sched)
        out["send_lag_ms"] = stats(lag, 1000.0)
        out["sent_per_s"] = round((len(sched) - 1) / span, 4) if span > 0 else None
    return out


def token_check(records: Sequence[RequestRecord]) -> dict[str, Any]:
    """Server-reported output token counts against re-tokenised text."""
    both = [
        r
        for r in records
        if r.ok and not r.warmup and r.output_tokens_server is not None and r.output_tokens_retok is not None
    ]
    if not both:
        return {"compared": 0}
    server = sum(r.output_tokens_server or 0 for r in both)
    retok = sum(r.output_tokens_retok or 0 for r in both)
    differ = sum(1 for r in both if r.output_tokens_server != r.output_tokens_retok)
    return {
        "compared": len(both),
        "server_total": server,
        "retokenized_total": retok,
        "requests_differing": differ,
        "relative_difference": round((retok - server) / server, 5) if server else None,
    }


def median_metrics(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-field median across repeats (numbers and nested stats); other fields from the first run."""
    if len(runs) == 1:
        return runs[0]

    def merge(values: list[Any]) -> Any:
        first = values[0]
        if isinstance(first, dict):
            keys = [k for k in first if all(isinstance(v, dict) and k in v for v in values)]
            return {k: merge([v[k] for v in values]) for k in keys}
        nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(nums) == len(values):
            return statistics.median(nums)
        return first

    out = merge(list(runs))
    out["repeats"] = len(runs)
    return out
